// int8 x f32 matrix products for aarch64 with dotprod (`sdot`), the counterpart of
// x86_64_avx2/int8.c: the same entry points and arguments (entry_points.h), weight layout and
// numbers model. Decode: x quantized per block of 32, exact integer sums per block,
// y[n] = sum_c dx[c] * sum_{k in block c} w[n, k] * xq[k]; prompts: x quantized per row, exact
// integer sums over all of K (the per-channel weight scale is applied after, in the graph).
//
// Weights (transforms/quantize.py's int8 layout): qweight i8 [N/16, K, 16]: tile t holds rows
// 16t..16t+15, for each k their 16 bytes. `sdot` wants 4 consecutive k of one row per 32-bit
// lane, so each 4 k x 16 rows (64 bytes) are regrouped in registers into 4 vectors of 4 rows
// each (decode: `ld4` + `tbl`, prompts: zips, once per chunk) and multiplied with x's 4 k
// broadcast from a lane (`sdot v.4s, w.16b, x.4b[i]`). |w|, |x| <= 127 and K <= MAX_K keep the
// i32 sums exact. The x86 kernels share this layout, so it is not changed for Arm.
//
// Verify (a few rows, speculative decoding): int8_matvec_rows, each row bit for bit int8_matvec's.
//
// Prompts (M rows): iree_glm_int8_quantize_workgroup (and its fused glue forms) quantize x's
// rows once per matmul, then iree_glm_int8_matmul_workgroup multiplies them with `sdot` on
// tiles of 4 rows of x x 16 weight rows. aarch64_i8mm/int8.c includes this file for all but the
// matrix kernel. Tested directly under qemu-aarch64 (tests/kernels/test_aarch64_kernels.py).
// Embedded-ELF rules: no libc, no globals.

#include "row_glue.h"

enum { MAX_K = 16384, LANES = 16 };

// 4 k of a tile's stream (64 bytes: k0..k3 x 16 rows) -> 4 vectors, vector j = rows
// 4j..4j+3, each 32-bit lane one row's 4 k (what `sdot` multiplies): the prompt kernel's
// regroup, in row order (its cost is shared by all rows of x).
static inline int8x16x4_t regroup4(const int8_t *w) {
  const int8x16x4_t l = vld1q_s8_x4(w);
  const int16x8_t a = vreinterpretq_s16_s8(vzip1q_s8(l.val[0], l.val[1])), b = vreinterpretq_s16_s8(vzip2q_s8(l.val[0], l.val[1]));
  const int16x8_t c = vreinterpretq_s16_s8(vzip1q_s8(l.val[2], l.val[3])), e = vreinterpretq_s16_s8(vzip2q_s8(l.val[2], l.val[3]));
  const int8x16x4_t v = {{vreinterpretq_s8_s16(vzip1q_s16(a, c)), vreinterpretq_s8_s16(vzip2q_s16(a, c)),
                          vreinterpretq_s8_s16(vzip1q_s16(b, e)), vreinterpretq_s8_s16(vzip2q_s16(b, e))}};
  return v;
}

// The decode kernel regroups differently, for fewer instructions per weight byte: `ld4`
// de-interleaves 4 k x 16 rows (64 bytes) as it loads them, vector i = rows i, 4 + i, 8 + i,
// 12 + i of each of the 4 k, and one single-register `tbl` per vector (a 4 x 4 byte transpose)
// makes 32-bit lane c of it row 4c + i's 4 k. Accumulator i then holds rows 4c + i (c = 0..3),
// which `st4` interleaves back into row order when the tile is stored. 4 `tbl` where regroup4
// takes 8 `zip`, and fewer registers live (llvm-mca's estimates: docs/arm.md).
static inline void dot4_by_lane(const int8_t *w, int8x16_t xv, const int lane, const uint8x16_t transpose, int32x4_t acc[4]) {
  const int8x16x4_t l = vld4q_s8(w);
  for (int i = 0; i < 4; ++i) acc[i] = vdotq_laneq_s32(acc[i], vqtbl1q_s8(l.val[i], transpose), xv, lane);
}

