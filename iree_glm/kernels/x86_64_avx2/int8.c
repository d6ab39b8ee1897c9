// int8 x f32 matrix products, AVX2 + FMA, linked into IREE dispatches: a matrix-vector kernel
// for decode (M = 1) and, for prompts, a quantization of x's rows and a register-blocked matrix
// kernel (2 rows of x x 16 weight rows per step).
//
// y[m, n] = sum_k w[n, k] * x[m, k]   (the per-channel weight scale is applied after, in the graph)
//
// Weights (iree_glm/quant.py's int8 layout): qweight i8 [N/16, K, 16], values in [-127, 127]:
// tile t holds output rows 16t..16t+15, for each k their 16 bytes. A tile is one contiguous
// stream of 16 K bytes. Like llama.cpp's Q8_0 x Q8_0, x is quantized to int8 per block of 32
// at run time (decode; prompts: per row, as the graph's integer matmul), so the inner loop is
// integer; per block one conversion and one FMA per 8 rows (prompts: one per output).
//
// Integer dot products without i16 saturation (the "sign trick"): vpmaddubsw multiplies
// unsigned by signed bytes and adds pairs into i16. With u = |x| and s = sign(w, x) (w negated
// where x < 0, zeroed where x = 0) each product u * s equals x * w, |x * w| <= 127 * 127, a pair
// <= 32258 < 32767: exact. vpmaddwd with ones then sums the i16 pairs into i32 lanes.
//
// Called once per workgroup by the dispatches passes/int8_kernel.py builds; each writes its own
// outputs. A decode workgroup quantizes its one row of x itself (K values, cheap next to its
// rows of weights). Embedded-ELF rules: no libc, no globals, no TLS; buffers arrive as MLIR
// memref descriptors (base, aligned base, offset, size, stride).

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "row_glue.h"

#include "../memref.h"

enum { BLOCK = 32, MAX_K = 16384, LANES = 16 };

// Bytes ahead of the current position a tile's stream is prefetched.
#ifndef PREFETCH_AHEAD
#define PREFETCH_AHEAD 1024
#endif

// 32 floats -> 32 int8 (round half to even of x / d, d = max|x| / 127); returns d.
static inline float quantize_block(const float *x, __m256i *out) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 v[4] = {_mm256_loadu_ps(x), _mm256_loadu_ps(x + 8), _mm256_loadu_ps(x + 16), _mm256_loadu_ps(x + 24)};
  __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                           _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
  const float d = _mm_cvtss_f32(m4) / 127.0f;
  const __m256 inv = _mm256_set1_ps(d > 0.0f ? 1.0f / d : 0.0f);
  __m256i i[4];
  for (int j = 0; j < 4; ++j) i[j] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[j], inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  __m256i b = _mm256_permute4x64_epi64(_mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3])), 0xD8);
  *out = _mm256_shuffle_epi32(b, 0xD8);  // packs interleaves 128-bit lanes: restore element order
  return d;
}

// The matrix-vector kernel regroups 8 k of a tile (128 bytes: k0..k7 x 16 rows) with two
// rounds of unpacks into 4 vectors whose 32-bit lanes hold 4 bytes of one row: rows 4j..4j+3,
// k0 k2 k4 k6 in the low 128 bits, k1 k3 k5 k7 in the high. x is stored in the same order per
// 8 k (x0 x2 x4 x6 x1 x3 x5 x7) so that one vpermd broadcasts it against such a vector.
static inline __m256i even_odd(__m256i v) {
  const __m256i order = _mm256_setr_epi8(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15,
                                         0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15);
  return _mm256_shuffle_epi8(v, order);
}

// 8 k of a tile (128 bytes at w) -> the 4 vectors described above.
static inline void regroup_k8(const int8_t *w, __m256i v[4]) {
  const __m256i l0 = _mm256_loadu_si256((const __m256i *)w), l1 = _mm256_loadu_si256((const __m256i *)(w + 32));
  const __m256i l2 = _mm256_loadu_si256((const __m256i *)(w + 64)), l3 = _mm256_loadu_si256((const __m256i *)(w + 96));
  const __m256i p0 = _mm256_unpacklo_epi8(l0, l1), p1 = _mm256_unpackhi_epi8(l0, l1);  // rows 0-7 | 8-15: (k0, k2) / (k1, k3)
  const __m256i p2 = _mm256_unpacklo_epi8(l2, l3), p3 = _mm256_unpackhi_epi8(l2, l3);  // (k4, k6) / (k5, k7)
  v[0] = _mm256_unpacklo_epi16(p0, p2);
  v[1] = _mm256_unpackhi_epi16(p0, p2);
  v[2] = _mm256_unpacklo_epi16(p1, p3);
  v[3] = _mm256_unpackhi_epi16(p1, p3);
}

