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
// rows of weights). The AVX-512 and AMX sets include this file and keep its decode and verify
// kernels.
// Embedded-ELF rules: no libc, no globals, no TLS; buffers arrive as MLIR memref descriptors
// (base, aligned base, offset, size, stride).

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "row_glue.h"

#include "../memref.h"

enum { BLOCK = 32, MAX_K = 8192 };

// x [k] -> xq (int8, in the weights' order), dx (per block scale) and off (see below).
// x in the weights' order: block c = (group g, part j) holds x[g*G + j*16 + 0..15] then
// x[g*G + G/2 + j*16 + 0..15], the elements the 16 bytes of that part pair with.
// off[c]: the +8 of the nibbles adds 8 * dx[c] * sum(xq of block c) to block c's dot product;
// off[c] is an eighth of it, what each of 8 lanes subtracts where a vector holds a block's
// partial sums (x86_64_avx512/int4.c's decode); the outputs-in-lanes kernels here subtract
// 8 * off[c], in the same fmsub that applies dx[c].
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

enum { VERIFY_ROWS = 16, VERIFY_X_BYTES = 32768 };  // verify: rows of x a pass takes, their bytes

#ifndef IREE_GLM_OWN_DECODE_KERNEL  // x86_64_avx512/int4.c has its own decode and verify kernels

// Decode and verification read the weights in strips of 8 rows with the outputs in lanes: per
// block of 32 weights, the 16 bytes of each of the strip's rows are transposed so that 32-bit
// lane j of a vector holds 4 bytes of row j (DECODE_STRIP), then unpacked to nibbles. A row of
// x's 4 quantized bytes, broadcast, times such a vector (vpmaddubsw) gives every row's partial
// sum in its own lane; 8 of those are summed in i16 (<= 16 products of <= 15 * 127 a lane:
// exact) and widened once (vpmaddwd), so a lane ends the block with its row's exact integer dot
// product. Then, per block and 8 outputs: one conversion, one fmsub (x's block scale, the
// nibbles' + 8 offset) and one FMA (the 8 rows' group scales) into the outputs' accumulator.
// The unpacking is shared by every row of x a call has, so a verify row costs the broadcasts,
// 8 multiplies, 8 adds and 3 float operations per block and strip.
enum { DECODE_STRIP = 8 };

// A strip's block: lo[t] lane j = the low nibbles of bytes 4t..4t+3 of row j's 16 bytes (the
// block's elements 4t..4t+3), hi[t] their high nibbles (elements 16 + 4t..).
typedef struct { __m256i lo[4], hi[4]; } decode_block;

static inline __attribute__((always_inline)) decode_block decode_nibbles(const int8_t *const *w, size_t at) {
  __m256i a[4];  // rows j and j + 4, one a 128-bit lane
  for (int j = 0; j < 4; ++j)
    a[j] = _mm256_setr_m128i(_mm_loadu_si128((const __m128i *)(w[j] + at)), _mm_loadu_si128((const __m128i *)(w[j + 4] + at)));
  const __m256i t0 = _mm256_unpacklo_epi32(a[0], a[1]), t1 = _mm256_unpackhi_epi32(a[0], a[1]);
  const __m256i t2 = _mm256_unpacklo_epi32(a[2], a[3]), t3 = _mm256_unpackhi_epi32(a[2], a[3]);
  const __m256i v[4] = {_mm256_unpacklo_epi64(t0, t2), _mm256_unpackhi_epi64(t0, t2), _mm256_unpacklo_epi64(t1, t3), _mm256_unpackhi_epi64(t1, t3)};
  const __m256i mask = _mm256_set1_epi8(0x0F);
  decode_block b;
  for (int t = 0; t < 4; ++t) {
    b.lo[t] = _mm256_and_si256(v[t], mask);
    b.hi[t] = _mm256_and_si256(_mm256_srli_epi16(v[t], 4), mask);
  }
  return b;
}

// The exact integer dot products of a block of x (quantized, in the weights' order) with the
// strip's 8 rows, one a lane.
static inline __attribute__((always_inline)) __m256i decode_dot(const decode_block *b, const int8_t *xb) {
  const int32_t *x4 = (const int32_t *)xb;
  __m256i s = _mm256_maddubs_epi16(b->lo[0], _mm256_set1_epi32(x4[0]));
  for (int t = 1; t < 4; ++t) s = _mm256_add_epi16(s, _mm256_maddubs_epi16(b->lo[t], _mm256_set1_epi32(x4[t])));
  for (int t = 0; t < 4; ++t) s = _mm256_add_epi16(s, _mm256_maddubs_epi16(b->hi[t], _mm256_set1_epi32(x4[4 + t])));
  return _mm256_madd_epi16(s, _mm256_set1_epi16(1));
}

