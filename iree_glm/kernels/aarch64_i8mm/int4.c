// int4 prompt matrix kernel for aarch64 with i8mm (`smmla`): the same entry points, weight
// layout, quantized rows of x and numbers (exact i32 block sums, then per block one conversion
// and scaling) as aarch64_dotprod/int4.c, which this file includes for everything else.
//
// `smmla acc.4s, a.16b, b.16b` adds a 2 x 8 by 8 x 2 integer product: a = 8 elements of a block
// of two rows of x, b = the same 8 elements (nibbles, 0..15) of two weight rows, acc = [x0.w0,
// x0.w1, x1.w0, x1.w1]. A block (32 elements) is 4 such steps: low nibbles 0..7 and 8..15, high
// nibbles 0..7 and 8..15, paired with the halves of x's block.

#define IREE_GLM_OWN_MATRIX_KERNEL
#include "../aarch64_dotprod/int4.c"

// Per block, per pair q (weight rows 2q, 2q + 1 of the strip): 4 vectors, each 8 nibbles of row
// 2q then the same 8 of row 2q + 1: strip[c * 16 + 4q + (low 0..7, low 8..15, high 0..7, high 8..15)].
static void pack_rows(const int8_t *const rows[STRIP], size_t kc, int8x16_t *strip) {
  for (size_t c = 0; c < kc / BLOCK; ++c)
    for (int p = 0; p < STRIP / 2; ++p) {
      const uint8x16_t b0 = strip_block(rows[2 * p], c), b1 = strip_block(rows[2 * p + 1], c);
      const int64x2_t lo0 = vreinterpretq_s64_s8(low_nibbles(b0)), lo1 = vreinterpretq_s64_s8(low_nibbles(b1));
      const int64x2_t hi0 = vreinterpretq_s64_s8(high_nibbles(b0)), hi1 = vreinterpretq_s64_s8(high_nibbles(b1));
      int8x16_t *out = strip + c * STRIP_VECTORS + 4 * p;
      out[0] = vreinterpretq_s8_s64(vzip1q_s64(lo0, lo1));
      out[1] = vreinterpretq_s8_s64(vzip2q_s64(lo0, lo1));
      out[2] = vreinterpretq_s8_s64(vzip1q_s64(hi0, hi1));
      out[3] = vreinterpretq_s8_s64(vzip2q_s64(hi0, hi1));
    }
}

// y[0 .. tm, 0 .. cols) (row stride ldy) (+)= the strip times tm rows of quantized x, elements
// k0..k0+kc, in pairs of rows of x (an odd last row paired with itself, its copy dropped).
// Per block and (pair of x rows, pair of weight rows) the 2 x 2 i32 sums are exact; then
// (sum - sum8) * dx * scale is added in f32. tm <= TILE_M is a constant after inlining.
static inline __attribute__((always_inline)) void strip_tile(const int8x16_t *strip, const float *scales, const int8_t *xq,
                                                             size_t stride, size_t k, size_t group, size_t k0, size_t kc,
                                                             float *y, size_t ldy, size_t cols, const int tm) {
  enum { PAIRS = TILE_M / 2, WPAIRS = STRIP / 2 };
  const int pairs = (tm + 1) / 2;
  const size_t per_group = group / BLOCK;
  const int8_t *rows[TILE_M];
  for (int i = 0; i < TILE_M; ++i) rows[i] = xq + (i < tm ? i : tm - 1) * stride;
  float32x4_t acc[PAIRS][WPAIRS];
  for (int p = 0; p < pairs; ++p)
    for (int j = 0; j < WPAIRS; ++j) acc[p][j] = vdupq_n_f32(0.0f);
  for (size_t g = 0, c = 0; g < kc / group; ++g) {
    float32x4_t sg[WPAIRS];  // [scale 2j, scale 2j + 1, the same]
    for (int j = 0; j < WPAIRS; ++j) {
      const float32x2_t two = vld1_f32(scales + g * STRIP + 2 * j);
      sg[j] = vcombine_f32(two, two);
    }
    for (size_t end = c + per_group; c < end; ++c) {
      const int8x16_t *w = strip + c * STRIP_VECTORS;
      const size_t blk = k0 / BLOCK + c;
      for (int p = 0; p < pairs; ++p) {
        const int8_t *r0 = rows[2 * p] + k0 + c * BLOCK, *r1 = rows[2 * p + 1] + k0 + c * BLOCK;
        const int64x2_t lo0 = vreinterpretq_s64_s8(vld1q_s8(r0)), lo1 = vreinterpretq_s64_s8(vld1q_s8(r1));
        const int64x2_t hi0 = vreinterpretq_s64_s8(vld1q_s8(r0 + 16)), hi1 = vreinterpretq_s64_s8(vld1q_s8(r1 + 16));
        const int8x16_t xv[4] = {vreinterpretq_s8_s64(vzip1q_s64(lo0, lo1)), vreinterpretq_s8_s64(vzip2q_s64(lo0, lo1)),
                                 vreinterpretq_s8_s64(vzip1q_s64(hi0, hi1)), vreinterpretq_s8_s64(vzip2q_s64(hi0, hi1))};
        float d0, d1;
        int32_t o0, o1;
        __builtin_memcpy(&d0, rows[2 * p] + k + 4 * blk, sizeof d0);
        __builtin_memcpy(&d1, rows[2 * p + 1] + k + 4 * blk, sizeof d1);
        __builtin_memcpy(&o0, rows[2 * p] + k + 4 * (k / BLOCK + blk), sizeof o0);
        __builtin_memcpy(&o1, rows[2 * p + 1] + k + 4 * (k / BLOCK + blk), sizeof o1);
        const float32x4_t dv = {d0, d0, d1, d1};
        const int32x4_t start = {SUM_BIAS - o0, SUM_BIAS - o0, SUM_BIAS - o1, SUM_BIAS - o1};  // the nibbles' + 8 off, biased
        for (int j = 0; j < WPAIRS; ++j) {
          int32x4_t sum = vmmlaq_s32(start, xv[0], w[4 * j]);
          sum = vmmlaq_s32(sum, xv[1], w[4 * j + 1]);
          sum = vmmlaq_s32(sum, xv[2], w[4 * j + 2]);
          sum = vmmlaq_s32(sum, xv[3], w[4 * j + 3]);
          acc[p][j] = vfmaq_f32(acc[p][j], biased_sum_to_float(sum), vmulq_f32(sg[j], dv));
        }
      }
    }
  }
  for (int i = 0; i < tm; ++i) {
    float out[STRIP];
    for (int j = 0; j < WPAIRS; ++j) vst1_f32(out + 2 * j, i % 2 ? vget_high_f32(acc[i / 2][j]) : vget_low_f32(acc[i / 2][j]));
    for (size_t j = 0; j < cols; ++j) y[i * ldy + j] = k0 ? y[i * ldy + j] + out[j] : out[j];
  }
}