// 16 i32 dot products (4 vectors: rows 4j..4j+3, the low and high halves holding different k)
// of 8 k of a tile's stream `w` with x's 8 k (`xs` signed, `xa` absolute, both as even_odd).
static inline void dot8(const int8_t *w, const int8_t *xs, const int8_t *xa, __m256i acc[4]) {
  const __m256i pick = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1), ones = _mm256_set1_epi16(1);
  const __m256i s = _mm256_permutevar8x32_epi32(_mm256_castsi128_si256(_mm_loadl_epi64((const __m128i *)xs)), pick);
  const __m256i a = _mm256_permutevar8x32_epi32(_mm256_castsi128_si256(_mm_loadl_epi64((const __m128i *)xa)), pick);
  __m256i v[4];
  regroup_k8(w, v);
  for (int j = 0; j < 4; ++j)
    acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(_mm256_maddubs_epi16(a, _mm256_sign_epi8(v[j], s)), ones));
}

// x [k] -> xs (int8 per block of 32, in even_odd order), xa = |xs| (unless NULL), dx (block scales).
static void quantize_x(const float *x, size_t k, int8_t *xs, int8_t *xa, float *dx) {
  for (size_t c = 0; c < k / BLOCK; ++c) {
    __m256i q;
    dx[c] = quantize_block(x + c * BLOCK, &q);
    q = even_odd(q);
    _mm256_store_si256((__m256i *)(xs + c * BLOCK), q);
    if (xa) _mm256_store_si256((__m256i *)(xa + c * BLOCK), _mm256_abs_epi8(q));
  }
}

// Tiles tile_begin..tile_end of y (16 outputs each) for one row of x; k a multiple of 32.
void iree_glm_int8_matvec_workgroup(MEMREF(const float, x), MEMREF(const int8_t, q), MEMREF(float, y), size_t tiles,
                                    size_t k, size_t tile_begin, size_t tile_end) {
  MEMREF_START(x); MEMREF_START(q); MEMREF_START(y);
  if (tile_end > tiles) tile_end = tiles;
  int8_t xs[MAX_K] __attribute__((aligned(32))), xa[MAX_K] __attribute__((aligned(32)));
  float dx[MAX_K / BLOCK];
  quantize_x(x, k, xs, xa, dx);
  const size_t tile_bytes = k * LANES;
  for (size_t t = tile_begin; t < tile_end; ++t) {
    const int8_t *w = q + t * tile_bytes;
    __m256 f[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (size_t c = 0; c < k / BLOCK; ++c) {
      __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
      for (size_t j = 0; j < BLOCK; j += 8) {
        const int8_t *p = w + (c * BLOCK + j) * LANES;
        _mm_prefetch((const char *)p + PREFETCH_AHEAD, _MM_HINT_T0);
        _mm_prefetch((const char *)p + PREFETCH_AHEAD + 64, _MM_HINT_T0);
        dot8(p, xs + c * BLOCK + j, xa + c * BLOCK + j, acc);
      }
      const __m256 d = _mm256_broadcast_ss(dx + c);
      for (int j = 0; j < 4; ++j) f[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[j]), d, f[j]);
    }
    // f[j]: rows 4j..4j+3 (low half: even k, high half: odd k) -> y rows 0..7, 8..15.
    const __m256 lo = _mm256_add_ps(_mm256_permute2f128_ps(f[0], f[1], 0x20), _mm256_permute2f128_ps(f[0], f[1], 0x31));
    const __m256 hi = _mm256_add_ps(_mm256_permute2f128_ps(f[2], f[3], 0x20), _mm256_permute2f128_ps(f[2], f[3], 0x31));
    _mm256_storeu_ps(y + t * LANES, lo);
    _mm256_storeu_ps(y + t * LANES + 8, hi);
  }
}

// Speculative verification: a few rows of x (the target checking draft tokens) whose every row
// must come out bit for bit as the matrix-vector kernel's for that row alone, so that a verified
// token is what a decode step would choose. Each block of a tile is regrouped once (as dot8
// does, keeping each vector and its absolute value) and applied to every row: the integer sums
// are exact whatever the order, and each row's floats go through the same operations in the
// same order as in iree_glm_int8_matvec_workgroup (per block one conversion and one FMA per
// lane into the row's own accumulators, then the same halves added). Rows' int8 copies of x
// live on the stack, VERIFY_X_BYTES in all: rows beyond that take another pass over the tiles.
enum { VERIFY_ROWS = 16, VERIFY_X_BYTES = 32768 };