// The strip's group scales as f32 [groups][8]: row j's in lane j (8 groups at a time through an
// 8 x 8 transpose of the f16 values, the rest one by one).
static void decode_scales(const uint16_t *const *s, size_t groups, float *st) {
  size_t g = 0;
  for (; g + 8 <= groups; g += 8) {
    __m128i a[8], b[8], c[8];
    for (int j = 0; j < 8; ++j) a[j] = _mm_loadu_si128((const __m128i *)(s[j] + g));
    for (int j = 0; j < 8; j += 2) {
      b[j] = _mm_unpacklo_epi16(a[j], a[j + 1]);  // groups 0..3 of rows j, j + 1, interleaved
      b[j + 1] = _mm_unpackhi_epi16(a[j], a[j + 1]);  // groups 4..7
    }
    for (int h = 0; h < 2; ++h)  // rows 0..3 (h = 0) and 4..7: c[4h + i] = groups 2i, 2i + 1 of 4 rows
      for (int i = 0; i < 2; ++i) {
        c[4 * h + 2 * i] = _mm_unpacklo_epi32(b[4 * h + i], b[4 * h + 2 + i]);
        c[4 * h + 2 * i + 1] = _mm_unpackhi_epi32(b[4 * h + i], b[4 * h + 2 + i]);
      }
    for (int i = 0; i < 4; ++i) {  // group 2i and 2i + 1 of all 8 rows
      _mm256_store_ps(st + (g + 2 * i) * 8, _mm256_cvtph_ps(_mm_unpacklo_epi64(c[i], c[4 + i])));
      _mm256_store_ps(st + (g + 2 * i + 1) * 8, _mm256_cvtph_ps(_mm_unpackhi_epi64(c[i], c[4 + i])));
    }
  }
  for (; g < groups; ++g)
    for (int j = 0; j < 8; ++j) st[g * 8 + j] = _cvtsh_ss(s[j][g]);
}

// Weight rows r..r+7 of the `rows` rows of quantized x (xq, dx, off as quantize_x makes them, a
// row every k bytes / k / BLOCK floats): y[i * ldy + r + j] for the rows j < count (lanes past it
// read row r + count - 1 again and are not stored). `rows` is a constant after inlining.
static inline __attribute__((always_inline)) void decode_strip(const int8_t *q, const uint16_t *s, size_t r, size_t count,
                                                               const int8_t *xq, const float *dx, const float *off,
                                                               const int rows, size_t k, size_t group, float *y, size_t ldy) {
  const size_t groups = k / group, per_group = group / BLOCK, blocks = k / BLOCK, row_bytes = k / 2;
  const int8_t *w[DECODE_STRIP];
  const uint16_t *ws[DECODE_STRIP];
  for (size_t j = 0; j < DECODE_STRIP; ++j) {
    const size_t row = r + (j < count ? j : count - 1);
    w[j] = q + row * row_bytes;
    ws[j] = s + row * groups;
  }
  float st[MAX_K / BLOCK * DECODE_STRIP] __attribute__((aligned(32)));
  decode_scales(ws, groups, st);
  const int8_t *next = q + (r + DECODE_STRIP) * row_bytes;  // the next strip: 8 * row_bytes contiguous bytes
  __m256 acc[VERIFY_ROWS];
  for (int i = 0; i < rows; ++i) acc[i] = _mm256_setzero_ps();
  for (size_t g = 0, c = 0; g < groups; ++g) {
    const __m256 sg = _mm256_load_ps(st + g * DECODE_STRIP);
    for (size_t end = c + per_group; c < end; ++c) {
      // 128 bytes of the strip are read a block: fetch as many of the next (short rows and 8
      // streams at once defeat the hardware prefetcher)
      _mm_prefetch((const char *)(next + c * 128), _MM_HINT_T0);
      _mm_prefetch((const char *)(next + c * 128 + 64), _MM_HINT_T0);
      const decode_block b = decode_nibbles(w, c * 16);
      for (int i = 0; i < rows; ++i) {
        const __m256 dot = _mm256_cvtepi32_ps(decode_dot(&b, xq + i * k + c * BLOCK));
        const __m256 d = _mm256_broadcast_ss(dx + i * blocks + c), o = _mm256_broadcast_ss(off + i * blocks + c);
        acc[i] = _mm256_fmadd_ps(_mm256_fmsub_ps(dot, d, o), sg, acc[i]);
      }
    }
  }
  for (int i = 0; i < rows; ++i) {
    if (count == DECODE_STRIP) {
      _mm256_storeu_ps(y + i * ldy + r, acc[i]);
    } else {
      float out[DECODE_STRIP];
      _mm256_storeu_ps(out, acc[i]);
      for (size_t j = 0; j < count; ++j) y[i * ldy + r + j] = out[j];
    }
  }
}

