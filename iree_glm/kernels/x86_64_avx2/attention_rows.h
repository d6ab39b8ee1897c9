// Attention of few query rows (fp32, AVX2 + FMA 8-lane vectors), each row computed on its own:
// the kernel of an exact `verify` (docs/speculative.md, "Exact decode"), whose R-row calls must
// give every row the bits a one-row call gives it. Included once by the x86 sets' attention.c
// (the AVX-512 set's through the AVX2 file), next to the flash-attention kernel.
//
// Same contract and arguments as the flash kernel (../attention_tile.h): q [H, M, D], k and v
// heads `key_stride` positions apart, the mask row of query row r at
// mask[head * mask_head_stride + (r / mask_row_div) * N]; one call computes the ROWS query rows
// [row_begin, row_begin + ROWS) of one head. The flash kernel's sums depend on how many rows its
// tile holds (keys per FMA step by vectors of rows, mask scans and block skips shared by the
// tile's rows); here nothing is shared between rows: each row runs `attend_row`, whose
// arithmetic reads only that row's q, its mask row and the keys up to the last one its mask
// shows, so it is the same for any M, any tile and any N past that key.
//
// Per row, an online softmax over blocks of 8 keys (one vector of scores): the score of a key is
// q . k as D/8 FMAs along D in one accumulator, summed across its lanes in a fixed tree; a
// block's probabilities are lane-wise, the running sum a vector of 8 partial sums, the output
// E/8 accumulators. `local` and `global_` (the block-sparse pattern) are not needed: a key the
// mask hides adds exp2(-inf) = 0, and the keys after a row's last visible one are not read.
// A row with no visible key gives NaN (0 / 0), as the flash kernel does.
#ifndef IREE_GLM_ATTENTION_ROWS_H_
#define IREE_GLM_ATTENTION_ROWS_H_

#include <immintrin.h>
#include <stddef.h>

#include "../attention_layout.h"
#include "../memref.h"

// 2^x on 8 lanes, the flash kernel's polynomial (attention_tile.h's vf_exp2): 0 below -126 and for -inf.
static inline __m256 rows_exp2(__m256 x) {
  const __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-126.0f)), _mm256_set1_ps(127.0f));
  const __m256 n = _mm256_round_ps(xc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), f = _mm256_sub_ps(xc, n);
  __m256 y = _mm256_fmadd_ps(_mm256_set1_ps(1.327647129073739e-3f), f, _mm256_set1_ps(9.675540961325169e-3f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(5.550713092088699e-2f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(2.4022120237350464e-1f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(6.931469440460205e-1f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(1.0000001192092896f));
  const __m256 scaled = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(y), _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23)));
  return _mm256_andnot_ps(_mm256_cmp_ps(x, _mm256_set1_ps(-126.0f), _CMP_LT_OQ), scaled);
}

// Lane j of the result: the sum of the 8 lanes of a[j], in one fixed tree for every j.
static inline __m256 rows_sum8(const __m256 a[8]) {
  const __m256 s01 = _mm256_hadd_ps(a[0], a[1]), s23 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 s45 = _mm256_hadd_ps(a[4], a[5]), s67 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 s0123 = _mm256_hadd_ps(s01, s23), s4567 = _mm256_hadd_ps(s45, s67);
  // s0123 = [a0 a1 a2 a3 | a0 a1 a2 a3] partial sums of the low and high 128-bit halves
  return _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20), _mm256_permute2f128_ps(s0123, s4567, 0x31));
}

static inline float rows_hmax(__m256 x) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

static inline float rows_hsum(__m256 x) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// out[0..e) = softmax_j(q . k[j] * scale + mask[j]) v[j] of one query row; k and v rows d and e apart.
// noinline: every row runs this one body, whatever the loop around it.
__attribute__((noinline)) static void attend_row(const float *q, const float *k, const float *v, const float *mask,
                                                 float *out, size_t n, size_t d, size_t e, float scale) {
  size_t end = n;  // one past the last key the mask shows this row (the causal diagonal)
  while (end > 0 && mask[end - 1] == -__builtin_inff()) --end;
  float qs[MAX_D] __attribute__((aligned(32)));  // q * scale * log2(e): scores in base 2
  for (size_t c = 0; c < d; ++c) qs[c] = q[c] * (scale * LOG2E);
  __m256 acc[MAX_D / 8];
  for (size_t c = 0; c < e / 8; ++c) acc[c] = _mm256_setzero_ps();
  __m256 sum = _mm256_setzero_ps();
  float run_max = -__builtin_inff();
  for (size_t j0 = 0; j0 < end; j0 += 8) {
    const size_t keys = end - j0 < 8 ? end - j0 : 8;
    __m256 dots[8];
    float mk[8] __attribute__((aligned(32)));
    for (size_t j = 0; j < 8; ++j) {
      __m256 a = _mm256_setzero_ps();
      if (j < keys) {
        const float *kj = k + (j0 + j) * d;
        a = _mm256_mul_ps(_mm256_load_ps(qs), _mm256_loadu_ps(kj));
        for (size_t c = 8; c < d; c += 8) a = _mm256_fmadd_ps(_mm256_load_ps(qs + c), _mm256_loadu_ps(kj + c), a);
      }
      dots[j] = a;
      mk[j] = j < keys ? mask[j0 + j] : -__builtin_inff();
    }
    const __m256 s = _mm256_fmadd_ps(_mm256_load_ps(mk), _mm256_set1_ps(LOG2E), rows_sum8(dots));
    const float top = rows_hmax(s), new_max = top > run_max ? top : run_max;
    if (new_max == -__builtin_inff()) continue;  // nothing visible yet
    const __m256 p = rows_exp2(_mm256_sub_ps(s, _mm256_set1_ps(new_max)));
    if (new_max != run_max) {  // the max grew: rescale what was summed under the old one
      const __m256 alpha = rows_exp2(_mm256_set1_ps(run_max - new_max));
      for (size_t c = 0; c < e / 8; ++c) acc[c] = _mm256_mul_ps(acc[c], alpha);
      sum = _mm256_mul_ps(sum, alpha);
      run_max = new_max;
    }
    sum = _mm256_add_ps(sum, p);
    float pj[8] __attribute__((aligned(32)));
    _mm256_store_ps(pj, p);
    for (size_t j = 0; j < keys; ++j) {
      const __m256 w = _mm256_set1_ps(pj[j]);
      const float *vj = v + (j0 + j) * e;
      for (size_t c = 0; c < e / 8; ++c) acc[c] = _mm256_fmadd_ps(w, _mm256_loadu_ps(vj + 8 * c), acc[c]);
    }
  }
  const __m256 inv = _mm256_set1_ps(1.0f / rows_hsum(sum));  // no visible key: 0 * (1 / 0) = NaN
  for (size_t c = 0; c < e / 8; ++c) _mm256_storeu_ps(out + 8 * c, _mm256_mul_ps(acc[c], inv));
}

#include "../attention_rows_entry.h"

#endif  // IREE_GLM_ATTENTION_ROWS_H_
