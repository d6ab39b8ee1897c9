// Flash attention (fp32), aarch64 NEON: the shared driver (../attention_tile.h: contract, tiles,
// block-sparse pattern, the same as x86_64_avx2/attention.c) on 4-lane vectors; the i8mm set
// takes this file as it is (attention has no integer products). Linked into IREE dispatches
// (passes/attention_kernel.py).
//
// A vector holds 4 query rows, so a 32-row tile is 8 vectors: scores^T are 2 keys x 32 rows of
// `fmla` per step (16 accumulators, the 8 vectors of q^T and a broadcast: 25 of the 32
// registers, nothing reloaded), fewer rows more keys per step. K and V elements are broadcast
// from memory (`ld1r`): a step is 2 + 8 loads for 16 `fmla`, within the two load pipes of a
// Cortex-A76 while its two FP pipes are busy. Its speed is argued statically (docs/arm.md:
// llvm-mca); nothing here was timed on Arm hardware. Tested under qemu-aarch64
// (tests/kernels/test_aarch64_kernels.py). Embedded-ELF rules: no libc, no globals.

#include <arm_neon.h>
#include <stddef.h>

#include "../attention_layout.h"

#define vf float32x4_t
#define VW 4
#define TW 4
#define vf_zero() vdupq_n_f32(0.0f)
#define vf_set1(s) vdupq_n_f32(s)
#define vf_bcast(p) vld1q_dup_f32(p)
#define vf_load(p) vld1q_f32(p)
#define vf_store(p, x) vst1q_f32(p, x)
#define vf_add(a, b) vaddq_f32(a, b)
#define vf_sub(a, b) vsubq_f32(a, b)
#define vf_mul(a, b) vmulq_f32(a, b)
#define vf_div(a, b) vdivq_f32(a, b)
#define vf_max(a, b) vmaxq_f32(a, b)
#define vf_fma(a, b, c) vfmaq_f32(c, a, b)
#define vf_exp2(x) exp2_128(x)
#define vf_differs(a, b) (vminvq_u32(vceqq_f32(a, b)) == 0)
#define vf_ninf_to_zero(x) \
  vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(x), vceqq_f32(x, vdupq_n_f32(-__builtin_inff()))))
#define NK1 8
#define NK2 8
#define NK3 6
#define NK4 5
#define NK5 4
#define NK6 3
#define NK7 3
#define NK8 2

// 2^x: the AVX2 kernel's degree-5 fit (relative error ~2.3e-7), exactly 0 below -126 and for -inf.
static inline float32x4_t exp2_128(float32x4_t x) {
  const float32x4_t lo = vdupq_n_f32(-126.0f);
  const uint32x4_t under = vcltq_f32(x, lo);
  x = vminq_f32(vmaxq_f32(x, lo), vdupq_n_f32(127.0f));
  const float32x4_t n = vrndnq_f32(x);
  const float32x4_t f = vsubq_f32(x, n);
  float32x4_t y = vfmaq_f32(vdupq_n_f32(9.675540961325169e-3f), vdupq_n_f32(1.327647129073739e-3f), f);
  y = vfmaq_f32(vdupq_n_f32(5.550713092088699e-2f), y, f);
  y = vfmaq_f32(vdupq_n_f32(2.4022120237350464e-1f), y, f);
  y = vfmaq_f32(vdupq_n_f32(6.931469440460205e-1f), y, f);
  y = vfmaq_f32(vdupq_n_f32(1.0000001192092896f), y, f);
  const int32x4_t e = vshlq_n_s32(vcvtq_s32_f32(n), 23);  // n is integral: truncation is exact
  const uint32x4_t bits = vreinterpretq_u32_s32(vaddq_s32(vreinterpretq_s32_f32(y), e));
  return vreinterpretq_f32_u32(vbicq_u32(bits, under));
}

// t[j] lane i = r[i] lane j (4 x 4 floats).
static inline __attribute__((always_inline)) void transpose4_regs(const float32x4_t r[4], float32x4_t t[4]) {
  const float32x4_t a = vtrn1q_f32(r[0], r[1]), b = vtrn2q_f32(r[0], r[1]);
  const float32x4_t c = vtrn1q_f32(r[2], r[3]), d = vtrn2q_f32(r[2], r[3]);
  t[0] = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(a), vreinterpretq_f64_f32(c)));
  t[1] = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(b), vreinterpretq_f64_f32(d)));
  t[2] = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(a), vreinterpretq_f64_f32(c)));
  t[3] = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(b), vreinterpretq_f64_f32(d)));
}

// dst[j * ds + i] = src[i * ss + j] * f[j], i, j < 4.
static inline void transpose_scaled(const float *src, size_t ss, float *dst, size_t ds, const float *f) {
  float32x4_t r[4], t[4];
  const float32x4_t fv = vld1q_f32(f);
  for (int i = 0; i < 4; ++i) r[i] = vmulq_f32(vld1q_f32(src + i * ss), fv);
  transpose4_regs(r, t);
  for (int i = 0; i < 4; ++i) vst1q_f32(dst + i * ds, t[i]);
}

// st[j][0..4) += log2(e) x the mask of 4 rows (own mask rows mr[0..4)) at keys j0 + j, j < keys.
static void add_mask_rows(const float *const *mr, size_t j0, size_t keys, float *st) {
  const float32x4_t log2e = vdupq_n_f32(LOG2E);
  size_t j = 0;
  for (; j + 4 <= keys; j += 4) {
    float32x4_t r[4], t[4];
    for (int i = 0; i < 4; ++i) r[i] = vld1q_f32(mr[i] + j0 + j);
    transpose4_regs(r, t);
    for (int i = 0; i < 4; ++i) vst1q_f32(st + (j + i) * ROWS, vfmaq_f32(vld1q_f32(st + (j + i) * ROWS), t[i], log2e));
  }
  for (; j < keys; ++j) {
    const float m4[4] = {mr[0][j0 + j], mr[1][j0 + j], mr[2][j0 + j], mr[3][j0 + j]};
    vst1q_f32(st + j * ROWS, vfmaq_f32(vld1q_f32(st + j * ROWS), vld1q_f32(m4), log2e));
  }
}

// Bit i of *seen: p[i] != -inf, of *nz: p[i] != 0 (NaN: both), i < 8.
static inline void mask_bits8(const float *p, unsigned *seen, unsigned *nz) {
  const uint32x4_t bit = {1, 2, 4, 8};
  const float32x4_t ninf = vdupq_n_f32(-__builtin_inff()), zero = vdupq_n_f32(0.0f);
  const float32x4_t lo = vld1q_f32(p), hi = vld1q_f32(p + 4);
  *seen = vaddvq_u32(vbicq_u32(bit, vceqq_f32(lo, ninf))) | vaddvq_u32(vbicq_u32(bit, vceqq_f32(hi, ninf))) << 4;
  *nz = vaddvq_u32(vbicq_u32(bit, vceqq_f32(lo, zero))) | vaddvq_u32(vbicq_u32(bit, vceqq_f32(hi, zero))) << 4;
}

#include "../attention_tile.h"