// 16 i32 dot products of one block (32 k) of a tile with one row's xs (even_odd order), from the
// block's regrouped vectors `wv` (per 8 k: 4 x (vector, its absolute value)): the sign trick with
// the roles of x and w swapped (|w| * sign(x, w) = x * w, the same exact sums as dot8).
static inline void dot_block(const __m256i *wv, const int8_t *xs, __m256i acc[4]) {
  const __m256i pick = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1), ones = _mm256_set1_epi16(1);
  for (int s = 0; s < BLOCK / 8; ++s) {
    const __m256i xb = _mm256_permutevar8x32_epi32(_mm256_castsi128_si256(_mm_loadl_epi64((const __m128i *)(xs + 8 * s))), pick);
    for (int j = 0; j < 4; ++j) {
      const __m256i v = wv[s * 8 + 2 * j], u = wv[s * 8 + 2 * j + 1];
      acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(_mm256_maddubs_epi16(u, _mm256_sign_epi8(xb, v)), ones));
    }
  }
}

// Tiles tile_begin..tile_end of y [m, tiles * 16] for the m rows of x [m, k]; k a multiple of 32.
void iree_glm_int8_matvec_rows_workgroup(MEMREF(const float, x), MEMREF(const int8_t, q), MEMREF(float, y), size_t m,
                                         size_t tiles, size_t k, size_t tile_begin, size_t tile_end) {
  (void)x_base; (void)x_size; (void)x_stride; (void)q_base; (void)q_size; (void)q_stride;
  (void)y_base; (void)y_size; (void)y_stride;
  x += x_offset; q += q_offset; y += y_offset;
  if (tile_end > tiles) tile_end = tiles;
  size_t per_pass = VERIFY_X_BYTES / k;
  if (per_pass > VERIFY_ROWS) per_pass = VERIFY_ROWS;
  int8_t xs[VERIFY_X_BYTES] __attribute__((aligned(32)));
  float dx[VERIFY_X_BYTES / BLOCK];
  __m256 f[VERIFY_ROWS][4];
  __m256i wv[BLOCK / 8 * 8];
  const size_t tile_bytes = k * LANES, blocks = k / BLOCK, n = tiles * LANES;
  for (size_t r0 = 0; r0 < m; r0 += per_pass) {
    const size_t rows = m - r0 < per_pass ? m - r0 : per_pass;
    for (size_t r = 0; r < rows; ++r) quantize_x(x + (r0 + r) * k, k, xs + r * k, NULL, dx + r * blocks);
    for (size_t t = tile_begin; t < tile_end; ++t) {
      const int8_t *w = q + t * tile_bytes;
      for (size_t r = 0; r < rows; ++r)
        for (int j = 0; j < 4; ++j) f[r][j] = _mm256_setzero_ps();
      for (size_t c = 0; c < blocks; ++c) {
        for (int s = 0; s < BLOCK / 8; ++s) {
          const int8_t *p = w + (c * BLOCK + 8 * s) * LANES;
          _mm_prefetch((const char *)p + PREFETCH_AHEAD, _MM_HINT_T0);
          _mm_prefetch((const char *)p + PREFETCH_AHEAD + 64, _MM_HINT_T0);
          __m256i v[4];
          regroup_k8(p, v);
          for (int j = 0; j < 4; ++j) {
            wv[s * 8 + 2 * j] = v[j];
            wv[s * 8 + 2 * j + 1] = _mm256_abs_epi8(v[j]);
          }
        }
        for (size_t r = 0; r < rows; ++r) {
          __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
          dot_block(wv, xs + r * k + c * BLOCK, acc);
          const __m256 d = _mm256_broadcast_ss(dx + r * blocks + c);
          for (int j = 0; j < 4; ++j) f[r][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[j]), d, f[r][j]);
        }
      }
      for (size_t r = 0; r < rows; ++r) {  // as the matrix-vector kernel's last step
        const __m256 lo = _mm256_add_ps(_mm256_permute2f128_ps(f[r][0], f[r][1], 0x20), _mm256_permute2f128_ps(f[r][0], f[r][1], 0x31));
        const __m256 hi = _mm256_add_ps(_mm256_permute2f128_ps(f[r][2], f[r][3], 0x20), _mm256_permute2f128_ps(f[r][2], f[r][3], 0x31));
        _mm256_storeu_ps(y + (r0 + r) * n + t * LANES, lo);
        _mm256_storeu_ps(y + (r0 + r) * n + t * LANES + 8, hi);
      }
    }
  }
}

