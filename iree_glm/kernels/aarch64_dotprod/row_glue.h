// What every aarch64 kernel file shares (dotprod and i8mm sets): IREE's memref arguments
// (../memref.h), the activation quantization per block of 32 and per row, and the row transforms
// ("glue") the fused quantization dispatches apply before quantizing (passes/dequant_matmul.py):
// - silu(gate) * up of a row [gate (k) | up (k)], each optionally times its column's scale;
// - RMSNorm: x * rsqrt(mean(x^2) + eps) * w.
// The same f32 operations in the same order as x86_64_avx2/row_glue.h (x * r, then w * that;
// g * sigmoid(g), then up * that; Cephes' exp polynomial with fused multiply-adds), so the Arm
// and x86 bundles quantize the same numbers. k is a multiple of 8 (rows: of 32).
// Embedded-ELF rules: no libc (no sqrtf: vsqrtq_f32), no globals.

#ifndef IREE_GLM_AARCH64_ROW_GLUE_H
#define IREE_GLM_AARCH64_ROW_GLUE_H

#include <arm_neon.h>
#include <stddef.h>
#include <stdint.h>

#include "../memref.h"

// BLOCK: activation block of the decode kernels; GLUE_MAX_K: the longest row a fused
// quantization transforms (on the stack, 32 KB; passes/int4_kernel.py's GLUE_MAX_K).
enum { BLOCK = 32, GLUE_MAX_K = 8192 };

static inline float32x4_t glue_exp(float32x4_t x) {
  x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-88.3762626647949f)), vdupq_n_f32(88.3762626647949f));
  const float32x4_t fx = vrndmq_f32(vfmaq_f32(vdupq_n_f32(0.5f), x, vdupq_n_f32(1.44269504088896341f)));
  x = vfmsq_f32(x, fx, vdupq_n_f32(0.693359375f));
  x = vfmsq_f32(x, fx, vdupq_n_f32(-2.12194440e-4f));
  float32x4_t y = vdupq_n_f32(1.9875691500e-4f);
  y = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), y, x);
  y = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), y, x);
  y = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), y, x);
  y = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), y, x);
  y = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), y, x);
  y = vfmaq_f32(vaddq_f32(x, vdupq_n_f32(1.0f)), y, vmulq_f32(x, x));
  const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(fx), vdupq_n_s32(127)), 23);
  return vmulq_f32(y, vreinterpretq_f32_s32(e));
}

// out[i] = up[i] * (g * (1 / (1 + exp(-g)))), g = gate[i] (gate = row[0..k), up = row[k..2k)),
// each first times scale[i] / scale[k + i] if scale is not NULL.
static void glue_silu_mul(const float *row, const float *scale, size_t k, float *out) {
  const float32x4_t one = vdupq_n_f32(1.0f);
  for (size_t i = 0; i < k; i += 4) {
    float32x4_t g = vld1q_f32(row + i), u = vld1q_f32(row + k + i);
    if (scale) {
      g = vmulq_f32(g, vld1q_f32(scale + i));
      u = vmulq_f32(u, vld1q_f32(scale + k + i));
    }
    const float32x4_t sig = vdivq_f32(one, vaddq_f32(glue_exp(vnegq_f32(g)), one));
    vst1q_f32(out + i, vmulq_f32(u, vmulq_f32(g, sig)));
  }
}

// out = w * (x * rsqrt(sum(x^2) / k + eps)).
static void glue_rms_norm(const float *x, const float *w, size_t k, float eps, float *out) {
  float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0;
  for (size_t i = 0; i < k; i += 8) {
    const float32x4_t v0 = vld1q_f32(x + i), v1 = vld1q_f32(x + i + 4);
    a0 = vfmaq_f32(a0, v0, v0);
    a1 = vfmaq_f32(a1, v1, v1);
  }
  const float mean = vaddvq_f32(vaddq_f32(a0, a1)) / (float)k + eps;
  const float32x4_t r = vdivq_f32(vdupq_n_f32(1.0f), vsqrtq_f32(vdupq_n_f32(mean)));
  for (size_t i = 0; i < k; i += 4) vst1q_f32(out + i, vmulq_f32(vld1q_f32(w + i), vmulq_f32(vld1q_f32(x + i), r)));
}

