// int8 prompt matrix kernel for aarch64 with i8mm (`smmla`): the same entry points, weight
// layout, quantized rows of x and numbers (exact i32 sums, one conversion and scaling per
// output) as aarch64_dotprod/int8.c, which this file includes for everything else (decode is
// bound by reading the weights, which `sdot` already keeps up with; row quantization and glue).
//
// `smmla acc.4s, a.16b, b.16b` adds a 2 x 8 by 8 x 2 integer product: a = 8 k of two rows of x,
// b = 8 k of two weight rows, acc = [x0.w0, x0.w1, x1.w0, x1.w1]: 32 multiply-adds per
// instruction where `sdot` does 16.

#define IREE_GLM_OWN_MATRIX_KERNEL
#include "../aarch64_dotprod/int8.c"

// 8 k of a tile (128 bytes: k0..k7 x 16 rows) -> 8 vectors, vector p = weight rows 2p and 2p + 1,
// 8 k each (three rounds of zips: an 8 x 16 byte transpose), once per chunk.
static inline void regroup_chunk(const int8_t *tile, size_t k0, size_t kc, int8x16_t *wv) {
  for (size_t s = 0; s < kc / 8; ++s) {
    const int8x16x4_t a = vld1q_s8_x4(tile + (k0 + 8 * s) * LANES), b = vld1q_s8_x4(tile + (k0 + 8 * s + 4) * LANES);
    const int8x16_t l[8] = {a.val[0], a.val[1], a.val[2], a.val[3], b.val[0], b.val[1], b.val[2], b.val[3]};
    int16x8_t p[8];  // p[2i] / p[2i + 1]: rows 0..7 / 8..15, k 2i and 2i + 1 interleaved
    for (int i = 0; i < 4; ++i) {
      p[2 * i] = vreinterpretq_s16_s8(vzip1q_s8(l[2 * i], l[2 * i + 1]));
      p[2 * i + 1] = vreinterpretq_s16_s8(vzip2q_s8(l[2 * i], l[2 * i + 1]));
    }
    for (int h = 0; h < 2; ++h) {  // rows 8h..8h+7
      // k0..k3 of rows 8h..8h+3 | 8h+4..8h+7, then k4..k7 likewise
      const int32x4_t q0 = vreinterpretq_s32_s16(vzip1q_s16(p[h], p[2 + h])), q1 = vreinterpretq_s32_s16(vzip2q_s16(p[h], p[2 + h]));
      const int32x4_t q2 = vreinterpretq_s32_s16(vzip1q_s16(p[4 + h], p[6 + h])), q3 = vreinterpretq_s32_s16(vzip2q_s16(p[4 + h], p[6 + h]));
      int8x16_t *out = wv + 8 * s + 4 * h;
      out[0] = vreinterpretq_s8_s32(vzip1q_s32(q0, q2));
      out[1] = vreinterpretq_s8_s32(vzip2q_s32(q0, q2));
      out[2] = vreinterpretq_s8_s32(vzip1q_s32(q1, q3));
      out[3] = vreinterpretq_s8_s32(vzip2q_s32(q1, q3));
    }
  }
}

// acc[0 .. tm) += tm rows of x times the chunk, in pairs of rows (an odd last row is paired with
// itself and its copy dropped). The sums are held as 2 x 2 blocks while the chunk runs and
// turned back into acc's layout (row, 4 columns) around it.
static inline __attribute__((always_inline)) void rows_tile(const int8x16_t *wv, const int8_t *x, size_t stride, size_t kc,
                                                            int32x4_t (*acc)[4], const int tm) {
  enum { PAIRS = TILE_M / 2 };
  const int pairs = (tm + 1) / 2;
  int32x4_t a[PAIRS][8];
  for (int p = 0; p < pairs; ++p) {
    const int r1 = 2 * p + 1 < tm ? 2 * p + 1 : 2 * p;
    for (int j = 0; j < 4; ++j) {
      const int64x2_t u = vreinterpretq_s64_s32(acc[2 * p][j]), v = vreinterpretq_s64_s32(acc[r1][j]);
      a[p][2 * j] = vreinterpretq_s32_s64(vzip1q_s64(u, v));
      a[p][2 * j + 1] = vreinterpretq_s32_s64(vzip2q_s64(u, v));
    }
  }
  for (size_t k0 = 0; k0 < kc; k0 += 8) {
    const int8x16_t *w = wv + k0;  // 8 vectors per 8 k
    int8x16_t xv[PAIRS];
    for (int p = 0; p < pairs; ++p) {
      const int8_t *x0 = x + 2 * p * stride + k0, *x1 = 2 * p + 1 < tm ? x0 + stride : x0;
      xv[p] = vcombine_s8(vld1_s8(x0), vld1_s8(x1));
    }
    for (int j = 0; j < 8; ++j)
      for (int p = 0; p < pairs; ++p) a[p][j] = vmmlaq_s32(a[p][j], xv[p], w[j]);
  }
  for (int p = 0; p < pairs; ++p)
    for (int j = 0; j < 4; ++j) {
      const int64x2_t u = vreinterpretq_s64_s32(a[p][2 * j]), v = vreinterpretq_s64_s32(a[p][2 * j + 1]);
      acc[2 * p][j] = vreinterpretq_s32_s64(vzip1q_s64(u, v));
      if (2 * p + 1 < tm) acc[2 * p + 1][j] = vreinterpretq_s32_s64(vzip2q_s64(u, v));
    }
}
