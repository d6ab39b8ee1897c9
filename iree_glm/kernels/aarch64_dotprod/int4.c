// int4 x f32 matrix products for aarch64 with dotprod (`sdot`), the counterpart of
// x86_64_avx2/int4.c: the same symbols, arguments (entry_points.h), weight layout and numbers model. A
// matrix-vector kernel for decode (M = 1) and its few-row form for verify (each row bit for bit
// the decode kernel's); for prefill / batched decode a quantization of x's rows (plain, or after
// the silu_mul / rms_norm glue of row_glue.h) and a matrix kernel.
//
// y[m, n] = sum_g scale[n, g] * sum_{blocks c of g} dx[m, c] * (exact integer sum of block c)
//
// Weights (transforms/quantize.py's int4 layout): qweight i8 [N, K/G, G/2], two nibbles a
// byte, each the weight's integer + 8: the low nibble of byte j of a group is its element j,
// the high nibble element j + G/2; scale f16 [N, K/G]. x is quantized to int8 per block of 32
// at run time, a block c = (group g, part j) holding x[gG + 16j ..] (the 16 low nibbles of
// bytes 16j..16j+15) then x[gG + G/2 + 16j ..] (their high nibbles). `sdot` multiplies the
// unsigned nibbles (0..15, exact as int8) by xq; the + 8 is taken off as 8 * sum(xq of the
// block), an integer: the block's sum is exact before its one conversion to f32.
//
// aarch64_i8mm/int4.c defines its own matrix kernel pieces (pack_rows, strip_tile) and includes
// this file for the rest. Embedded-ELF rules: no libc, no globals.

#include "row_glue.h"

enum { MAX_K = 8192 };

// The two halves of a block's 16 bytes: low nibbles, high nibbles (0..15 each).
static inline int8x16_t low_nibbles(uint8x16_t b) { return vreinterpretq_s8_u8(vandq_u8(b, vdupq_n_u8(0x0F))); }
static inline int8x16_t high_nibbles(uint8x16_t b) { return vreinterpretq_s8_u8(vshrq_n_u8(b, 4)); }

// f16 bits -> f32 (aarch64's fcvt; no libc).
static inline float half_to_float(uint16_t h) {
  __fp16 f;
  __builtin_memcpy(&f, &h, sizeof f);
  return (float)f;
}

// x [k] -> xq (int8, blocks in the weights' order), dx (block scales) and sum8 (8 * the block's
// integer sum: the nibbles' + 8 times x).
static void quantize_x(const float *x, size_t k, size_t group, int8_t *xq, float *dx, int32_t *sum8) {
  const size_t per_group = group / BLOCK, half = group / 2;
  for (size_t c = 0; c < k / BLOCK; ++c) {
    const float *lo = x + (c / per_group) * group + (c % per_group) * 16;
    dx[c] = quantize_block(lo, lo + half, xq + c * BLOCK);
    sum8[c] = 8 * (vaddlvq_s8(vld1q_s8(xq + c * BLOCK)) + vaddlvq_s8(vld1q_s8(xq + c * BLOCK + 16)));
  }
}

// The i32 dot product partials (4 lanes) of a block's nibbles (lo, hi) with xq's block.
static inline int32x4_t nibble_dot(int8x16_t lo, int8x16_t hi, int8x16_t xlo, int8x16_t xhi) {
  return vdotq_s32(vdotq_s32(vdupq_n_s32(0), lo, xlo), hi, xhi);
}

// The same for one block of a row (16 bytes at w).
static inline int32x4_t block_dot(const int8_t *w, int8x16_t xlo, int8x16_t xhi) {
  const uint8x16_t b = vld1q_u8((const uint8_t *)w);
  return nibble_dot(low_nibbles(b), high_nibbles(b), xlo, xhi);
}

// One block's step for four weight rows (their partials d[0..3], block_dot's) and one row of x
// (its 8 * block sum, block scale dx) with the rows' group scales sg: the four partial vectors
// summed pairwise (addp) into one vector of the rows' block sums, so the + 8 correction,
// conversion and scaling are one instruction each per 4 rows. Decode and verify rows both step
// through this (the integer sums are exact; the float operations, and their order, are these).
static inline __attribute__((always_inline)) float32x4_t step4(float32x4_t acc, const int32x4_t d[4], int32_t sum8, float dx,
                                                                float32x4_t sg) {
  const int32x4_t p01 = vpaddq_s32(d[0], d[1]), p23 = vpaddq_s32(d[2], d[3]);
  const int32x4_t sums = vaddq_s32(vpaddq_s32(p01, p23), vdupq_n_s32(SUM_BIAS - sum8));  // exact
  return vfmaq_f32(acc, vmulq_n_f32(biased_sum_to_float(sums), dx), sg);
}

