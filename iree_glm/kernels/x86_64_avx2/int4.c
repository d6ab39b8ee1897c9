// int4 x f32 matrix products, AVX2 + FMA + F16C, linked into IREE dispatches: a matrix-vector
// kernel for decode (M = 1) and, for prefill / batched decode, a quantization of x's rows and a
// register-blocked matrix kernel (4 rows of x x 16 weight rows per tile).
//
// y[m, n] = sum_g scale[n, g] * sum_{k in group g} w[n, k] * x[m, k]
//
// Weights (iree_glm/quant.py's int4 layout): qweight i8 [N, K/G, G/2], two nibbles a byte, each
// the weight's integer + 8: the low nibble of byte j of a group is its element j, the high
// nibble element j + G/2; scale f16 [N, K/G]. Like llama.cpp's Q4_0 x Q8_0, x is quantized to
// int8 per block of 32 at run time, so the inner loop is integer: nibble x int8 products summed
// in pairs (vpmaddubsw, vpmaddwd), then per block of 32 one conversion and float scaling (x's
// block scale, the weight's group scale, the 8 * sum(x) offset of the nibbles' + 8).
//
// Called once per workgroup by the dispatches passes/int4_kernel.py builds; each writes its own
// outputs. A decode workgroup quantizes its one row of x itself (K values, cheap next to its
// rows of weights).
// Embedded-ELF rules: no libc, no globals, no TLS; buffers arrive as MLIR memref descriptors
// (base, aligned base, offset, size, stride).

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "row_glue.h"

#include "../memref.h"

enum { BLOCK = 32, MAX_K = 8192 };

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

// x [k] -> xq (int8, in the weights' order), dx (per block scale) and off (see below).
// x in the weights' order: block c = (group g, part j) holds x[g*G + j*16 + 0..15] then
// x[g*G + G/2 + j*16 + 0..15], the elements the 16 bytes of that part pair with.
// off[c]: the +8 of the nibbles adds 8 * dx[c] * sum(xq of block c) to block c's dot product;
// spread over the 8 lanes it is subtracted in the same FMA that applies dx[c].
static void quantize_x(const float *x, size_t k, size_t group, int8_t *xq, float *dx, float *off) {
  const size_t blocks = k / BLOCK, per_group = group / BLOCK, half = group / 2;
  for (size_t c = 0; c < blocks; ++c) {
    const float *lo = x + (c / per_group) * group + (c % per_group) * 16, *hi = lo + half;
    __m256 v[4] = {_mm256_loadu_ps(lo), _mm256_loadu_ps(lo + 8), _mm256_loadu_ps(hi), _mm256_loadu_ps(hi + 8)};
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                             _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4), d = amax / 127.0f;
    dx[c] = d;
    const __m256 inv = _mm256_set1_ps(d > 0.0f ? 1.0f / d : 0.0f);
    __m256i i[4];
    for (int j = 0; j < 4; ++j) i[j] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[j], inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    const __m256i sum8 = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
    __m128i sum4 = _mm_add_epi32(_mm256_castsi256_si128(sum8), _mm256_extracti128_si256(sum8, 1));
    sum4 = _mm_add_epi32(sum4, _mm_shuffle_epi32(sum4, 0x4E));
    sum4 = _mm_add_epi32(sum4, _mm_shuffle_epi32(sum4, 0xB1));
    off[c] = d * (float)_mm_cvtsi128_si32(sum4);  // 8 * d * sum / 8 lanes
    __m256i w01 = _mm256_packs_epi32(i[0], i[1]), w23 = _mm256_packs_epi32(i[2], i[3]);
    __m256i b = _mm256_permute4x64_epi64(_mm256_packs_epi16(w01, w23), 0xD8);
    b = _mm256_shuffle_epi32(b, 0xD8);  // packs interleaves 128-bit lanes: restore element order
    _mm256_store_si256((__m256i *)(xq + c * BLOCK), b);
  }
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

// Speculative verification: a few rows of x (the target checking draft tokens) whose every row
// must come out bit for bit as the matrix-vector kernel's for that row alone, so that a verified
// token is what a decode step would choose. Each row of x goes through the matrix-vector
// kernel's operations in its order (the exact integer dot product, one conversion, the fmsub of
// x's block scale and offset, the FMA of the group scale into the output's own accumulator, one
// horizontal sum at the end). Weight rows are taken 4 at a time, as decode does, and rows of x
// in pairs: with more than one pair, the quad's nibbles are unpacked once into a buffer that
// every pair reads (a load instead of decode's three unpacking operations per block and row).
// Rows' quantized x live on the stack, VERIFY_X_BYTES in all: rows beyond that take another
// pass over the weights.
enum { VERIFY_ROWS = 16, VERIFY_X_BYTES = 32768 };

