// int4 x f32 matrix products for x86-64 with AVX-512 (F, BW, VL) and VNNI, linked into IREE
// dispatches. The same weight layout, quantized rows of x and entry points as
// x86_64_avx2/int4.c, which this file includes for everything but the decode, verify and prompt
// (matrix) kernels.
//
// y[m, n] = sum_g scale[n, g] * sum_{k in group g} w[n, k] * x[m, k]
//
// The nibbles (each the weight + 8, 0..15) are the unsigned operand of vpdpbusd and x's int8
// blocks the signed one, broadcast 4 bytes at a time: each instruction adds 4 products per row
// into an i32 lane, with no pair sums in i16 and no widening step. Each block's i32 sum starts
// at -8 * sum(x's block) (the nibbles' + 8, stored with x's quantized row), so after the block
// it is exactly sum w * x; then one conversion and one FMA (x's block scale times the group
// scale) per 16 outputs.

#include <stddef.h>
#include <stdint.h>

#define IREE_GLM_OWN_DECODE_KERNEL
#define IREE_GLM_OWN_MATRIX_KERNEL
#include "../x86_64_avx2/int4.c"

// Decode: the reduction-in-lanes form (each output's 32 weights of a block against x's block in
// one vector, a horizontal sum per output at the end), 4 weight rows at a time, in AVX2. The
// AVX2 set's outputs-in-lanes form is not measured on these CPUs yet; verify below repeats this
// kernel's operations, so the two change together.
static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 16 packed bytes -> their 32 nibbles (0..15): low nibbles, then high. One 128-bit broadcast
// load, a per-lane shift (0 | 4) and a mask.
static inline __m256i nibbles(const int8_t *p, __m256i shifts) {
  const __m256i both = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
  return _mm256_and_si256(_mm256_srlv_epi64(both, shifts), _mm256_set1_epi8(0x0F));
}

// f16 scales of a row -> f32 (F16C), 8 at a time.
static inline void widen(const uint16_t *h, float *f, size_t count) {
  size_t i = 0;
  for (; i + 8 <= count; i += 8) _mm256_storeu_ps(f + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
  for (; i < count; ++i) f[i] = _cvtsh_ss(h[i]);
}

// sum over a block of (weight + 8) * xq, as 8 float partial sums (<= 2 * 15 * 127 per i16: exact).
static inline __m256 block_dot(const int8_t *p, __m256i xq, __m256i shifts, __m256i ones) {
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(nibbles(p, shifts), xq), ones));
}

void iree_glm_int4_matvec_workgroup(MEMREF(const float, x), MEMREF(const int8_t, q), MEMREF(const uint16_t, s),
                                    MEMREF(float, y), size_t n, size_t k, size_t group, size_t row_begin,
                                    size_t row_end) {
  MEMREF_START(x); MEMREF_START(q); MEMREF_START(s); MEMREF_START(y);
  if (row_end > n) row_end = n;
  const size_t per_group = group / BLOCK, groups = k / group;
  int8_t xq[MAX_K] __attribute__((aligned(32)));
  float dx[MAX_K / BLOCK], off[MAX_K / BLOCK], sf[4][MAX_K / BLOCK];  // sf: current rows' scales
  const __m256i ones = _mm256_set1_epi16(1);
  quantize_x(x, k, group, xq, dx, off);
  const size_t row_bytes = k / 2;
  const __m256i shifts = _mm256_setr_epi64x(0, 0, 4, 4);
  size_t r = row_begin;
  for (; r + 4 <= row_end; r += 4) {  // 4 rows share each block of x
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    const int8_t *w0 = q + r * row_bytes, *w1 = w0 + row_bytes, *w2 = w1 + row_bytes, *w3 = w2 + row_bytes;
    for (int j = 0; j < 4; ++j) widen(s + (r + j) * groups, sf[j], groups);
    for (size_t b = 0; b < 4 * groups * sizeof(uint16_t); b += 64) _mm_prefetch((const char *)(s + (r + 4) * groups) + b, _MM_HINT_T0);
    const float *s0 = sf[0], *s1 = sf[1], *s2 = sf[2], *s3 = sf[3];
    for (size_t g = 0, c = 0; g < groups; ++g) {
      const __m256 g0 = _mm256_broadcast_ss(s0 + g), g1 = _mm256_broadcast_ss(s1 + g);
      const __m256 g2 = _mm256_broadcast_ss(s2 + g), g3 = _mm256_broadcast_ss(s3 + g);
      for (size_t end = c + per_group; c < end; ++c) {
        // The next 4 rows are the 4 * row_bytes after these: one cache line per block brings
        // them in by the time this quad ends (short rows defeat the hardware prefetcher: 2.4x).
        _mm_prefetch((const char *)(w0 + 4 * row_bytes + c * 64), _MM_HINT_T0);
        const __m256i xv = _mm256_load_si256((const __m256i *)(xq + c * BLOCK));
        const __m256 d = _mm256_broadcast_ss(dx + c), o = _mm256_broadcast_ss(off + c);
        acc0 = _mm256_fmadd_ps(_mm256_fmsub_ps(block_dot(w0 + c * 16, xv, shifts, ones), d, o), g0, acc0);
        acc1 = _mm256_fmadd_ps(_mm256_fmsub_ps(block_dot(w1 + c * 16, xv, shifts, ones), d, o), g1, acc1);
        acc2 = _mm256_fmadd_ps(_mm256_fmsub_ps(block_dot(w2 + c * 16, xv, shifts, ones), d, o), g2, acc2);
        acc3 = _mm256_fmadd_ps(_mm256_fmsub_ps(block_dot(w3 + c * 16, xv, shifts, ones), d, o), g3, acc3);
      }
    }
    y[r] = hsum(acc0);
    y[r + 1] = hsum(acc1);
    y[r + 2] = hsum(acc2);
    y[r + 3] = hsum(acc3);
  }
  for (; r < row_end; ++r) {
    __m256 acc = _mm256_setzero_ps();
    const int8_t *w = q + r * row_bytes;
    widen(s + r * groups, sf[0], groups);
    const float *sr = sf[0];
    for (size_t g = 0, c = 0; g < groups; ++g) {
      const __m256 sg = _mm256_broadcast_ss(sr + g);
      for (size_t end = c + per_group; c < end; ++c) {
        const __m256i xv = _mm256_load_si256((const __m256i *)(xq + c * BLOCK));
        const __m256 v = _mm256_fmsub_ps(block_dot(w + c * 16, xv, shifts, ones), _mm256_broadcast_ss(dx + c), _mm256_broadcast_ss(off + c));
        acc = _mm256_fmadd_ps(v, sg, acc);
      }
    }
    y[r] = hsum(acc);
  }
}

