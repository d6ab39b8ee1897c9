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
#define tv float32x4_t  // the transposes' vector: the same 4 lanes
#define TW 4
#define tv_loadu(p) vld1q_f32(p)
#define tv_storeu(p, x) vst1q_f32(p, x)
#define tv_mul(a, b) vmulq_f32(a, b)
#define tv_fma(a, b, c) vfmaq_f32(c, a, b)
#define tv_set1(s) vdupq_n_f32(s)
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
#define vf_min(a, b) vminq_f32(a, b)
#define vf_round(x) vrndnq_f32(x)
#define vf_pow2_scale(y, n, x)  /* n is integral: truncation to int is exact */                                  \
  vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_s32(vaddq_s32(vreinterpretq_s32_f32(y), vshlq_n_s32(vcvtq_s32_f32(n), 23))), \
                                  vcltq_f32(x, vdupq_n_f32(-126.0f))))
#define vf_differs(a, b) (vminvq_u32(vceqq_f32(a, b)) == 0)
#define vf_ninf_to_zero(x) \
  vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(x), vceqq_f32(x, vdupq_n_f32(-__builtin_inff()))))
#define vf_one_where_equal(x, a, b) vbslq_f32(vceqq_f32(a, b), vdupq_n_f32(1.0f), x)
#define NK1 8
#define NK2 8
#define NK3 6
#define NK4 5
#define NK5 4
#define NK6 3
#define NK7 3
#define NK8 2

// t[j] lane i = r[i] lane j (4 x 4 floats).
static inline __attribute__((always_inline)) void transpose_regs(const float32x4_t r[4], float32x4_t t[4]) {
  const float32x4_t a = vtrn1q_f32(r[0], r[1]), b = vtrn2q_f32(r[0], r[1]);
  const float32x4_t c = vtrn1q_f32(r[2], r[3]), d = vtrn2q_f32(r[2], r[3]);
  t[0] = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(a), vreinterpretq_f64_f32(c)));
  t[1] = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(b), vreinterpretq_f64_f32(d)));
  t[2] = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(a), vreinterpretq_f64_f32(c)));
  t[3] = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(b), vreinterpretq_f64_f32(d)));
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
