// Row transforms the quantization dispatches of the int4 and int8 matrix kernels apply to x
// before quantizing it, so that the elementwise step producing a matmul's input does not need
// a dispatch of its own (passes/dequant_matmul.py matches them in the graph, "glue"):
// - silu(gate) * up of a row [gate (k) | up (k)], each optionally times its column's scale
//   (int8: the gate/up matmul's per-channel weight scale, applied after its kernel);
// - RMSNorm: x * rsqrt(mean(x^2) + eps) * w.
// The same f32 operations in the graph's order (x * r, then w * that; g * sigmoid(g), then
// up * that); exp is Cephes' single-precision polynomial (about 1 ulp, as IREE's own
// approximation). k is a multiple of 8. Included by int4_matvec_avx2.c and int8_avx2.c.

#ifndef IREE_GLM_ROW_GLUE_AVX2_H
#define IREE_GLM_ROW_GLUE_AVX2_H

#include <immintrin.h>
#include <stddef.h>

// The largest row the fused quantizations transform (on the stack, 32 KB); passes/int4_kernel.py's GLUE_MAX_K.
enum { GLUE_MAX_K = 8192 };

static inline __m256 glue_exp(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-88.3762626647949f)), _mm256_set1_ps(88.3762626647949f));
  const __m256 fx = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

// out[i] = up[i] * (g * (1 / (1 + exp(-g)))), g = gate[i] (gate = row[0..k), up = row[k..2k)),
// each first times scale[i] / scale[k + i] if scale is not NULL.
static void glue_silu_mul(const float *row, const float *scale, size_t k, float *out) {
  const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
  for (size_t i = 0; i < k; i += 8) {
    __m256 g = _mm256_loadu_ps(row + i), u = _mm256_loadu_ps(row + k + i);
    if (scale) {
      g = _mm256_mul_ps(g, _mm256_loadu_ps(scale + i));
      u = _mm256_mul_ps(u, _mm256_loadu_ps(scale + k + i));
    }
    const __m256 sig = _mm256_div_ps(one, _mm256_add_ps(glue_exp(_mm256_xor_ps(g, sign)), one));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(u, _mm256_mul_ps(g, sig)));
  }
}

// out = w * (x * rsqrt(sum(x^2) / k + eps)).
static void glue_rms_norm(const float *x, const float *w, size_t k, float eps, float *out) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0;
  size_t i = 0;
  for (; i + 16 <= k; i += 16) {
    const __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
    a0 = _mm256_fmadd_ps(v0, v0, a0);
    a1 = _mm256_fmadd_ps(v1, v1, a1);
  }
  for (; i < k; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    a0 = _mm256_fmadd_ps(v, v, a0);
  }
  const __m256 a = _mm256_add_ps(a0, a1);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  const __m128 mean = _mm_add_ss(_mm_div_ss(s, _mm_set_ss((float)k)), _mm_set_ss(eps));
  const __m256 r = _mm256_set1_ps(_mm_cvtss_f32(_mm_div_ss(_mm_set_ss(1.0f), _mm_sqrt_ss(mean))));
  for (i = 0; i < k; i += 8)
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(w + i), _mm256_mul_ps(_mm256_loadu_ps(x + i), r)));
}

#endif
