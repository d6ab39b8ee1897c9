// Flash attention (fp32), AVX-512: the shared driver (../attention_tile.h: contract, tiles,
// block-sparse pattern) on 16-lane vectors for tiles of more than 8 query rows, and the AVX2
// set's 8-lane form (../x86_64_avx2/attention.c, included) for up to 8 (decode: the query heads
// of one KV head), where half a 16-lane vector or more would be padding. The transposes and mask
// reads are the 8-lane helpers (heads are multiples of 8, not 16).
//
// A vector holds 16 query rows, a 32-row tile 2 vectors: scores^T are 12 keys x 32 rows of FMAs
// per step (24 accumulators, 2 vectors of q^T and a broadcast: 27 of the 32 registers), 16 keys
// for 16 rows. The softmax bookkeeping (exp2, max, rescaling) is lane-wise on 16 lanes.

#define ATTENTION_ENTRY attention_rows8
#include "../x86_64_avx2/attention.c"

#define vf __m512
#define VW 16
#define TW 8
#define NK_MAX 16
#define vf_zero() _mm512_setzero_ps()
#define vf_set1(s) _mm512_set1_ps(s)
#define vf_bcast(p) _mm512_set1_ps(*(p))
#define vf_load(p) _mm512_load_ps(p)
#define vf_store(p, x) _mm512_store_ps(p, x)
#define vf_add(a, b) _mm512_add_ps(a, b)
#define vf_sub(a, b) _mm512_sub_ps(a, b)
#define vf_mul(a, b) _mm512_mul_ps(a, b)
#define vf_div(a, b) _mm512_div_ps(a, b)
#define vf_max(a, b) _mm512_max_ps(a, b)
#define vf_fma(a, b, c) _mm512_fmadd_ps(a, b, c)
#define vf_exp2(x) exp2_512(x)
#define vf_differs(a, b) _mm512_cmp_ps_mask(a, b, _CMP_NEQ_UQ)
#define vf_ninf_to_zero(x) _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-__builtin_inff()), _CMP_NEQ_UQ), x)
#define add_mask_rows add_mask_rows16
#define NK1 16
#define NK2 12

// exp2_256's fit on 16 lanes: 2^x, relative error ~2.3e-7, exactly 0 below -126 and for -inf.
static inline __m512 exp2_512(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-126.0f);
  const __mmask16 kept = _mm512_cmp_ps_mask(x, lo, _CMP_NLT_US);
  x = _mm512_min_ps(_mm512_max_ps(x, lo), _mm512_set1_ps(127.0f));
  const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(x, n);
  __m512 y = _mm512_fmadd_ps(_mm512_set1_ps(1.327647129073739e-3f), f, _mm512_set1_ps(9.675540961325169e-3f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(5.550713092088699e-2f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(2.4022120237350464e-1f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(6.931469440460205e-1f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(1.0000001192092896f));
  const __m512i e = _mm512_slli_epi32(_mm512_cvtps_epi32(n), 23);
  return _mm512_maskz_mov_ps(kept, _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(y), e)));
}

// st[j][0..16) += log2(e) x the mask of 16 rows: two 8-row halves.
static void add_mask_rows16(const float *const *mr, size_t j0, size_t keys, float *st) {
  add_mask_rows8(mr, j0, keys, st);
  add_mask_rows8(mr + 8, j0, keys, st + 8);
}

#define ATTENTION_ENTRY attention_rows32
#include "../attention_tile.h"

void iree_glm_attention_workgroup(MEMREF(const float, q), MEMREF(const float, k), MEMREF(const float, v),
                                  MEMREF(const float, mask), MEMREF(float, out), size_t m, size_t n, size_t d,
                                  size_t e, float scale, size_t mask_head_stride, size_t mask_row_div, size_t head,
                                  size_t row_begin, size_t local, size_t global_) {
  (row_begin < m && m - row_begin <= 8 ? attention_rows8 : attention_rows32)(
      q_base, q, q_offset, q_size, q_stride, k_base, k, k_offset, k_size, k_stride, v_base, v, v_offset, v_size, v_stride,
      mask_base, mask, mask_offset, mask_size, mask_stride, out_base, out, out_offset, out_size, out_stride, m, n, d, e,
      scale, mask_head_stride, mask_row_div, head, row_begin, local, global_);
}