#ifndef IREE_GLM_OWN_VERIFY_KERNEL  // x86_64_avx512/int4.c has its own (rows of x paired in 512-bit vectors)

// Weight rows r..r+nw-1 (nw = 4 or 1) against rows i..i+nx-1 (nx = 2 or 1) of the quantized x;
// their nibbles from `nb` (unpack_quad's) or, where it is null, unpacked here.
static inline __attribute__((always_inline)) void verify_tile(const int8_t *q, const int8_t *nb, const float *sf, size_t r,
                                                              const int nw, const int8_t *xq, const float *dx, const float *off,
                                                              size_t i, const int nx, size_t k, size_t group, size_t n, float *y) {
  const size_t per_group = group / BLOCK, groups = k / group, blocks = k / BLOCK, row_bytes = k / 2;
  const __m256i ones = _mm256_set1_epi16(1), shifts = _mm256_setr_epi64x(0, 0, 4, 4);
  __m256 acc[2][4];
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 4; ++b) acc[a][b] = _mm256_setzero_ps();
  for (size_t g = 0, c = 0; g < groups; ++g) {
    __m256 sg[4];
    for (int b = 0; b < nw; ++b) sg[b] = _mm256_broadcast_ss(sf + b * groups + g);
    for (size_t end = c + per_group; c < end; ++c) {
      _mm_prefetch((const char *)(q + (r + 4) * row_bytes + c * 64), _MM_HINT_T0);  // the next quad, as decode
      __m256i nib[4];
      for (int b = 0; b < nw; ++b)
        nib[b] = nb ? _mm256_load_si256((const __m256i *)(nb + (b * blocks + c) * BLOCK)) : nibbles(q + (r + b) * row_bytes + c * 16, shifts);
      for (int a = 0; a < nx; ++a) {
        const size_t row = i + a;
        const __m256i xv = _mm256_load_si256((const __m256i *)(xq + row * k + c * BLOCK));
        const __m256 d = _mm256_broadcast_ss(dx + row * blocks + c), o = _mm256_broadcast_ss(off + row * blocks + c);
        for (int b = 0; b < nw; ++b) {
          const __m256 dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(nib[b], xv), ones));
          acc[a][b] = _mm256_fmadd_ps(_mm256_fmsub_ps(dot, d, o), sg[b], acc[a][b]);
        }
      }
    }
  }
  for (int a = 0; a < nx; ++a)
    for (int b = 0; b < nw; ++b) y[(i + a) * n + r + b] = hsum(acc[a][b]);
}

// Weight rows r..r+nw-1's nibbles (nibbles() of every block) -> nb[(b * blocks + c) * BLOCK ..].
static void unpack_quad(const int8_t *q, size_t r, int nw, size_t k, int8_t *nb) {
  const __m256i shifts = _mm256_setr_epi64x(0, 0, 4, 4);
  for (int b = 0; b < nw; ++b)
    for (size_t c = 0; c < k / BLOCK; ++c)
      _mm256_store_si256((__m256i *)(nb + (b * (k / BLOCK) + c) * BLOCK), nibbles(q + (r + b) * (k / 2) + c * 16, shifts));
}

// Weight rows r..r+nw-1 against the pass's rows of x, in pairs (nibbles shared through `nb` when
// there are several pairs).
static inline __attribute__((always_inline)) void verify_rows(const int8_t *q, int8_t *nb, const float *sf, size_t r,
                                                              const int nw, const int8_t *xq, const float *dx,
                                                              const float *off, size_t rows, size_t k, size_t group,
                                                              size_t n, float *y) {
  const int8_t *shared = NULL;
  if (rows > 2) {
    unpack_quad(q, r, nw, k, nb);
    shared = nb;
  }
  size_t i = 0;
  for (; i + 2 <= rows; i += 2) verify_tile(q, shared, sf, r, nw, xq, dx, off, i, 2, k, group, n, y);
  if (i < rows) verify_tile(q, shared, sf, r, nw, xq, dx, off, i, 1, k, group, n, y);
}