// The same for one weight row (the rows past the last whole four).
static inline __attribute__((always_inline)) float step1(float acc, int32x4_t d, int32_t sum8, float dx, float sg) {
  const int32_t sum = vaddvq_s32(d) - sum8;
  return acc + (float)sum * dx * sg;
}

static inline float32x4_t scales4(const uint16_t *s, size_t r, size_t groups, size_t g) {
  const float32x4_t sg = {half_to_float(s[r * groups + g]), half_to_float(s[(r + 1) * groups + g]),
                          half_to_float(s[(r + 2) * groups + g]), half_to_float(s[(r + 3) * groups + g])};
  return sg;
}

// Rows row_begin..row_end of y for one row of x, four weight rows at a time sharing each block
// of x (step4).
static void int4_matvec(const float *x, const int8_t *q, const uint16_t *s, float *y, size_t k, size_t group, size_t row_begin,
                        size_t row_end) {
  const size_t per_group = group / BLOCK, groups = k / group, row_bytes = k / 2;
  int8_t xq[MAX_K] __attribute__((aligned(16)));
  float dx[MAX_K / BLOCK];
  int32_t sum8[MAX_K / BLOCK];
  quantize_x(x, k, group, xq, dx, sum8);
  size_t r = row_begin;
  for (; r + 4 <= row_end; r += 4) {
    const int8_t *w0 = q + r * row_bytes, *w1 = w0 + row_bytes, *w2 = w1 + row_bytes, *w3 = w2 + row_bytes;
    float32x4_t acc = vdupq_n_f32(0.0f);
    for (size_t g = 0, c = 0; g < groups; ++g) {
      const float32x4_t sg = scales4(s, r, groups, g);
      for (size_t end = c + per_group; c < end; ++c) {
        // The next 4 rows are the 4 * row_bytes after these: one cache line per block brings them in.
        __builtin_prefetch(w0 + 4 * row_bytes + c * 64);
        const int8x16_t xlo = vld1q_s8(xq + c * BLOCK), xhi = vld1q_s8(xq + c * BLOCK + 16);
        const int32x4_t d[4] = {block_dot(w0 + c * 16, xlo, xhi), block_dot(w1 + c * 16, xlo, xhi),
                                block_dot(w2 + c * 16, xlo, xhi), block_dot(w3 + c * 16, xlo, xhi)};
        acc = step4(acc, d, sum8[c], dx[c], sg);
      }
    }
    vst1q_f32(y + r, acc);
  }
  for (; r < row_end; ++r) {
    const int8_t *w = q + r * row_bytes;
    float acc = 0.0f;
    for (size_t g = 0, c = 0; g < groups; ++g) {
      const float sg = half_to_float(s[r * groups + g]);
      for (size_t end = c + per_group; c < end; ++c)
        acc = step1(acc, block_dot(w + c * 16, vld1q_s8(xq + c * BLOCK), vld1q_s8(xq + c * BLOCK + 16)), sum8[c], dx[c], sg);
    }
    y[r] = acc;
  }
}

// Speculative verification: a few rows of x (the target checking draft tokens) whose every row
// must come out bit for bit as int4_matvec's for that row alone, so that a verified token is
// what a decode step would choose. The same weight rows in the same groups of four from
// row_begin; each block's nibbles are unpacked once for all rows of x, and each row goes
// through step4 / step1 as int4_matvec's row does. Rows' quantized x live on the stack,
// VERIFY_X_BYTES in all: rows beyond that take another pass over the weights.
enum { VERIFY_ROWS = 16, VERIFY_X_BYTES = 32768 };