// f[i] += acc[i] (a block's exact i32 sums) times the block's scale d: the one rounding step
// per block, the same for decode and verify rows.
static inline __attribute__((always_inline)) void block_scale_add(float32x4_t f[4], const int32x4_t acc[4], float d) {
  for (int i = 0; i < 4; ++i) f[i] = vfmaq_n_f32(f[i], vcvtq_f32_s32(acc[i]), d);
}

// A tile's 16 outputs from f (f[i] lane c = row 4c + i) into row order at y.
static inline __attribute__((always_inline)) void store_tile(float *y, const float32x4_t f[4]) {
  const float32x4x4_t rows = {{f[0], f[1], f[2], f[3]}};
  vst4q_f32(y, rows);
}

// Tiles tile_begin..tile_end of y (16 outputs each) for one row of x; k a multiple of 32.
static void int8_matvec(const float *x, const int8_t *q, float *y, size_t k, size_t tile_begin, size_t tile_end) {
  int8_t xq[MAX_K] __attribute__((aligned(16)));
  float dx[MAX_K / BLOCK];
  for (size_t c = 0; c < k / BLOCK; ++c) dx[c] = quantize_block(x + c * BLOCK, x + c * BLOCK + 16, xq + c * BLOCK);
  const size_t tile_bytes = k * LANES;
  const uint8x16_t transpose = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15};  // byte 4c + j <- 4j + c
  for (size_t t = tile_begin; t < tile_end; ++t) {
    const int8_t *w = q + t * tile_bytes;
    float32x4_t f[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    for (size_t c = 0; c < k / BLOCK; ++c) {
      int32x4_t acc[4] = {vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)};
      for (size_t j = 0; j < BLOCK; j += 16) {
        const int8_t *p = w + (c * BLOCK + j) * LANES;
        const int8x16_t xv = vld1q_s8(xq + c * BLOCK + j);
        __builtin_prefetch(p + 1024);
        dot4_by_lane(p, xv, 0, transpose, acc);
        dot4_by_lane(p + 64, xv, 1, transpose, acc);
        dot4_by_lane(p + 128, xv, 2, transpose, acc);
        dot4_by_lane(p + 192, xv, 3, transpose, acc);
      }
      block_scale_add(f, acc, dx[c]);
    }
    store_tile(y + t * LANES, f);
  }
}

// Speculative verification: a few rows of x (the target checking draft tokens) whose every row
// must come out bit for bit as int8_matvec's for that row alone, so that a verified token is
// what a decode step would choose. Each block of a tile is regrouped once (as dot4_by_lane does)
// and applied to every row: the integer sums are exact in any order, and each row's floats go
// through int8_matvec's operations in its order (block_scale_add, store_tile). Rows' int8
// copies of x live on the stack, VERIFY_X_BYTES in all: rows beyond that take another pass.
enum { VERIFY_ROWS = 16, VERIFY_X_BYTES = 32768 };

