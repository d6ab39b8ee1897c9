// Attention of few query rows (fp32, NEON 4-lane vectors), each row computed on its own: the
// kernel of an exact `verify` (docs/speculative.md, "Exactness"), whose R-row calls must give
// every row the bits a one-row call gives it. The aarch64 counterpart of
// x86_64_avx2/attention_rows.h (same contract, arguments and algorithm, on 4 lanes); included
// once by this set's attention.c, after the flash kernel (whose exp2 polynomial, exp2_4, it uses).
//
// Same contract and arguments as the flash kernel (../attention_tile.h): q [H, M, D], k and v
// heads `key_stride` positions apart, the mask row of query row r at
// mask[head * mask_head_stride + (r / mask_row_div) * N]; one call computes the ROWS query rows
// [row_begin, row_begin + ROWS) of one head. Nothing is shared between rows: each row runs
// `attend_row`, whose arithmetic reads only that row's q, its mask row and the keys up to the
// last one its mask shows, so it is the same for any M, any tile and any N past that key.
//
// Per row, an online softmax over blocks of 4 keys (one vector of scores): the score of a key is
// q . k as D/4 FMAs along D in one accumulator, its lanes summed in a fixed tree (two `faddp`
// rounds for the block's 4 keys at once); a block's probabilities are lane-wise, the running sum
// a vector of 4 partial sums, the output E/4 accumulators. A key the mask hides adds
// exp2(-inf) = 0, and the keys after a row's last visible one are not read. A row with no
// visible key gives NaN (0 / 0), as the flash kernel does. D and E are multiples of 4.
#ifndef IREE_GLM_AARCH64_ATTENTION_ROWS_H_
#define IREE_GLM_AARCH64_ATTENTION_ROWS_H_

#include <arm_neon.h>
#include <stddef.h>

#include "../attention_layout.h"
#include "../memref.h"

// out[0..e) = softmax_j(q . k[j] * scale + mask[j]) v[j] of one query row; k and v rows d and e apart.
// noinline: every row runs this one body, whatever the loop around it.
__attribute__((noinline)) static void attend_row(const float *q, const float *k, const float *v, const float *mask,
                                                 float *out, size_t n, size_t d, size_t e, float scale) {
  size_t end = n;  // one past the last key the mask shows this row (the causal diagonal)
  while (end > 0 && mask[end - 1] == -__builtin_inff()) --end;
  float qs[MAX_D] __attribute__((aligned(16)));  // q * scale * log2(e): scores in base 2
  for (size_t c = 0; c < d; ++c) qs[c] = q[c] * (scale * LOG2E);
  float32x4_t acc[MAX_D / 4];
  for (size_t c = 0; c < e / 4; ++c) acc[c] = vdupq_n_f32(0.0f);
  float32x4_t sum = vdupq_n_f32(0.0f);
  float run_max = -__builtin_inff();
  for (size_t j0 = 0; j0 < end; j0 += 4) {
    const size_t keys = end - j0 < 4 ? end - j0 : 4;
    float32x4_t dots[4];
    float mk[4] __attribute__((aligned(16)));
    for (size_t j = 0; j < 4; ++j) {
      float32x4_t a = vdupq_n_f32(0.0f);
      if (j < keys) {
        const float *kj = k + (j0 + j) * d;
        a = vmulq_f32(vld1q_f32(qs), vld1q_f32(kj));
        for (size_t c = 4; c < d; c += 4) a = vfmaq_f32(a, vld1q_f32(qs + c), vld1q_f32(kj + c));
      }
      dots[j] = a;
      mk[j] = j < keys ? mask[j0 + j] : -__builtin_inff();
    }
    // lane j: dots[j]'s lanes summed as (0 + 1) + (2 + 3)
    const float32x4_t dot = vpaddq_f32(vpaddq_f32(dots[0], dots[1]), vpaddq_f32(dots[2], dots[3]));
    const float32x4_t s = vfmaq_f32(dot, vld1q_f32(mk), vdupq_n_f32(LOG2E));
    const float top = vmaxvq_f32(s), new_max = top > run_max ? top : run_max;
    if (new_max == -__builtin_inff()) continue;  // nothing visible yet
    const float32x4_t p = exp2_4(vsubq_f32(s, vdupq_n_f32(new_max)));
    if (new_max != run_max) {  // the max grew: rescale what was summed under the old one
      const float32x4_t alpha = exp2_4(vdupq_n_f32(run_max - new_max));
      for (size_t c = 0; c < e / 4; ++c) acc[c] = vmulq_f32(acc[c], alpha);
      sum = vmulq_f32(sum, alpha);
      run_max = new_max;
    }
    sum = vaddq_f32(sum, p);
    float pj[4] __attribute__((aligned(16)));
    vst1q_f32(pj, p);
    for (size_t j = 0; j < keys; ++j) {
      const float *vj = v + (j0 + j) * e;
      for (size_t c = 0; c < e / 4; ++c) acc[c] = vfmaq_n_f32(acc[c], vld1q_f32(vj + 4 * c), pj[j]);
    }
  }
  const float32x4_t inv = vdupq_n_f32(1.0f / vaddvq_f32(sum));  // no visible key: 0 * (1 / 0) = NaN
  for (size_t c = 0; c < e / 4; ++c) vst1q_f32(out + 4 * c, vmulq_f32(acc[c], inv));
}

#include "../attention_rows_entry.h"

#endif  // IREE_GLM_AARCH64_ATTENTION_ROWS_H_
