// 8-lane AVX2 helpers of the flash-attention kernel (attention.c): the transposes' vector and mask
// reads, also the AVX-512 set's form's (../x86_64_avx512/attention.c).
#ifndef IREE_GLM_ATTENTION_AVX2_H_
#define IREE_GLM_ATTENTION_AVX2_H_

#include <immintrin.h>
#include <stddef.h>

#include "../attention_layout.h"

#define tv __m256  // the transposes' vector: 8 lanes (heads are multiples of 8)
#define TW 8
#define tv_loadu(p) _mm256_loadu_ps(p)
#define tv_storeu(p, x) _mm256_storeu_ps(p, x)
#define tv_mul(a, b) _mm256_mul_ps(a, b)
#define tv_fma(a, b, c) _mm256_fmadd_ps(a, b, c)
#define tv_set1(s) _mm256_set1_ps(s)

// In registers: t[j] lane i = r[i] lane j (8 x 8 floats); r is overwritten.
static inline __attribute__((always_inline)) void transpose_regs(__m256 r[8], __m256 t[8]) {
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

static inline void mask_bits8(const float *p, unsigned *seen, unsigned *nz) {
  const __m256 x = _mm256_loadu_ps(p);
  *seen = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(x, _mm256_set1_ps(-__builtin_inff()), _CMP_NEQ_UQ));
  *nz = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_NEQ_UQ));
}

#endif  // IREE_GLM_ATTENTION_AVX2_H_