// Speculative verification (every row of x bit for bit the decode kernel's result for that
// row alone). Rows of x go in pairs, row a in the low half of a 512-bit
// vector and row b in the high half, each half going through the decode kernel's operations
// lane for lane (vpdpbusd's 4-byte sums are vpmaddubsw + vpmaddwd's, exact integers; the same
// conversion, fmsub and FMA into the row's own accumulator; the same horizontal sum per half).
// The loop runs over blocks of 32 weights outside and pairs inside, so a quad of weight rows is
// unpacked to nibbles once per block for up to PAIRS pairs (the unpacking is a third of decode's
// per-block work); 4 weight rows x PAIRS pairs accumulators fill the 32 vector registers.
enum { PAIRS = 4 };

// Weight rows r..r+nw-1 (nw = 4 or 1) against np pairs (both constants after inlining): pair p
// is rows pair_row[2p], pair_row[2p + 1] of the pass's quantized x (row-major in xq, k bytes a
// row), dop[(p * blocks + c) * 4 ..] its rows' block scales and offsets (d_a, d_b, o_a, o_b).
static inline __attribute__((always_inline)) void verify_quad512(const int8_t *q, const float *sf, size_t r, const int nw,
                                                                 const int8_t *xq, const float *dop, const size_t *pair_row,
                                                                 const int np, size_t k, size_t group, size_t n, float *y) {
  const size_t per_group = group / BLOCK, groups = k / group, blocks = k / BLOCK, row_bytes = k / 2;
  const __m512i shifts = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4), mask = _mm512_set1_epi8(0x0F);
  const __m512i pick_d = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  const __m512i pick_o = _mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  __m512 acc[PAIRS][4];
  for (int p = 0; p < np; ++p)
    for (int b = 0; b < nw; ++b) acc[p][b] = _mm512_setzero_ps();
  for (size_t g = 0, c = 0; g < groups; ++g) {
    __m512 sg[4];
    for (int b = 0; b < nw; ++b) sg[b] = _mm512_set1_ps(sf[b * groups + g]);
    for (size_t end = c + per_group; c < end; ++c) {
      _mm_prefetch((const char *)(q + (r + 4) * row_bytes + c * 64), _MM_HINT_T0);  // the next quad, as decode
      __m512i nib[4];  // the AVX2 nibbles() of the row's 16 bytes, in both halves
      for (int b = 0; b < nw; ++b) {
        const __m128i bytes = _mm_loadu_si128((const __m128i *)(q + (r + b) * row_bytes + c * 16));
        nib[b] = _mm512_and_si512(_mm512_srlv_epi64(_mm512_broadcast_i32x4(bytes), shifts), mask);
      }
      for (int p = 0; p < np; ++p) {
        const __m512i xv = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_load_si256((const __m256i *)(xq + pair_row[2 * p] * k + c * BLOCK))),
                                              _mm256_load_si256((const __m256i *)(xq + pair_row[2 * p + 1] * k + c * BLOCK)), 1);
        const __m512 scales = _mm512_castps128_ps512(_mm_load_ps(dop + (p * blocks + c) * 4));
        const __m512 d = _mm512_permutexvar_ps(pick_d, scales), o = _mm512_permutexvar_ps(pick_o, scales);
        for (int b = 0; b < nw; ++b) {
          const __m512 dot = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), nib[b], xv));
          acc[p][b] = _mm512_fmadd_ps(_mm512_fmsub_ps(dot, d, o), sg[b], acc[p][b]);
        }
      }
    }
  }
  for (int p = 0; p < np; ++p)
    for (int b = 0; b < nw; ++b) {
      y[pair_row[2 * p] * n + r + b] = hsum(_mm512_castps512_ps256(acc[p][b]));
      y[pair_row[2 * p + 1] * n + r + b] = hsum(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[p][b]), 1)));
    }
}