// Rows row_begin..row_end of y [m, n] for the m rows of x [m, k].
static void int4_matvec_rows(const float *x, const int8_t *q, const uint16_t *s, float *y, size_t m, size_t n, size_t k,
                             size_t group, size_t row_begin, size_t row_end) {
  const size_t per_group = group / BLOCK, groups = k / group, row_bytes = k / 2, blocks = k / BLOCK;
  size_t per_pass = VERIFY_X_BYTES / k;  // >= 4: k <= MAX_K
  if (per_pass > VERIFY_ROWS) per_pass = VERIFY_ROWS;
  int8_t xq[VERIFY_X_BYTES] __attribute__((aligned(16)));
  float dx[VERIFY_X_BYTES / BLOCK];
  int32_t sum8[VERIFY_X_BYTES / BLOCK];
  for (size_t r0 = 0; r0 < m; r0 += per_pass) {
    const size_t rows = m - r0 < per_pass ? m - r0 : per_pass;
    for (size_t i = 0; i < rows; ++i) quantize_x(x + (r0 + i) * k, k, group, xq + i * k, dx + i * blocks, sum8 + i * blocks);
    float *yp = y + r0 * n;
    size_t r = row_begin;
    for (; r + 4 <= row_end; r += 4) {
      const int8_t *w0 = q + r * row_bytes;
      float32x4_t acc[VERIFY_ROWS];
      for (size_t i = 0; i < rows; ++i) acc[i] = vdupq_n_f32(0.0f);
      for (size_t g = 0, c = 0; g < groups; ++g) {
        const float32x4_t sg = scales4(s, r, groups, g);
        for (size_t end = c + per_group; c < end; ++c) {
          __builtin_prefetch(w0 + 4 * row_bytes + c * 64);
          int8x16_t lo[4], hi[4];
          for (int j = 0; j < 4; ++j) {
            const uint8x16_t b = vld1q_u8((const uint8_t *)(w0 + j * row_bytes + c * 16));
            lo[j] = low_nibbles(b);
            hi[j] = high_nibbles(b);
          }
          for (size_t i = 0; i < rows; ++i) {
            const int8x16_t xlo = vld1q_s8(xq + i * k + c * BLOCK), xhi = vld1q_s8(xq + i * k + c * BLOCK + 16);
            int32x4_t d[4];
            for (int j = 0; j < 4; ++j) d[j] = nibble_dot(lo[j], hi[j], xlo, xhi);
            acc[i] = step4(acc[i], d, sum8[i * blocks + c], dx[i * blocks + c], sg);
          }
        }
      }
      for (size_t i = 0; i < rows; ++i) vst1q_f32(yp + i * n + r, acc[i]);
    }
    for (; r < row_end; ++r) {
      const int8_t *w = q + r * row_bytes;
      for (size_t i = 0; i < rows; ++i) {
        float acc = 0.0f;
        for (size_t g = 0, c = 0; g < groups; ++g) {
          const float sg = half_to_float(s[r * groups + g]);
          for (size_t end = c + per_group; c < end; ++c)
            acc = step1(acc, block_dot(w + c * 16, vld1q_s8(xq + i * k + c * BLOCK), vld1q_s8(xq + i * k + c * BLOCK + 16)),
                        sum8[i * blocks + c], dx[i * blocks + c], sg);
        }
        yp[i * n + r] = acc;
      }
    }
  }
}

// Prefill and batched decode: a quantization dispatch, then a register-blocked matrix kernel.
//
// iree_glm_int4_quantize_workgroup turns rows of x [m, k] into rows of xq_row_bytes(k) bytes
// (as the x86 sets'): k int8 (blocks in the weights' order, as quantize_x), k / BLOCK f32 block
// scales dx, k / BLOCK i32 sums 8 * sum(xq of the block), padded to 32 bytes.
static inline size_t xq_row_bytes(size_t k) { return k + (k / BLOCK * 8 + 31) / 32 * 32; }

static void quantize_row(const float *x, size_t k, size_t group, int8_t *row) {
  float *dx = (float *)(row + k);
  quantize_x(x, k, group, row, dx, (int32_t *)(dx + k / BLOCK));
}

#define IREE_GLM_INT4_ENTRIES
#include "entry_points.h"

// The matrix kernel (the driver is ../int4_matmul.h, shared with the x86 sets): strips of
// STRIP = 8 weight rows, their bytes for a chunk of CHUNK_K k repacked once (pack_rows, 16 KB)
// into STRIP_VECTORS vectors per block, then tiles of TILE_M rows of x run over the strip
// (strip_tile): each strip vector serves TILE_M rows of x. K is walked in chunks of whole
// groups; y is stored by the first chunk and added to by the others.
enum { STRIP = 8, TILE_M = 4, CHUNK_K = 2048, STRIP_VECTORS = 16 };

