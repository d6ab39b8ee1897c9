// int8 x f32 decode matrix-vector kernel for aarch64 with dotprod (`sdot`), the counterpart of
// x86_64_avx2/int8.c's iree_glm_int8_matvec_workgroup: the same symbol, arguments, weight
// layout and numbers model (x quantized per block of 32, exact integer sums per block).
//
// y[n] = sum_c dx[c] * sum_{k in block c} w[n, k] * xq[k]   (the per-channel weight scale is
// applied after, in the graph)
//
// Weights (transforms/quantize.py's int8 layout): qweight i8 [N/16, K, 16]: tile t holds rows
// 16t..16t+15, for each k their 16 bytes. `sdot` wants 4 consecutive k of one row per 32-bit
// lane, so each 4 k x 16 rows (64 bytes) are regrouped by two rounds of zips (bytes, then
// halfwords) into 4 vectors of 4 rows each, and multiplied with x's 4 k broadcast from a lane
// (`sdot v.4s, w.16b, x.4b[i]`). |w|, |x| <= 127 and K <= MAX_K keep the i32 sums exact.
//
// Not linked into bundles yet (kernels/toolchain.py has no aarch64 set); tested directly under
// qemu-aarch64 (tests/kernels/test_aarch64_kernels.py). Embedded-ELF rules: no libc, no globals.

#include <arm_neon.h>
#include <stddef.h>
#include <stdint.h>

#define MEMREF(T, name) T *name##_base, T *name, size_t name##_offset, size_t name##_size, size_t name##_stride

enum { BLOCK = 32, MAX_K = 16384, LANES = 16 };

// 32 floats -> 32 int8 (round half to even of x * (1 / d), d = max|x| / 127); returns d.
static inline float quantize_block(const float *x, int8_t *out) {
  float32x4_t v[8];
  float32x4_t m = vdupq_n_f32(0.0f);
  for (int j = 0; j < 8; ++j) {
    v[j] = vld1q_f32(x + 4 * j);
    m = vmaxq_f32(m, vabsq_f32(v[j]));
  }
  const float d = vmaxvq_f32(m) / 127.0f;
  const float inv = d > 0.0f ? 1.0f / d : 0.0f;
  for (int j = 0; j < 8; j += 2) {
    const int32x4_t a = vcvtnq_s32_f32(vmulq_n_f32(v[j], inv)), b = vcvtnq_s32_f32(vmulq_n_f32(v[j + 1], inv));
    const int16x8_t h = vcombine_s16(vqmovn_s32(a), vqmovn_s32(b));
    vst1_s8(out + 4 * j, vqmovn_s16(h));
  }
  return d;
}

// acc[j] (rows 4j..4j+3) += 4 k of a tile's stream `w` (64 bytes) times x's 4 k in lane `lane` of xv.
#define DOT4(w, xv, lane, acc)                                                                      \
  do {                                                                                              \
    const int8x16x4_t l = vld1q_s8_x4(w);                                                           \
    const int8x16_t a = vzip1q_s8(l.val[0], l.val[1]), b = vzip2q_s8(l.val[0], l.val[1]);           \
    const int8x16_t c = vzip1q_s8(l.val[2], l.val[3]), e = vzip2q_s8(l.val[2], l.val[3]);           \
    const int16x8_t a16 = vreinterpretq_s16_s8(a), b16 = vreinterpretq_s16_s8(b);                   \
    const int16x8_t c16 = vreinterpretq_s16_s8(c), e16 = vreinterpretq_s16_s8(e);                   \
    acc[0] = vdotq_laneq_s32(acc[0], vreinterpretq_s8_s16(vzip1q_s16(a16, c16)), xv, lane);         \
    acc[1] = vdotq_laneq_s32(acc[1], vreinterpretq_s8_s16(vzip2q_s16(a16, c16)), xv, lane);         \
    acc[2] = vdotq_laneq_s32(acc[2], vreinterpretq_s8_s16(vzip1q_s16(b16, e16)), xv, lane);         \
    acc[3] = vdotq_laneq_s32(acc[3], vreinterpretq_s8_s16(vzip2q_s16(b16, e16)), xv, lane);         \
  } while (0)

// Tiles tile_begin..tile_end of y (16 outputs each) for one row of x; k a multiple of 32.
void iree_glm_int8_matvec_workgroup(MEMREF(const float, x), MEMREF(const int8_t, q), MEMREF(float, y), size_t tiles,
                                    size_t k, size_t tile_begin, size_t tile_end) {
  (void)x_base; (void)x_size; (void)x_stride; (void)q_base; (void)q_size; (void)q_stride;
  (void)y_base; (void)y_size; (void)y_stride;
  x += x_offset; q += q_offset; y += y_offset;
  if (tile_end > tiles) tile_end = tiles;
  int8_t xq[MAX_K] __attribute__((aligned(16)));
  float dx[MAX_K / BLOCK];
  for (size_t c = 0; c < k / BLOCK; ++c) dx[c] = quantize_block(x + c * BLOCK, xq + c * BLOCK);
  const size_t tile_bytes = k * LANES;
  for (size_t t = tile_begin; t < tile_end; ++t) {
    const int8_t *w = q + t * tile_bytes;
    float32x4_t f[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    for (size_t c = 0; c < k / BLOCK; ++c) {
      int32x4_t acc[4] = {vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)};
      for (size_t j = 0; j < BLOCK; j += 16) {
        const int8_t *p = w + (c * BLOCK + j) * LANES;
        const int8x16_t xv = vld1q_s8(xq + c * BLOCK + j);
        __builtin_prefetch(p + 1024);
        DOT4(p, xv, 0, acc);
        DOT4(p + 64, xv, 1, acc);
        DOT4(p + 128, xv, 2, acc);
        DOT4(p + 192, xv, 3, acc);
      }
      for (int r = 0; r < 4; ++r) f[r] = vfmaq_n_f32(f[r], vcvtq_f32_s32(acc[r]), dx[c]);
    }
    for (int r = 0; r < 4; ++r) vst1q_f32(y + t * LANES + 4 * r, f[r]);
  }
}
