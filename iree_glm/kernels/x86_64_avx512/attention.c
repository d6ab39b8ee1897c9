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
#define NK_MAX 16
#define VX _mm512_
#include "../x86_64_avx2/attention_ops.h"
#define vf_bcast(p) _mm512_set1_ps(*(p))
#define vf_round(x) _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define vf_pow2_scale(y, n, x)                                                                                      \
  _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-126.0f), _CMP_NLT_US),                                \
                      _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(y), _mm512_slli_epi32(_mm512_cvtps_epi32(n), 23))))
#define vf_differs(a, b) _mm512_cmp_ps_mask(a, b, _CMP_NEQ_UQ)
#define vf_ninf_to_zero(x) _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-__builtin_inff()), _CMP_NEQ_UQ), x)
#define vf_one_where_equal(x, a, b) _mm512_mask_mov_ps(x, _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ), _mm512_set1_ps(1.0f))
#define NK1 16
#define NK2 12

#define ATTENTION_ENTRY attention_rows32
#include "../attention_tile.h"

void iree_glm_attention_workgroup(MEMREF(const float, q), MEMREF(const float, k), MEMREF(const float, v),
                                  MEMREF(const float, mask), MEMREF(float, out), size_t m, size_t n, size_t d,
                                  size_t e, float scale, size_t mask_head_stride, size_t mask_row_div, size_t head,
                                  size_t row_begin, size_t local, size_t global_, size_t key_stride) {
  (row_begin < m && m - row_begin <= 8 ? attention_rows8 : attention_rows32)(
      q_base, q, q_offset, q_size, q_stride, k_base, k, k_offset, k_size, k_stride, v_base, v, v_offset, v_size, v_stride,
      mask_base, mask, mask_offset, mask_size, mask_stride, out_base, out, out_offset, out_size, out_stride, m, n, d, e,
      scale, mask_head_stride, mask_row_div, head, row_begin, local, global_, key_stride);
}