// Prefill and batched decode: a quantization dispatch, then a register-blocked matrix kernel.
//
// iree_glm_int8_quantize_workgroup turns rows of x [m, k] into rows of xq_row_bytes(k) bytes: k
// int8 (per row: q = round half to even of x * 127 / max|x|, in even_odd order per 8 k), then
// the f32 row scale max|x| / 127, padded to 32 bytes (as passes/dequant_matmul.py's integer
// matmul and quant.quantize_rows: the same numbers). Each row is quantized once per matmul.
static inline size_t xq_row_bytes(size_t k) { return k + 32; }

// One row of x (k floats) -> its quantized row (xq_row_bytes(k) bytes).
static void quantize_row(const float *xr, size_t k, int8_t *row) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 mx = _mm256_setzero_ps();
  for (size_t i = 0; i < k; i += 8) mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, _mm256_loadu_ps(xr + i)));
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
  const float amax = _mm_cvtss_f32(m4);
  const __m256 inv = _mm256_set1_ps(127.0f / (amax > 1e-30f ? amax : 1e-30f));
  for (size_t c = 0; c < k; c += BLOCK) {
    __m256i i[4];
    for (int j = 0; j < 4; ++j)
      i[j] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(xr + c + 8 * j), inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    __m256i b = _mm256_permute4x64_epi64(_mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3])), 0xD8);
    _mm256_store_si256((__m256i *)(row + c), even_odd(_mm256_shuffle_epi32(b, 0xD8)));
  }
  *(float *)(row + k) = amax / 127.0f;
}

void iree_glm_int8_quantize_workgroup(MEMREF(const float, x), MEMREF(int8_t, xq), size_t m, size_t k, size_t row_begin,
                                      size_t row_end) {
  MEMREF_START(x); MEMREF_START(xq);
  if (row_end > m) row_end = m;
  for (size_t r = row_begin; r < row_end; ++r) quantize_row(x + r * k, k, xq + r * xq_row_bytes(k));
}

// The same for x = silu(gate * sg) * (up * su) of rows [gate | up] of gu [m, 2k] and the gate/up
// matmul's per-channel weight scale [sg | su] (x86_64_avx2/row_glue.h; k <= GLUE_MAX_K).
void iree_glm_int8_quantize_silu_mul_workgroup(MEMREF(const float, gu), MEMREF(const float, scale), MEMREF(int8_t, xq),
                                               size_t m, size_t k, size_t row_begin, size_t row_end) {
  MEMREF_START(gu); MEMREF_START(scale); MEMREF_START(xq);
  if (row_end > m) row_end = m;
  float x[GLUE_MAX_K] __attribute__((aligned(32)));
  for (size_t r = row_begin; r < row_end; ++r) {
    glue_silu_mul(gu + r * 2 * k, scale, k, x);
    quantize_row(x, k, xq + r * xq_row_bytes(k));
  }
}

// The same for x = RMSNorm(h) with weight w [k] (x86_64_avx2/row_glue.h; k <= GLUE_MAX_K).
void iree_glm_int8_quantize_rms_norm_workgroup(MEMREF(const float, h), MEMREF(const float, w), MEMREF(int8_t, xq), size_t m,
                                               size_t k, float eps, size_t row_begin, size_t row_end) {
  MEMREF_START(h); MEMREF_START(w); MEMREF_START(xq);
  if (row_end > m) row_end = m;
  float x[GLUE_MAX_K] __attribute__((aligned(32)));
  for (size_t r = row_begin; r < row_end; ++r) {
    glue_rms_norm(h + r * k, w, k, eps, x);
    quantize_row(x, k, xq + r * xq_row_bytes(k));
  }
}

#ifndef IREE_GLM_OWN_MATRIX_KERNEL  // x86_64_avx512/int8.c includes this file for the rest

// The matrix kernel regroups a chunk of CHUNK_K k of one weight tile (16 rows) once, as dot8
// does (4 vectors per 8 k, one row per 32-bit lane), keeping each vector and its absolute
// value; then every pair of x rows runs over the chunk with the 16 rows' i32 sums (8 vectors)
// in registers, each weight vector serving both rows. Sums stay integers over all of K
// (|sum| <= K * 127 * 127 < 2^31 for K < 133000): one conversion and scaling per output.
enum { CHUNK_K = 256, MAX_ROWS = 64 };