// Tiles tile_begin..tile_end of y [m, tiles * 16] for the m rows of x [m, k]; k a multiple of 32.
static void int8_matvec_rows(const float *x, const int8_t *q, float *y, size_t m, size_t tiles, size_t k, size_t tile_begin,
                             size_t tile_end) {
  size_t per_pass = VERIFY_X_BYTES / k;  // >= 2: k <= MAX_K
  if (per_pass > VERIFY_ROWS) per_pass = VERIFY_ROWS;
  int8_t xq[VERIFY_X_BYTES] __attribute__((aligned(16)));
  float dx[VERIFY_X_BYTES / BLOCK];
  float32x4_t f[VERIFY_ROWS][4];
  int8x16_t wv[BLOCK];  // one block: 8 steps of 4 k, 4 vectors each (dot4_by_lane's)
  const size_t tile_bytes = k * LANES, blocks = k / BLOCK, n = tiles * LANES;
  const uint8x16_t transpose = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15};
  for (size_t r0 = 0; r0 < m; r0 += per_pass) {
    const size_t rows = m - r0 < per_pass ? m - r0 : per_pass;
    for (size_t r = 0; r < rows; ++r)
      for (size_t c = 0; c < blocks; ++c)
        dx[r * blocks + c] = quantize_block(x + (r0 + r) * k + c * BLOCK, x + (r0 + r) * k + c * BLOCK + 16, xq + r * k + c * BLOCK);
    for (size_t t = tile_begin; t < tile_end; ++t) {
      const int8_t *w = q + t * tile_bytes;
      for (size_t r = 0; r < rows; ++r)
        for (int i = 0; i < 4; ++i) f[r][i] = vdupq_n_f32(0.0f);
      for (size_t c = 0; c < blocks; ++c) {
        __builtin_prefetch(w + c * BLOCK * LANES + 1024);
        __builtin_prefetch(w + c * BLOCK * LANES + 1024 + 256);
        for (int s = 0; s < BLOCK / 4; ++s) {
          const int8x16x4_t l = vld4q_s8(w + (c * BLOCK + 4 * s) * LANES);
          for (int i = 0; i < 4; ++i) wv[4 * s + i] = vqtbl1q_s8(l.val[i], transpose);
        }
        for (size_t r = 0; r < rows; ++r) {
          int32x4_t acc[4] = {vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)};
          for (int h = 0; h < 2; ++h) {  // 16 k: steps 4h..4h+3, one lane of xv each
            const int8x16_t xv = vld1q_s8(xq + r * k + c * BLOCK + 16 * h);
            const int8x16_t *v = wv + 16 * h;
            for (int i = 0; i < 4; ++i) {
              acc[i] = vdotq_laneq_s32(acc[i], v[i], xv, 0);
              acc[i] = vdotq_laneq_s32(acc[i], v[4 + i], xv, 1);
              acc[i] = vdotq_laneq_s32(acc[i], v[8 + i], xv, 2);
              acc[i] = vdotq_laneq_s32(acc[i], v[12 + i], xv, 3);
            }
          }
          block_scale_add(f[r], acc, dx[r * blocks + c]);
        }
      }
      for (size_t r = 0; r < rows; ++r) store_tile(y + (r0 + r) * n + t * LANES, f[r]);
    }
  }
}

// Prefill and batched decode: a quantization dispatch, then a register-blocked matrix kernel.
//
// The quantization turns rows of x [m, k] into rows of xq_row_bytes(k) bytes: k int8 (per row:
// round half to even of x * 127 / max|x|, in k order: this set's matrix kernels read them, the
// x86 sets store another order), then the f32 row scale max|x| / 127, padded to 32 bytes (the
// same size as the x86 sets': kernels/int8.py sizes the buffer).
static inline size_t xq_row_bytes(size_t k) { return k + 32; }

static inline void quantize_row(const float *x, size_t k, int8_t *row) {
  const float d = quantize_row_int8(x, k, row);
  __builtin_memcpy(row + k, &d, sizeof d);
}

#define IREE_GLM_INT8_ENTRIES
#include "entry_points.h"

// The rows of x a matrix kernel call handles at most (the set's rows per call, kernels/toolchain.py).
enum { MAX_ROWS = 64 };

// The matrix kernel walks K in chunks of CHUNK_K: a chunk of one weight tile (16 rows) is
// regrouped once into CHUNK_K vectors (16 KB, in L1; regroup_chunk), then tiles of TILE_M rows
// of x run over it (rows_tile), each weight vector serving TILE_M rows. Sums stay integers over
// all of K (|sum| <= K * 127 * 127 < 2^31 for K < 133000): one conversion and scaling per
// output. Between chunks the rows' i32 sums wait in `acc`: acc[r][j] = row r, columns 4j..4j+3
// of the tile.
enum { CHUNK_K = 1024, TILE_M = 4 };

// Defined below, or by aarch64_i8mm/int8.c (which includes this file) for `smmla`.
static inline void regroup_chunk(const int8_t *tile, size_t k0, size_t kc, int8x16_t *wv);
static inline __attribute__((always_inline)) void rows_tile(const int8x16_t *wv, const int8_t *x, size_t stride, size_t kc,
                                                            int32x4_t (*acc)[4], const int tm);

#ifndef IREE_GLM_OWN_MATRIX_KERNEL