// The weight rows n0..n0+7 of q (zeros from n on), their bytes from k0 / 2: pointers (or NULL).
static inline void strip_rows(const int8_t *q, size_t n, size_t n0, size_t k, size_t k0, const int8_t *rows[STRIP]) {
  for (size_t r = 0; r < STRIP; ++r) rows[r] = n0 + r < n ? q + (n0 + r) * (k / 2) + k0 / 2 : 0;
}

// Block c's 16 bytes of a strip row (zeros for a row past n).
static inline uint8x16_t strip_block(const int8_t *row, size_t c) {
  return row ? vld1q_u8((const uint8_t *)row + c * 16) : vdupq_n_u8(0);
}

// The strip's group scales for chunk k0..k0+kc as f32 [kc / group][STRIP] (0 past n).
static inline void strip_scales(const uint16_t *s, size_t n, size_t n0, size_t k, size_t group, size_t k0, size_t kc,
                                float *scales) {
  const size_t groups = k / group;
  for (size_t g = 0; g < kc / group; ++g)
    for (size_t r = 0; r < STRIP; ++r) scales[g * STRIP + r] = n0 + r < n ? half_to_float(s[(n0 + r) * groups + k0 / group + g]) : 0.0f;
}

// Defined below, or by aarch64_i8mm/int4.c (which includes this file) for `smmla`: a strip's
// packing (STRIP_VECTORS vectors per block) and its tile of tm rows of x x `cols` <= STRIP columns.
static void pack_rows(const int8_t *const rows[STRIP], size_t kc, int8x16_t *strip);
static inline __attribute__((always_inline)) void strip_tile(const int8x16_t *strip, const float *scales, const int8_t *xq,
                                                             size_t stride, size_t k, size_t group, size_t k0, size_t kc,
                                                             float *y, size_t ldy, size_t cols, const int tm);

#ifndef IREE_GLM_OWN_MATRIX_KERNEL

// Per block, per quad of rows (0..3, 4..7): vector p (0..3) = bytes 4p..4p+3 of its 4 rows, one
// row per 32-bit lane (a 4 x 4 transpose of 32-bit words), as low nibbles and high nibbles:
// strip[c * 16 + quad * 8 + 2p] (low), + 1 (high).
static void pack_rows(const int8_t *const rows[STRIP], size_t kc, int8x16_t *strip) {
  for (size_t c = 0; c < kc / BLOCK; ++c)
    for (int quad = 0; quad < 2; ++quad) {
      uint32x4_t a[4];
      for (int r = 0; r < 4; ++r) a[r] = vreinterpretq_u32_u8(strip_block(rows[4 * quad + r], c));
      const uint32x4_t t0 = vzip1q_u32(a[0], a[1]), t1 = vzip2q_u32(a[0], a[1]);
      const uint32x4_t t2 = vzip1q_u32(a[2], a[3]), t3 = vzip2q_u32(a[2], a[3]);
      const uint64x2_t u0 = vreinterpretq_u64_u32(t0), u1 = vreinterpretq_u64_u32(t1);
      const uint64x2_t u2 = vreinterpretq_u64_u32(t2), u3 = vreinterpretq_u64_u32(t3);
      const uint64x2_t v[4] = {vzip1q_u64(u0, u2), vzip2q_u64(u0, u2), vzip1q_u64(u1, u3), vzip2q_u64(u1, u3)};
      for (int p = 0; p < 4; ++p) {
        strip[c * STRIP_VECTORS + quad * 8 + 2 * p] = low_nibbles(vreinterpretq_u8_u64(v[p]));
        strip[c * STRIP_VECTORS + quad * 8 + 2 * p + 1] = high_nibbles(vreinterpretq_u8_u64(v[p]));
      }
    }
}