static inline __attribute__((always_inline)) void rows_tile(const __m256i *wv, const int8_t *x0, const int8_t *x1, size_t steps,
                                                            __m256i *acc0, __m256i *acc1, const int two) {
  const __m256i pick = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1), ones = _mm256_set1_epi16(1);
  __m256i a0 = acc0[0], a1 = acc0[1], a2 = acc0[2], a3 = acc0[3];
  __m256i b0 = acc1[0], b1 = acc1[1], b2 = acc1[2], b3 = acc1[3];
  for (size_t s = 0; s < steps; ++s) {
    const __m256i *w = wv + s * 8;
    const __m256i s0 = _mm256_permutevar8x32_epi32(_mm256_castsi128_si256(_mm_loadl_epi64((const __m128i *)(x0 + s * 8))), pick);
    const __m256i s1 = two ? _mm256_permutevar8x32_epi32(_mm256_castsi128_si256(_mm_loadl_epi64((const __m128i *)(x1 + s * 8))), pick) : s0;
#define STEP(j, A, B)                                                                                    \
  {                                                                                                      \
    const __m256i v = _mm256_load_si256(w + 2 * (j)), u = _mm256_load_si256(w + 2 * (j) + 1);            \
    A = _mm256_add_epi32(A, _mm256_madd_epi16(_mm256_maddubs_epi16(u, _mm256_sign_epi8(s0, v)), ones));  \
    if (two) B = _mm256_add_epi32(B, _mm256_madd_epi16(_mm256_maddubs_epi16(u, _mm256_sign_epi8(s1, v)), ones)); \
  }
    STEP(0, a0, b0) STEP(1, a1, b1) STEP(2, a2, b2) STEP(3, a3, b3)
#undef STEP
  }
  acc0[0] = a0; acc0[1] = a1; acc0[2] = a2; acc0[3] = a3;
  if (two) { acc1[0] = b0; acc1[1] = b1; acc1[2] = b2; acc1[3] = b3; }
}

static void matmul_rows(const int8_t *xq, const int8_t *q, float *y, size_t tiles, size_t k, size_t t_begin, size_t t_end,
                        size_t m_begin, size_t m_end) {
  const size_t stride = xq_row_bytes(k), n = tiles * LANES;
  __m256i wv[CHUNK_K / 8 * 8];  // per 8 k: (vector, its absolute value) x 4
  __m256i acc[MAX_ROWS][4];
  for (size_t t = t_begin; t < t_end; ++t) {
    const int8_t *tile = q + t * k * LANES;
    for (size_t r = m_begin; r < m_end; ++r)
      for (int j = 0; j < 4; ++j) acc[r - m_begin][j] = _mm256_setzero_si256();
    for (size_t k0 = 0; k0 < k; k0 += CHUNK_K) {
      const size_t kc = k - k0 < CHUNK_K ? k - k0 : CHUNK_K;
      for (size_t s = 0; s < kc / 8; ++s) {
        const int8_t *w = tile + (k0 + 8 * s) * LANES;
        __m256i v[4];
        regroup_k8(w, v);
        for (int j = 0; j < 4; ++j) {
          wv[s * 8 + 2 * j] = v[j];
          wv[s * 8 + 2 * j + 1] = _mm256_abs_epi8(v[j]);
        }
      }
      size_t r = m_begin;
      for (; r + 2 <= m_end; r += 2)
        rows_tile(wv, xq + r * stride + k0, xq + (r + 1) * stride + k0, kc / 8, acc[r - m_begin], acc[r + 1 - m_begin], 1);
      if (r < m_end) rows_tile(wv, xq + r * stride + k0, xq + r * stride + k0, kc / 8, acc[r - m_begin], acc[r - m_begin], 0);
    }
    for (size_t r = m_begin; r < m_end; ++r) {  // acc[j]: rows 4j..4j+3, even k | odd k
      const __m256 d = _mm256_broadcast_ss((const float *)(xq + r * stride + k));
      const __m256i *a = acc[r - m_begin];
      const __m256i lo = _mm256_add_epi32(_mm256_permute2x128_si256(a[0], a[1], 0x20), _mm256_permute2x128_si256(a[0], a[1], 0x31));
      const __m256i hi = _mm256_add_epi32(_mm256_permute2x128_si256(a[2], a[3], 0x20), _mm256_permute2x128_si256(a[2], a[3], 0x31));
      _mm256_storeu_ps(y + r * n + t * LANES, _mm256_mul_ps(_mm256_cvtepi32_ps(lo), d));
      _mm256_storeu_ps(y + r * n + t * LANES + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(hi), d));
    }
  }
}

#include "../int8_matmul.h"

#endif  // IREE_GLM_OWN_MATRIX_KERNEL