// regroup4's 4 vectors per 4 k of the chunk.
static inline void regroup_chunk(const int8_t *tile, size_t k0, size_t kc, int8x16_t *wv) {
  for (size_t s = 0; s < kc / 4; ++s) {
    const int8x16x4_t v = regroup4(tile + (k0 + 4 * s) * LANES);
    for (int j = 0; j < 4; ++j) wv[4 * s + j] = v.val[j];
  }
}

// acc[0 .. tm) += tm rows of x (from x, row stride `stride`) times the chunk: per 16 k, 16 bytes
// of each row give 4 broadcasts (`sdot` by lane) against the 4 vectors of each 4 k.
static inline __attribute__((always_inline)) void rows_tile(const int8x16_t *wv, const int8_t *x, size_t stride, size_t kc,
                                                            int32x4_t (*acc)[4], const int tm) {
  int32x4_t a[TILE_M][4];
  for (int i = 0; i < tm; ++i)
    for (int j = 0; j < 4; ++j) a[i][j] = acc[i][j];
  for (size_t k0 = 0; k0 < kc; k0 += 16) {
    const int8x16_t *w = wv + k0;  // 4 steps of 4 k, 4 vectors each
    int8x16_t xv[TILE_M];
    for (int i = 0; i < tm; ++i) xv[i] = vld1q_s8(x + i * stride + k0);
#define STEP(s)                                                                     \
    for (int j = 0; j < 4; ++j) {                                                   \
      const int8x16_t v = w[4 * (s) + j];                                           \
      for (int i = 0; i < tm; ++i) a[i][j] = vdotq_laneq_s32(a[i][j], v, xv[i], s); \
    }
    STEP(0) STEP(1) STEP(2) STEP(3)
#undef STEP
  }
  for (int i = 0; i < tm; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = a[i][j];
}

#endif  // IREE_GLM_OWN_MATRIX_KERNEL

// y[m, n] (before the weight scale) for rows m_begin..m_end of x (rows of
// iree_glm_int8_quantize_workgroup's output, at most MAX_ROWS) and weight tiles t_begin..t_end.
static void matmul_rows(const int8_t *xq, const int8_t *q, float *y, size_t tiles, size_t k, size_t t_begin, size_t t_end,
                        size_t m_begin, size_t m_end) {
  const size_t stride = xq_row_bytes(k), n = tiles * LANES;
  int8x16_t wv[CHUNK_K];
  int32x4_t acc[MAX_ROWS][4];
  for (size_t t = t_begin; t < t_end; ++t) {
    for (size_t r = m_begin; r < m_end; ++r)
      for (int j = 0; j < 4; ++j) acc[r - m_begin][j] = vdupq_n_s32(0);
    for (size_t k0 = 0; k0 < k; k0 += CHUNK_K) {
      const size_t kc = k - k0 < CHUNK_K ? k - k0 : CHUNK_K;  // a multiple of 32
      regroup_chunk(q + t * k * LANES, k0, kc, wv);
      const int8_t *x = xq + m_begin * stride + k0;
      size_t r = m_begin;
      for (; r + TILE_M <= m_end; r += TILE_M, x += TILE_M * stride) rows_tile(wv, x, stride, kc, acc + (r - m_begin), TILE_M);
      switch (m_end - r) {  // the last rows, with the tile height a constant
        case 3: rows_tile(wv, x, stride, kc, acc + (r - m_begin), 3); break;
        case 2: rows_tile(wv, x, stride, kc, acc + (r - m_begin), 2); break;
        case 1: rows_tile(wv, x, stride, kc, acc + (r - m_begin), 1); break;
        default: break;
      }
    }
    for (size_t r = m_begin; r < m_end; ++r) {
      float d;
      __builtin_memcpy(&d, xq + r * stride + k, sizeof d);
      for (int j = 0; j < 4; ++j) vst1q_f32(y + r * n + t * LANES + 4 * j, vmulq_n_f32(vcvtq_f32_s32(acc[r - m_begin][j]), d));
    }
  }
}

// The entry point (ranges clamped, then matmul_rows), shared with the x86 sets.
#include "../int8_matmul.h"