// verify_quad512 with its pair count as a constant (the accumulators stay in registers).
static void verify_pairs512(const int8_t *q, const float *sf, size_t r, const int nw, const int8_t *xq, const float *dop,
                            const size_t *pair_row, int np, size_t k, size_t group, size_t n, float *y) {
#define VERIFY_CASE(P) \
  case P: \
    if (nw == 4) verify_quad512(q, sf, r, 4, xq, dop, pair_row, P, k, group, n, y); \
    else verify_quad512(q, sf, r, 1, xq, dop, pair_row, P, k, group, n, y); \
    break;
  switch (np) { VERIFY_CASE(1) VERIFY_CASE(2) VERIFY_CASE(3) VERIFY_CASE(4) }
#undef VERIFY_CASE
}

// Weight rows row_begin..row_end of y [m, n] for the m rows of x [m, k], 2 * PAIRS rows of x per
// pass over the weights (fewer where k is large: the pass's quantized rows live on the stack,
// VERIFY_X_BYTES). An odd row count pairs the last row with itself (both halves write it, equal).
void iree_glm_int4_matvec_rows_workgroup(MEMREF(const float, x), MEMREF(const int8_t, q), MEMREF(const uint16_t, s),
                                         MEMREF(float, y), size_t m, size_t n, size_t k, size_t group, size_t row_begin,
                                         size_t row_end) {
  MEMREF_START(x); MEMREF_START(q); MEMREF_START(s); MEMREF_START(y);
  if (row_end > n) row_end = n;
  size_t per_pass = VERIFY_X_BYTES / k & ~(size_t)1;  // even: an odd pass's last pair fits dop
  if (per_pass > 2 * PAIRS) per_pass = 2 * PAIRS;
  const size_t groups = k / group, blocks = k / BLOCK;
  int8_t xq[VERIFY_X_BYTES] __attribute__((aligned(32)));
  float dx[VERIFY_X_BYTES / BLOCK], off[VERIFY_X_BYTES / BLOCK], sf[4 * (MAX_K / BLOCK)];
  float dop[VERIFY_X_BYTES / BLOCK * 2] __attribute__((aligned(16)));  // per pair and block: d_a, d_b, o_a, o_b
  for (size_t r0 = 0; r0 < m; r0 += per_pass) {
    const size_t rows = m - r0 < per_pass ? m - r0 : per_pass;
    const int np = (int)((rows + 1) / 2);
    size_t pair_row[2 * PAIRS];
    for (size_t i = 0; i < rows; ++i) {
      quantize_x(x + (r0 + i) * k, k, group, xq + i * k, dx + i * blocks, off + i * blocks);
      pair_row[i] = i;
    }
    if (rows & 1) pair_row[rows] = rows - 1;
    for (int p = 0; p < np; ++p)
      for (size_t c = 0; c < blocks; ++c)
        for (int h = 0; h < 2; ++h) {
          dop[(p * blocks + c) * 4 + h] = dx[pair_row[2 * p + h] * blocks + c];
          dop[(p * blocks + c) * 4 + 2 + h] = off[pair_row[2 * p + h] * blocks + c];
        }
    float *yr = y + r0 * n;
    size_t r = row_begin;
    for (; r + 4 <= row_end; r += 4) {
      widen(s + r * groups, sf, 4 * groups);  // the quad's scales are contiguous
      verify_pairs512(q, sf, r, 4, xq, dop, pair_row, np, k, group, n, yr);
    }
    for (; r < row_end; ++r) {
      widen(s + r * groups, sf, groups);
      verify_pairs512(q, sf, r, 1, xq, dop, pair_row, np, k, group, n, yr);
    }
  }
}