// Weight rows row_begin..row_end of y [m, n] for the m rows of x [m, k].
void iree_glm_int4_matvec_rows_workgroup(MEMREF(const float, x), MEMREF(const int8_t, q), MEMREF(const uint16_t, s),
                                         MEMREF(float, y), size_t m, size_t n, size_t k, size_t group, size_t row_begin,
                                         size_t row_end) {
  (void)x_base; (void)x_size; (void)x_stride; (void)q_base; (void)q_size; (void)q_stride;
  (void)s_base; (void)s_size; (void)s_stride; (void)y_base; (void)y_size; (void)y_stride;
  x += x_offset; q += q_offset; s += s_offset; y += y_offset;
  if (row_end > n) row_end = n;
  size_t per_pass = VERIFY_X_BYTES / k;
  if (per_pass > VERIFY_ROWS) per_pass = VERIFY_ROWS;
  const size_t groups = k / group, blocks = k / BLOCK;
  int8_t xq[VERIFY_X_BYTES] __attribute__((aligned(32)));
  float dx[VERIFY_X_BYTES / BLOCK], off[VERIFY_X_BYTES / BLOCK], sf[4 * (MAX_K / BLOCK)];
  int8_t nb[4 * MAX_K] __attribute__((aligned(32)));  // a quad's nibbles
  for (size_t r0 = 0; r0 < m; r0 += per_pass) {
    const size_t rows = m - r0 < per_pass ? m - r0 : per_pass;
    const float *xr = x + r0 * k;
    float *yr = y + r0 * n;
    for (size_t i = 0; i < rows; ++i) quantize_x(xr + i * k, k, group, xq + i * k, dx + i * blocks, off + i * blocks);
    size_t r = row_begin;
    for (; r + 4 <= row_end; r += 4) {
      widen(s + r * groups, sf, 4 * groups);  // the quad's scales are contiguous
      verify_rows(q, nb, sf, r, 4, xq, dx, off, rows, k, group, n, yr);
    }
    for (; r < row_end; ++r) {
      widen(s + r * groups, sf, groups);
      verify_rows(q, nb, sf, r, 1, xq, dx, off, rows, k, group, n, yr);
    }
  }
}

#endif  // IREE_GLM_OWN_VERIFY_KERNEL

// Prefill and batched decode: a quantization dispatch, then a register-blocked matrix kernel.
//
// iree_glm_int4_quantize_workgroup turns rows of x [m, k] into rows of xq_row_bytes(k) bytes:
// k int8 (blocks in the weights' order, as quantize_x), k / BLOCK f32 block scales dx, k / BLOCK
// i32 sums 8 * sum(xq of the block) (the +8 of the nibbles, subtracted before the conversion),
// padded to 32 bytes (aligned vector loads). Each row is quantized once per matmul, not once
// per workgroup.
static inline size_t xq_row_bytes(size_t k) { return k + (k / BLOCK * 8 + 31) / 32 * 32; }

// One row of x (k floats) -> its quantized row (xq_row_bytes(k) bytes).
static void quantize_row(const float *x, size_t k, size_t group, int8_t *row) {
  const size_t blocks = k / BLOCK, chunk = MAX_K / group * group;
  float off[MAX_K / BLOCK];  // quantize_x's float offsets, unused here
  float *dx = (float *)(row + k);
  int32_t *sum8 = (int32_t *)(dx + blocks);
  for (size_t k0 = 0; k0 < k; k0 += chunk)  // whole groups at a time: blocks never straddle
    quantize_x(x + k0, k - k0 < chunk ? k - k0 : chunk, group, row + k0, dx + k0 / BLOCK, off);
  for (size_t c = 0; c < blocks; ++c) {  // 8 * the block's integer sum, from its bytes
    const __m256i b = _mm256_load_si256((const __m256i *)(row + c * BLOCK));
    const __m256i w = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), b), _mm256_set1_epi16(1));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
    sum8[c] = 8 * _mm_cvtsi128_si32(s4);
  }
}

void iree_glm_int4_quantize_workgroup(MEMREF(const float, x), MEMREF(int8_t, xq), size_t m, size_t k, size_t group,
                                      size_t row_begin, size_t row_end) {
  MEMREF_START(x); MEMREF_START(xq);
  if (row_end > m) row_end = m;
  for (size_t r = row_begin; r < row_end; ++r) quantize_row(x + r * k, k, group, xq + r * xq_row_bytes(k));
}