// y[0 .. tm, 0 .. cols) (row stride ldy) (+)= the strip times tm rows of quantized x from `xq`
// (row stride `stride`), elements k0..k0+kc. Per block the i32 sums of each (quad, row of x)
// are exact; then (sum - sum8) * dx * scale is added in f32. tm <= TILE_M is a constant after inlining.
static inline __attribute__((always_inline)) void strip_tile(const int8x16_t *strip, const float *scales, const int8_t *xq,
                                                             size_t stride, size_t k, size_t group, size_t k0, size_t kc,
                                                             float *y, size_t ldy, size_t cols, const int tm) {
  const size_t per_group = group / BLOCK;
  float32x4_t acc[TILE_M][2];
  for (int i = 0; i < tm; ++i) acc[i][0] = acc[i][1] = vdupq_n_f32(0.0f);
  for (size_t g = 0, c = 0; g < kc / group; ++g) {
    const float32x4_t s0 = vld1q_f32(scales + g * STRIP), s1 = vld1q_f32(scales + g * STRIP + 4);
    for (size_t end = c + per_group; c < end; ++c) {
      const int8x16_t *w = strip + c * STRIP_VECTORS;
      int8x16_t xlo[TILE_M], xhi[TILE_M];
      int32x4_t d[TILE_M][2];
      float dx[TILE_M];
      for (int i = 0; i < tm; ++i) {  // the sums start at -8 * sum(x) (the nibbles' + 8 taken off), biased
        const int8_t *row = xq + i * stride;
        int32_t sum8;
        __builtin_memcpy(&dx[i], row + k + 4 * (k0 / BLOCK + c), sizeof dx[i]);
        __builtin_memcpy(&sum8, row + k + 4 * (k / BLOCK + k0 / BLOCK + c), sizeof sum8);
        xlo[i] = vld1q_s8(row + k0 + c * BLOCK);
        xhi[i] = vld1q_s8(row + k0 + c * BLOCK + 16);
        d[i][0] = d[i][1] = vdupq_n_s32(SUM_BIAS - sum8);
      }
      // Part p: 4 weight vectors (the quads' low and high nibbles) live at a time, each serving tm rows.
#define PART(p)                                                                                         \
  {                                                                                                     \
    const int8x16_t a = w[2 * (p)], b = w[2 * (p) + 1], e = w[8 + 2 * (p)], f = w[8 + 2 * (p) + 1];     \
    for (int i = 0; i < tm; ++i) {                                                                      \
      d[i][0] = vdotq_laneq_s32(vdotq_laneq_s32(d[i][0], a, xlo[i], p), b, xhi[i], p);                  \
      d[i][1] = vdotq_laneq_s32(vdotq_laneq_s32(d[i][1], e, xlo[i], p), f, xhi[i], p);                  \
    }                                                                                                   \
  }
      PART(0) PART(1) PART(2) PART(3)
#undef PART
      for (int i = 0; i < tm; ++i) {
        acc[i][0] = vfmaq_f32(acc[i][0], biased_sum_to_float(d[i][0]), vmulq_n_f32(s0, dx[i]));
        acc[i][1] = vfmaq_f32(acc[i][1], biased_sum_to_float(d[i][1]), vmulq_n_f32(s1, dx[i]));
      }
    }
  }
  for (int i = 0; i < tm; ++i) {
    float out[STRIP];
    vst1q_f32(out, acc[i][0]);
    vst1q_f32(out + 4, acc[i][1]);
    for (size_t j = 0; j < cols; ++j) y[i * ldy + j] = k0 ? y[i * ldy + j] + out[j] : out[j];
  }
}

#endif  // IREE_GLM_OWN_MATRIX_KERNEL

// The hooks of the shared int4 driver (../int4_matmul.h): it walks panels of two strips.
typedef int8x16x2_t strip_vector;  // STRIP_VECTORS / 2 per block, as the driver sizes the strips

static void pack_strip(const int8_t *q, const uint16_t *s, size_t n, size_t n0, size_t k, size_t group, size_t k0, size_t kc,
                       strip_vector *strip, float *scales) {
  const int8_t *rows[STRIP];
  strip_rows(q, n, n0, k, k0, rows);
  pack_rows(rows, kc, (int8x16_t *)strip);
  strip_scales(s, n, n0, k, group, k0, kc, scales);
}

static inline __attribute__((always_inline)) void tile(const strip_vector *strip_a, const strip_vector *strip_b,
                                                       const float *scales_a, const float *scales_b, const int8_t *xq,
                                                       size_t stride, size_t k, size_t group, size_t k0, size_t kc, float *y,
                                                       size_t ldy, size_t cols, const int tm) {
  strip_tile((const int8x16_t *)strip_a, scales_a, xq, stride, k, group, k0, kc, y, ldy, cols < STRIP ? cols : STRIP, tm);
  if (cols > STRIP)
    strip_tile((const int8x16_t *)strip_b, scales_b, xq, stride, k, group, k0, kc, y + STRIP, ldy, cols - STRIP, tm);
}

#include "../int4_matmul.h"
