// int8 x f32 matrix products for x86-64 with AVX-512 (F, BW, VL) and VNNI, linked into IREE
// dispatches. The same weight layout, quantized rows of x and entry points as
// x86_64_avx2/int8.c, which this file includes for everything but the prompt (matrix) kernel:
// the decode matrix-vector kernel is bound by reading the weights, and its AVX2 form streams
// them as fast (kernels.md), so only the matrix kernel has a 512-bit form here.
//
// y[m, n] = sum_k w[n, k] * x[m, k]   (the per-channel weight scale is applied after, in the graph)
//
// vpdpbusd multiplies unsigned by signed bytes and adds each 4 products into an i32 lane, with
// no intermediate saturation. The weights are made unsigned, u = w + 128 (in [1, 255]), when a
// chunk is regrouped, and x (int8 in [-127, 127]) is the signed operand, broadcast 4 bytes at a
// time: sum_k u * x = sum_k w * x + 128 * sum_k x, and the row sum of x is subtracted once per
// output. i32 arithmetic wraps, so the result is exact whenever the true sum fits
// (|sum| <= K * 127 * 127 < 2^31 for K < 133000), like the AVX2 kernel's.

#define IREE_GLM_OWN_MATRIX_KERNEL
#include "../x86_64_avx2/int8.c"

// A chunk of CHUNK_K k of TILES weight tiles (16 rows each) is regrouped once into vectors whose
// 32-bit lane r holds 4 k of row r (16 KB, in L1); then tiles of TILE_M rows of x run over it
// with TILE_M x TILES i32 accumulators in registers, each weight vector serving TILE_M rows and
// each broadcast of x TILES vectors. Sums of other chunks wait in `acc` (rows of at most MAX_ROWS).
enum { CHUNK_K = 256, MAX_ROWS = 64, TILES = 4, TILE_M = 6 };

// 8 k of a tile (128 bytes: k0..k7 x 16 rows) -> 2 vectors, lane r = row r's bytes k0 k2 k4 k6
// (the first) and k1 k3 k5 k7 (the second): the order of x's quantized rows (even_odd). Per 4 k
// this is also AMX's VNNI layout of a B tile row (x86_64_amx/int8.c).
static inline void interleave8(const int8_t *w, __m512i *even, __m512i *odd) {
  const __m256i l0 = _mm256_loadu_si256((const __m256i *)w), l1 = _mm256_loadu_si256((const __m256i *)(w + 32));
  const __m256i l2 = _mm256_loadu_si256((const __m256i *)(w + 64)), l3 = _mm256_loadu_si256((const __m256i *)(w + 96));
  const __m256i p0 = _mm256_unpacklo_epi8(l0, l1), p1 = _mm256_unpackhi_epi8(l0, l1);
  const __m256i p2 = _mm256_unpacklo_epi8(l2, l3), p3 = _mm256_unpackhi_epi8(l2, l3);
  // v[j]: rows 4j..4j+3 (as dot8 in x86_64_avx2/int8.c), even k in the low 128 bits, odd k in the high.
  const __m256i v0 = _mm256_unpacklo_epi16(p0, p2), v1 = _mm256_unpackhi_epi16(p0, p2);
  const __m256i v2 = _mm256_unpacklo_epi16(p1, p3), v3 = _mm256_unpackhi_epi16(p1, p3);
  *even = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_permute2x128_si256(v0, v1, 0x20)),
                             _mm256_permute2x128_si256(v2, v3, 0x20), 1);
  *odd = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_permute2x128_si256(v0, v1, 0x31)),
                            _mm256_permute2x128_si256(v2, v3, 0x31), 1);
}

#ifndef IREE_GLM_AMX_MATRIX_KERNEL  // x86_64_amx/int8.c includes this file for the rest

// interleave8, + 128: vpdpbusd's unsigned operand.
static inline void regroup8(const int8_t *w, __m512i *even, __m512i *odd) {
  const __m512i bias = _mm512_set1_epi8((char)0x80);
  __m512i e, o;
  interleave8(w, &e, &o);
  *even = _mm512_xor_si512(e, bias);
  *odd = _mm512_xor_si512(o, bias);
}