// The same for x = silu(gate) * up of rows [gate | up] of gu [m, 2k] (x86_64_avx2/row_glue.h; k <= GLUE_MAX_K).
void iree_glm_int4_quantize_silu_mul_workgroup(MEMREF(const float, gu), MEMREF(int8_t, xq), size_t m, size_t k,
                                               size_t group, size_t row_begin, size_t row_end) {
  MEMREF_START(gu); MEMREF_START(xq);
  if (row_end > m) row_end = m;
  float x[GLUE_MAX_K] __attribute__((aligned(32)));
  for (size_t r = row_begin; r < row_end; ++r) {
    glue_silu_mul(gu + r * 2 * k, NULL, k, x);
    quantize_row(x, k, group, xq + r * xq_row_bytes(k));
  }
}

// The same for x = RMSNorm(h) with weight w [k] (x86_64_avx2/row_glue.h; k <= GLUE_MAX_K).
void iree_glm_int4_quantize_rms_norm_workgroup(MEMREF(const float, h), MEMREF(const float, w), MEMREF(int8_t, xq), size_t m,
                                               size_t k, size_t group, float eps, size_t row_begin, size_t row_end) {
  MEMREF_START(h); MEMREF_START(w); MEMREF_START(xq);
  if (row_end > m) row_end = m;
  float x[GLUE_MAX_K] __attribute__((aligned(32)));
  for (size_t r = row_begin; r < row_end; ++r) {
    glue_rms_norm(h + r * k, w, k, eps, x);
    quantize_row(x, k, group, xq + r * xq_row_bytes(k));
  }
}

// The packed bytes of weight rows n0..n0 + strip (null from n on) from element k0.
static inline __attribute__((always_inline)) void strip_rows(const int8_t *q, size_t n, size_t n0, size_t k, size_t k0,
                                                             size_t strip, const int8_t **rows) {
  const size_t row_bytes = k / 2;
  for (size_t r = 0; r < strip; ++r) rows[r] = n0 + r < n ? q + (n0 + r) * row_bytes + k0 / 2 : 0;
}

// The f16 group scales of weight rows n0..n0 + strip (zeros from n on), groups of elements
// k0..k0 + kc, as f32 [kc / group][strip].
static inline __attribute__((always_inline)) void strip_scales(const uint16_t *s, size_t n, size_t n0, size_t k, size_t group,
                                                               size_t k0, size_t kc, size_t strip, float *scales) {
  const size_t groups = k / group, g0 = k0 / group;
  for (size_t g = 0; g < kc / group; ++g)
    for (size_t r = 0; r < strip; ++r) scales[g * strip + r] = n0 + r < n ? _cvtsh_ss(s[(n0 + r) * groups + g0 + g]) : 0.0f;
}

// The matrix kernels' view of tm (<= MAX_TILE_M) quantized rows of x from `xq` (row stride
// `stride`; the layout of xq_row_bytes): row i's int8 elements from k0, its block scales and its
// blocks' sums from block k0 / BLOCK.
enum { MAX_TILE_M = 8 };
typedef struct { const int8_t *x[MAX_TILE_M]; const float *dx[MAX_TILE_M]; const int32_t *sum8[MAX_TILE_M]; } tile_rows;
static inline __attribute__((always_inline)) tile_rows tile_rows_at(const int8_t *xq, size_t stride, size_t k, size_t k0, int tm) {
  tile_rows t;
  for (int i = 0; i < tm; ++i) {
    t.x[i] = xq + i * stride + k0;
    t.dx[i] = (const float *)(xq + i * stride + k) + k0 / BLOCK;
    t.sum8[i] = (const int32_t *)(xq + i * stride + k) + k / BLOCK + k0 / BLOCK;
  }
  return t;
}

// One row of a tile's results into y: stored for the first chunk of K (k0 = 0), added after.
static inline void tile_store(float *y, const float *out, size_t cols, size_t k0) {
  for (size_t j = 0; j < cols; ++j) y[j] = k0 ? y[j] + out[j] : out[j];
}

#ifndef IREE_GLM_OWN_MATRIX_KERNEL  // x86_64_avx512/int4.c includes this file for the rest