// Per-block integer sums to f32 without `scvtf` (two micro-ops and half the rate of a float add
// on the Neoverse-class cores' models, and one per block of every output): a sum accumulated
// from SUM_BIAS, the bits of the float 1.5 * 2^23, holds the bits of the float 1.5 * 2^23 + sum
// as long as |sum| < 2^22, and one exact subtraction leaves the sum. Block sums are far below
// that (int4: 32 * 8 * 127 < 2^15). Used by the int4 kernels, whose per-block float work is a
// large part of their loops (the int8 decode loop measured no gain).
#define SUM_BIAS 0x4B400000
static inline float32x4_t biased_sum_to_float(int32x4_t biased) {
  return vsubq_f32(vreinterpretq_f32_s32(biased), vdupq_n_f32(12582912.0f));
}

// 16 f32 (four vectors) times inv, rounded half to even, saturated to [-127, 127] int8 -> out.
static inline int8x16_t round_to_int8(const float32x4_t v[4], float32x4_t inv) {
  int16x8_t h[2];
  for (int j = 0; j < 2; ++j)
    h[j] = vcombine_s16(vqmovn_s32(vcvtnq_s32_f32(vmulq_f32(v[2 * j], inv))), vqmovn_s32(vcvtnq_s32_f32(vmulq_f32(v[2 * j + 1], inv))));
  const int8x16_t q = vcombine_s8(vqmovn_s16(h[0]), vqmovn_s16(h[1]));
  return vmaxq_s8(q, vdupq_n_s8(-127));
}

// One activation block of 32 (lo[0..16) then hi[0..16)) -> 32 int8 at out: round half to even
// of x * (1 / d), d = max|x| / 127; returns d. The decode kernels' per-block quantization
// (quant.quantize_activations): int8 takes hi = lo + 16, int4 the two halves of a group.
static inline float quantize_block(const float *lo, const float *hi, int8_t *out) {
  float32x4_t v[8];
  float32x4_t m = vdupq_n_f32(0.0f);
  for (int j = 0; j < 4; ++j) {
    v[j] = vld1q_f32(lo + 4 * j);
    v[4 + j] = vld1q_f32(hi + 4 * j);
  }
  for (int j = 0; j < 8; ++j) m = vmaxq_f32(m, vabsq_f32(v[j]));
  const float d = vmaxvq_f32(m) / 127.0f;
  const float32x4_t inv = vdupq_n_f32(d > 0.0f ? 1.0f / d : 0.0f);
  vst1q_s8(out, round_to_int8(v, inv));
  vst1q_s8(out + 16, round_to_int8(v + 4, inv));
  return d;
}

// One row of k floats -> k int8 at out (in order), per row: round half to even of
// x * 127 / max|x| (the graph's integer matmul, quant.quantize_rows); returns the row scale
// max|x| / 127.
static inline float quantize_row_int8(const float *x, size_t k, int8_t *out) {
  float32x4_t m = vdupq_n_f32(0.0f);
  for (size_t i = 0; i < k; i += 4) m = vmaxq_f32(m, vabsq_f32(vld1q_f32(x + i)));
  const float amax = vmaxvq_f32(m);
  const float32x4_t inv = vdupq_n_f32(127.0f / (amax > 1e-30f ? amax : 1e-30f));
  for (size_t i = 0; i < k; i += 16) {
    const float32x4_t v[4] = {vld1q_f32(x + i), vld1q_f32(x + i + 4), vld1q_f32(x + i + 8), vld1q_f32(x + i + 12)};
    vst1q_s8(out + i, round_to_int8(v, inv));
  }
  return amax / 127.0f;
}

#endif