static inline int32_t load_i32(const int8_t *p) {
  int32_t v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

// acc[i * TILES + j] += the chunk's sums of tm rows of x (starting at `x`, row stride `stride`)
// against nt regrouped tiles (`wv`: per 4 k, TILES vectors); steps = the chunk's k / 4.
static inline __attribute__((always_inline)) void rows_tile(const __m512i *wv, const int8_t *x, size_t stride, size_t steps,
                                                            __m512i *acc, const int tm, const int nt) {
  __m512i a[TILE_M][TILES];
  for (int i = 0; i < tm; ++i)
    for (int j = 0; j < nt; ++j) a[i][j] = acc[i * TILES + j];
  for (size_t s = 0; s < steps; ++s) {
    const __m512i *w = wv + s * TILES;
    for (int i = 0; i < tm; ++i) {
      const __m512i xb = _mm512_set1_epi32(load_i32(x + i * stride + 4 * s));
      for (int j = 0; j < nt; ++j) a[i][j] = _mm512_dpbusd_epi32(a[i][j], w[j], xb);
    }
  }
  for (int i = 0; i < tm; ++i)
    for (int j = 0; j < nt; ++j) acc[i * TILES + j] = a[i][j];
}

// All rows m_begin..m_end over one regrouped chunk of nt tiles, TILE_M rows at a time (the tile
// height a constant in every call).
static inline __attribute__((always_inline)) void rows_chunk(const __m512i *wv, const int8_t *xq, size_t stride, size_t steps,
                                                             __m512i (*acc)[TILES], size_t rows, const int nt) {
  size_t r = 0;
  for (; r + TILE_M <= rows; r += TILE_M) rows_tile(wv, xq + r * stride, stride, steps, acc[r], TILE_M, nt);
  switch (rows - r) {
    case 5: rows_tile(wv, xq + r * stride, stride, steps, acc[r], 5, nt); break;
    case 4: rows_tile(wv, xq + r * stride, stride, steps, acc[r], 4, nt); break;
    case 3: rows_tile(wv, xq + r * stride, stride, steps, acc[r], 3, nt); break;
    case 2: rows_tile(wv, xq + r * stride, stride, steps, acc[r], 2, nt); break;
    case 1: rows_tile(wv, xq + r * stride, stride, steps, acc[r], 1, nt); break;
    default: break;
  }
}

// sum_k x[k] of a quantized row (k int8).
static inline int32_t row_sum(const int8_t *row, size_t k) {
  const __m512i ones = _mm512_set1_epi8(1);
  __m512i s = _mm512_setzero_si512();
  size_t i = 0;
  for (; i + 64 <= k; i += 64) s = _mm512_dpbusd_epi32(s, ones, _mm512_loadu_si512((const void *)(row + i)));
  int32_t total = _mm512_reduce_add_epi32(s);
  for (; i < k; ++i) total += row[i];
  return total;
}

// Rows m_begin..m_end of x (1..MAX_ROWS) x weight tiles t_begin..t_end (x86_64_avx2/int8.c's
// iree_glm_int8_matmul_workgroup clamps the ranges and calls this).
static void matmul_rows(const int8_t *xq, const int8_t *q, float *y, size_t tiles, size_t k, size_t t_begin, size_t t_end,
                        size_t m_begin, size_t m_end) {
  const size_t stride = xq_row_bytes(k), n = tiles * LANES, rows = m_end - m_begin;
  const int8_t *x = xq + m_begin * stride;
  __m512i wv[CHUNK_K / 4 * TILES];
  __m512i acc[MAX_ROWS][TILES];
  __m512i offset[MAX_ROWS];  // 128 * the row's sum of x, subtracted from each output
  __m512 scale[MAX_ROWS];
  for (size_t r = 0; r < rows; ++r) {
    offset[r] = _mm512_set1_epi32(128 * row_sum(x + r * stride, k));
    scale[r] = _mm512_set1_ps(*(const float *)(x + r * stride + k));
  }
  for (size_t t0 = t_begin; t0 < t_end; t0 += TILES) {
    const int nt = t_end - t0 < TILES ? (int)(t_end - t0) : TILES;
    for (size_t r = 0; r < rows; ++r)
      for (int j = 0; j < TILES; ++j) acc[r][j] = _mm512_setzero_si512();
    for (size_t k0 = 0; k0 < k; k0 += CHUNK_K) {
      const size_t kc = k - k0 < CHUNK_K ? k - k0 : CHUNK_K;
      for (int j = 0; j < nt; ++j) {
        const int8_t *tile = q + (t0 + j) * k * LANES + k0 * LANES;
        for (size_t s = 0; s < kc / 8; ++s) regroup8(tile + 8 * s * LANES, &wv[2 * s * TILES + j], &wv[(2 * s + 1) * TILES + j]);
      }
      switch (nt) {
        case 4: rows_chunk(wv, x + k0, stride, kc / 4, acc, rows, 4); break;
        case 3: rows_chunk(wv, x + k0, stride, kc / 4, acc, rows, 3); break;
        case 2: rows_chunk(wv, x + k0, stride, kc / 4, acc, rows, 2); break;
        default: rows_chunk(wv, x + k0, stride, kc / 4, acc, rows, 1); break;
      }
    }
    for (size_t r = 0; r < rows; ++r)
      for (int j = 0; j < nt; ++j)
        _mm512_storeu_ps(y + (m_begin + r) * n + (t0 + j) * LANES,
                         _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][j], offset[r])), scale[r]));
  }
}

#include "../int8_matmul.h"

#endif  // IREE_GLM_AMX_MATRIX_KERNEL
