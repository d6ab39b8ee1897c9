// int4 x f32 matrix products, AVX2 + FMA + F16C, linked into IREE dispatches: a matrix-vector
// kernel for decode (M = 1) and a matrix kernel for prefill / batched decode (8 rows of x per call).
//
// y[m, n] = sum_g scale[n, g] * sum_{k in group g} w[n, k] * x[m, k]
//
// Weights (iree_glm/quant.py's int4 layout): qweight i8 [N, K/G, G/2], two nibbles a byte, each
// the weight's integer + 8: the low nibble of byte j of a group is its element j, the high
// nibble element j + G/2; scale f16 [N, K/G]. Like llama.cpp's Q4_0 x Q8_0, x is quantized to
// int8 per block of 32 at run time, so the inner loop is integer: nibble x int8 products summed
// in pairs (vpmaddubsw, vpmaddwd), then per block of 32 one conversion and two float FMAs (the
// block's x scale minus its 8 * sum(x) offset, then the weight's group scale).
//
// Called once per workgroup by the dispatches passes/int4_kernel.py builds; each workgroup
// quantizes its rows of x itself (K values a row, cheap next to its rows of weights) and writes
// its own outputs.
// Embedded-ELF rules: no libc, no globals, no TLS; buffers arrive as MLIR memref descriptors
// (base, aligned base, offset, size, stride).

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#define MEMREF(T, name) T *name##_base, T *name, size_t name##_offset, size_t name##_size, size_t name##_stride

enum { BLOCK = 32, MAX_K = 8192, ROWS = 8, MAX_K_ROWS = 4096 };

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
  (void)x_base; (void)x_size; (void)x_stride; (void)q_base; (void)q_size; (void)q_stride;
  (void)s_base; (void)s_size; (void)s_stride; (void)y_base; (void)y_size; (void)y_stride;
  x += x_offset; q += q_offset; s += s_offset; y += y_offset;
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

// The same product for ROWS rows of x at a time (prefill, batched decode): x [m, k], y [m, n];
// this call computes x rows m_begin.. m_begin + ROWS (clipped to m) against weight rows
// row_begin..row_end. Each block of a weight row is unpacked once and used for all ROWS rows.
void iree_glm_int4_matmul_workgroup(MEMREF(const float, x), MEMREF(const int8_t, q), MEMREF(const uint16_t, s),
                                    MEMREF(float, y), size_t m, size_t n, size_t k, size_t group,
                                    size_t row_begin, size_t row_end, size_t m_begin) {
  (void)x_base; (void)x_size; (void)x_stride; (void)q_base; (void)q_size; (void)q_stride;
  (void)s_base; (void)s_size; (void)s_stride; (void)y_base; (void)y_size; (void)y_stride;
  x += x_offset; q += q_offset; s += s_offset; y += y_offset;
  if (row_end > n) row_end = n;
  if (m_begin >= m) return;
  const size_t rows = m - m_begin < ROWS ? m - m_begin : ROWS;
  const size_t blocks = k / BLOCK, per_group = group / BLOCK, groups = k / group, row_bytes = k / 2;
  int8_t xq[ROWS][MAX_K_ROWS] __attribute__((aligned(32)));
  float dx[ROWS][MAX_K_ROWS / BLOCK], off[ROWS][MAX_K_ROWS / BLOCK], sf[MAX_K_ROWS / BLOCK];
  for (size_t i = 0; i < ROWS; ++i) {
    if (i < rows) {
      quantize_x(x + (m_begin + i) * k, k, group, xq[i], dx[i], off[i]);
    } else {  // past the last row: zeros (computed, never stored)
      for (size_t c = 0; c < blocks; ++c) {
        _mm256_store_si256((__m256i *)(xq[i] + c * BLOCK), _mm256_setzero_si256());
        dx[i][c] = off[i][c] = 0.0f;
      }
    }
  }
  const __m256i ones = _mm256_set1_epi16(1), shifts = _mm256_setr_epi64x(0, 0, 4, 4);
  for (size_t r = row_begin; r < row_end; ++r) {
    __m256 acc[ROWS];
    for (int i = 0; i < ROWS; ++i) acc[i] = _mm256_setzero_ps();
    const int8_t *w = q + r * row_bytes;
    widen(s + r * groups, sf, groups);
    for (size_t g = 0, c = 0; g < groups; ++g) {
      const __m256 sg = _mm256_broadcast_ss(sf + g);
      for (size_t end = c + per_group; c < end; ++c) {
        const __m256i nib = nibbles(w + c * 16, shifts);
        for (int i = 0; i < ROWS; ++i) {
          const __m256i xv = _mm256_load_si256((const __m256i *)(xq[i] + c * BLOCK));
          const __m256 v = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(nib, xv), ones));
          acc[i] = _mm256_fmadd_ps(_mm256_fmsub_ps(v, _mm256_broadcast_ss(dx[i] + c), _mm256_broadcast_ss(off[i] + c)), sg, acc[i]);
        }
      }
    }
    for (size_t i = 0; i < rows; ++i) y[(m_begin + i) * n + r] = hsum(acc[i]);
  }
}