// Strips of STRIP = 16 weight rows, one row per 32-bit lane: per block of 32, 8 vectors (bytes
// 4p..4p+3 of every row: their low nibbles, then their high). A tile is TILE_M rows of x against
// two strips (32 weight rows). K is walked in chunks of CHUNK_K (two unpacked strips: 32 KB).
enum { STRIP = 16, TILE_M = 4, CHUNK_K = 1024 };

// The strip operations at 512 bits (../int4_strip.h): 16 rows a strip.
typedef __m512i strip_vector;
#define SV(op) _mm512_##op
#define SV_AND _mm512_and_si512
static inline __attribute__((always_inline)) strip_vector sv_load_rows(const int8_t *const *rows, int r, size_t at, const int8_t *zeros) {
  const int8_t *p[4];
  for (int j = 0; j < 4; ++j) p[j] = rows[r + 4 * j] ? rows[r + 4 * j] + at : zeros;
  const __m256i lo = _mm256_setr_m128i(_mm_loadu_si128((const __m128i *)p[0]), _mm_loadu_si128((const __m128i *)p[1]));
  const __m256i hi = _mm256_setr_m128i(_mm_loadu_si128((const __m128i *)p[2]), _mm_loadu_si128((const __m128i *)p[3]));
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}
#include "../int4_strip.h"

#ifndef IREE_GLM_AMX_MATRIX_KERNEL  // x86_64_amx/int4.c includes this file for the rest

static inline int32_t load_i32(const int8_t *p) {
  int32_t v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

// y[0 .. tm, 0 .. cols) (row stride ldy, cols <= 2 * STRIP) += strips a and b times tm rows of
// quantized x starting at `xq` (row stride `stride`), elements k0..k0+kc; the first chunk
// (k0 = 0) stores instead of adding. tm <= TILE_M is a constant after inlining.
static inline __attribute__((always_inline)) void tile(const __m512i *strip_a, const __m512i *strip_b, const float *scales_a,
                                                       const float *scales_b, const int8_t *xq, size_t stride, size_t k,
                                                       size_t group, size_t k0, size_t kc, float *y, size_t ldy, size_t cols,
                                                       const int tm) {
  const tile_rows x = tile_rows_at(xq, stride, k, k0, tm);
  __m512 acc[TILE_M][2];
  for (int i = 0; i < tm; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (size_t g = 0, c = 0; g < kc / group; ++g) {
    const __m512 sa = _mm512_loadu_ps(scales_a + g * STRIP), sb = _mm512_loadu_ps(scales_b + g * STRIP);
    for (size_t end = c + group / BLOCK; c < end; ++c) {
      __m512i dot[TILE_M][2];  // exact i32 sums w * x of the block
      for (int i = 0; i < tm; ++i) dot[i][0] = dot[i][1] = _mm512_set1_epi32(-x.sum8[i][c]);
      for (int p = 0; p < 8; ++p) {
        const __m512i wa = _mm512_load_si512(strip_a + c * 8 + p), wb = _mm512_load_si512(strip_b + c * 8 + p);
        for (int i = 0; i < tm; ++i) {  // the block's x: the low nibbles' 16, then the high nibbles' 16
          const __m512i xb = _mm512_set1_epi32(load_i32(x.x[i] + c * BLOCK + 4 * ((p & 1) * 4 + p / 2)));
          dot[i][0] = _mm512_dpbusd_epi32(dot[i][0], wa, xb);
          dot[i][1] = _mm512_dpbusd_epi32(dot[i][1], wb, xb);
        }
      }
      for (int i = 0; i < tm; ++i) {
        const __m512 d = _mm512_set1_ps(x.dx[i][c]);
        acc[i][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[i][0]), _mm512_mul_ps(sa, d), acc[i][0]);
        acc[i][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[i][1]), _mm512_mul_ps(sb, d), acc[i][1]);
      }
    }
  }
  for (int i = 0; i < tm; ++i) {
    float out[2 * STRIP];
    _mm512_storeu_ps(out, acc[i][0]);
    _mm512_storeu_ps(out + STRIP, acc[i][1]);
    tile_store(y + i * ldy, out, cols, k0);
  }
}

#include "../int4_matmul.h"

#endif  // IREE_GLM_AMX_MATRIX_KERNEL
