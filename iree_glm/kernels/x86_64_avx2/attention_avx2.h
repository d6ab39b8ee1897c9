// 8-lane AVX2 helpers of the flash-attention kernel (attention.c), also used by the AVX-512
// set's form for its transposes and mask reads (../x86_64_avx512/attention.c).
#ifndef IREE_GLM_ATTENTION_AVX2_H_
#define IREE_GLM_ATTENTION_AVX2_H_

#include <immintrin.h>
#include <stddef.h>

#include "../attention_layout.h"

// 2^x, relative error ~2.3e-7 (a degree-5 fit of 2^f on [-0.5, 0.5], Horner); exactly 0 below
// -126 (and for -inf). The kernel works in base 2 (scores pre-scaled by log2(e)): 5 FMAs a
// vector here against 11 multiplies / FMAs of a natural-base expf, which shared the two FMA
// units with the products themselves.
static inline __m256 exp2_256(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-126.0f);
  const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(127.0f));
  const __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(x, n);
  __m256 y = _mm256_fmadd_ps(_mm256_set1_ps(1.327647129073739e-3f), f, _mm256_set1_ps(9.675540961325169e-3f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(5.550713092088699e-2f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(2.4022120237350464e-1f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(6.931469440460205e-1f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(1.0000001192092896f));
  // times 2^n: n added to the exponent bits (y in [0.7, 1.42], n in [-126, 127]: stays normal)
  const __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
  return _mm256_andnot_ps(under, _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(y), e)));
}

// In registers: t[j] lane i = r[i] lane j (8 x 8 floats); r is overwritten.
static inline __attribute__((always_inline)) void transpose8_regs(__m256 r[8], __m256 t[8]) {
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x20);
    t[i + 4] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x31);
  }
}

// 8 x 8 floats, transposed and scaled: dst[j * ds + i] = src[i * ss + j] * f[j], i, j < 8.
static inline void transpose_scaled(const float *src, size_t ss, float *dst, size_t ds, const float *f) {
  __m256 r[8], t[8];
  const __m256 fv = _mm256_loadu_ps(f);
  for (int i = 0; i < 8; ++i) r[i] = _mm256_mul_ps(_mm256_loadu_ps(src + i * ss), fv);
  transpose8_regs(r, t);
  for (int i = 0; i < 8; ++i) _mm256_storeu_ps(dst + i * ds, t[i]);
}

// st[j][0..8) += log2(e) x the mask of 8 rows (own mask rows mr[0..8)) at keys j0 + j, j < keys: 8 x 8
// blocks transposed in registers, the last keys % 8 one at a time.
static void add_mask_rows8(const float *const *mr, size_t j0, size_t keys, float *st) {
  const __m256 log2e = _mm256_set1_ps(LOG2E);
  size_t j = 0;
  for (; j + 8 <= keys; j += 8) {
    __m256 r[8], t[8];
    for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(mr[i] + j0 + j);
    transpose8_regs(r, t);
    for (int i = 0; i < 8; ++i) _mm256_store_ps(st + (j + i) * ROWS, _mm256_fmadd_ps(t[i], log2e, _mm256_load_ps(st + (j + i) * ROWS)));
  }
  for (; j < keys; ++j) {
    const __m256 mv = _mm256_setr_ps(mr[0][j0 + j], mr[1][j0 + j], mr[2][j0 + j], mr[3][j0 + j],
                                     mr[4][j0 + j], mr[5][j0 + j], mr[6][j0 + j], mr[7][j0 + j]);
    _mm256_store_ps(st + j * ROWS, _mm256_fmadd_ps(mv, log2e, _mm256_load_ps(st + j * ROWS)));
  }
}

static inline void mask_bits8(const float *p, unsigned *seen, unsigned *nz) {
  const __m256 x = _mm256_loadu_ps(p);
  *seen = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(x, _mm256_set1_ps(-__builtin_inff()), _CMP_NEQ_UQ));
  *nz = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_NEQ_UQ));
}

#endif  // IREE_GLM_ATTENTION_AVX2_H_