// quantize_x of `rows` rows of x (a row every k elements / bytes / k / BLOCK floats), each block's
// offset as one lane subtracts it (8 * off: exact).
static void quantize_rows(const float *x, size_t rows, size_t k, size_t group, int8_t *xq, float *dx, float *off) {
  const size_t blocks = k / BLOCK;
  for (size_t i = 0; i < rows; ++i) quantize_x(x + i * k, k, group, xq + i * k, dx + i * blocks, off + i * blocks);
  for (size_t c = 0; c < rows * blocks; ++c) off[c] *= 8.0f;
}

void iree_glm_int4_matvec_workgroup(MEMREF(const float, x), MEMREF(const int8_t, q), MEMREF(const uint16_t, s),
                                    MEMREF(float, y), size_t n, size_t k, size_t group, size_t row_begin,
                                    size_t row_end) {
  MEMREF_START(x); MEMREF_START(q); MEMREF_START(s); MEMREF_START(y);
  if (row_end > n) row_end = n;
  int8_t xq[MAX_K] __attribute__((aligned(32)));
  float dx[MAX_K / BLOCK], off[MAX_K / BLOCK];
  quantize_rows(x, 1, k, group, xq, dx, off);
  for (size_t r = row_begin; r < row_end; r += DECODE_STRIP) {
    const size_t count = row_end - r < DECODE_STRIP ? row_end - r : DECODE_STRIP;
    decode_strip(q, s, r, count, xq, dx, off, 1, k, group, y, n);
  }
}

// Speculative verification: a few rows of x (the target checking draft tokens), each of which
// must come out bit for bit as the matrix-vector kernel's for that row alone, so that a verified
// token is what a decode step would choose. Each row goes through decode_strip's operations for
// that row (lanes are independent, and the integer sums are exact in any order); a strip's
// nibbles are unpacked once for all of them. Rows' quantized x live on the stack,
// VERIFY_X_BYTES in all: rows beyond that take another pass over the weights.
void iree_glm_int4_matvec_rows_workgroup(MEMREF(const float, x), MEMREF(const int8_t, q), MEMREF(const uint16_t, s),
                                         MEMREF(float, y), size_t m, size_t n, size_t k, size_t group, size_t row_begin,
                                         size_t row_end) {
  MEMREF_START(x); MEMREF_START(q); MEMREF_START(s); MEMREF_START(y);
  if (row_end > n) row_end = n;
  size_t per_pass = VERIFY_X_BYTES / k;
  if (per_pass > VERIFY_ROWS) per_pass = VERIFY_ROWS;
  int8_t xq[VERIFY_X_BYTES] __attribute__((aligned(32)));
  float dx[VERIFY_X_BYTES / BLOCK], off[VERIFY_X_BYTES / BLOCK];
  for (size_t r0 = 0; r0 < m; r0 += per_pass) {
    const size_t rows = m - r0 < per_pass ? m - r0 : per_pass;
    quantize_rows(x + r0 * k, rows, k, group, xq, dx, off);
    for (size_t r = row_begin; r < row_end; r += DECODE_STRIP) {
      const size_t count = row_end - r < DECODE_STRIP ? row_end - r : DECODE_STRIP;
#define VERIFY_CASE(R) \
  case R: decode_strip(q, s, r, count, xq, dx, off, R, k, group, y + r0 * n, n); break;
      switch (rows) {
        VERIFY_CASE(1) VERIFY_CASE(2) VERIFY_CASE(3) VERIFY_CASE(4) VERIFY_CASE(5) VERIFY_CASE(6) VERIFY_CASE(7) VERIFY_CASE(8)
        VERIFY_CASE(9) VERIFY_CASE(10) VERIFY_CASE(11) VERIFY_CASE(12) VERIFY_CASE(13) VERIFY_CASE(14) VERIFY_CASE(15) VERIFY_CASE(16)
      }
#undef VERIFY_CASE
    }
  }
}

#endif  // IREE_GLM_OWN_DECODE_KERNEL

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