// The matrix kernel works on strips of STRIP weight rows: a strip's packed bytes are first
// transposed so that one 32-byte vector holds 4 bytes of each of its 8 rows, one row per 32-bit
// lane, and unpacked to nibbles (low and high vectors). A broadcast 4 bytes of xq against such
// a vector then gives, after vpmaddubsw, each row's partial dot product in its own lane: no
// horizontal sums, and per block of 32 one conversion and one FMA for 8 outputs. A tile is
// TILE_M rows of x against two strips (16 weight rows): each strip vector serves TILE_M rows,
// each broadcast x both strips (in a 128 x 1024 x 2816 probe, one core: 1x8 rows 2.6x the
// previous 8-row kernel, 4x16 3.0x; 5x16 and 6x16 spill). K is walked in chunks of CHUNK_K (the
// unpacked strips, 16 KB each, stay in L1; any K fits the stack).
enum { STRIP = 8, TILE_M = 4, CHUNK_K = 2048 };

// The strip operations at 256 bits (../int4_strip.h): 8 rows a strip.
typedef __m256i strip_vector;
#define SV(op) _mm256_##op
#define SV_AND _mm256_and_si256
static inline __attribute__((always_inline)) strip_vector sv_load_rows(const int8_t *const *rows, int r, size_t at, const int8_t *zeros) {
  const int8_t *lo = rows[r] ? rows[r] + at : zeros, *hi = rows[r + 4] ? rows[r + 4] + at : zeros;
  return _mm256_setr_m128i(_mm_loadu_si128((const __m128i *)lo), _mm_loadu_si128((const __m128i *)hi));
}
#include "../int4_strip.h"

// y[0 .. tm, 0 .. cols) (row stride ldy, cols <= 2 * STRIP) += strips a and b (weight rows
// 0..7, 8..15 of the tile) times tm rows of quantized x starting at `xq` (row stride `stride`),
// elements k0..k0+kc; the first chunk (k0 = 0) stores instead of adding. tm <= TILE_M is a
// constant after inlining.
static inline __attribute__((always_inline)) void tile(const __m256i *strip_a, const __m256i *strip_b, const float *scales_a,
                                                       const float *scales_b, const int8_t *xq, size_t stride, size_t k,
                                                       size_t group, size_t k0, size_t kc, float *y, size_t ldy, size_t cols,
                                                       const int tm) {
  const __m256i ones = _mm256_set1_epi16(1);
  const tile_rows x = tile_rows_at(xq, stride, k, k0, tm);
  __m256 acc[TILE_M][2];
  for (int i = 0; i < tm; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  for (size_t g = 0, c = 0; g < kc / group; ++g) {
    const __m256 sa = _mm256_load_ps(scales_a + g * STRIP), sb = _mm256_load_ps(scales_b + g * STRIP);
    for (size_t end = c + group / BLOCK; c < end; ++c) {
      __m256i dot[TILE_M][2];  // i16 sums of 8 product pairs: <= 8 * 2 * 15 * 127, exact
      for (int i = 0; i < tm; ++i) dot[i][0] = dot[i][1] = _mm256_setzero_si256();
      for (int p = 0; p < 8; ++p) {
        const __m256i wa = _mm256_load_si256(strip_a + c * 8 + p), wb = _mm256_load_si256(strip_b + c * 8 + p);
        for (int i = 0; i < tm; ++i) {  // the block's x: the low nibbles' 16, then the high nibbles' 16
          const __m256i xb = _mm256_set1_epi32(((const int32_t *)(x.x[i] + c * BLOCK))[(p & 1) * 4 + p / 2]);
          dot[i][0] = _mm256_add_epi16(dot[i][0], _mm256_maddubs_epi16(wa, xb));
          dot[i][1] = _mm256_add_epi16(dot[i][1], _mm256_maddubs_epi16(wb, xb));
        }
      }
      for (int i = 0; i < tm; ++i) {
        const __m256i off = _mm256_set1_epi32(x.sum8[i][c]);
        const __m256 d = _mm256_broadcast_ss(x.dx[i] + c);
        const __m256i da = _mm256_sub_epi32(_mm256_madd_epi16(dot[i][0], ones), off);
        const __m256i db = _mm256_sub_epi32(_mm256_madd_epi16(dot[i][1], ones), off);
        acc[i][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(da), _mm256_mul_ps(sa, d), acc[i][0]);
        acc[i][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(db), _mm256_mul_ps(sb, d), acc[i][1]);
      }
    }
  }
  for (int i = 0; i < tm; ++i) {
    float out[2 * STRIP];
    _mm256_storeu_ps(out, acc[i][0]);
    _mm256_storeu_ps(out + STRIP, acc[i][1]);
    tile_store(y + i * ldy, out, cols, k0);
  }
}

#include "../int4_matmul.h"

#endif  // IREE_GLM_OWN_MATRIX_KERNEL
