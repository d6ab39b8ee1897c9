// Flash attention (fp32), AVX2 + FMA: the shared driver (../attention_tile.h: contract, tiles,
// block-sparse pattern) on 8-lane vectors. Linked into IREE dispatches (passes/attention_kernel.py).
//
// A vector holds 8 query rows: scores^T are 3 keys x 32 rows of FMAs per step (8 x 8 for 8 rows),
// out^T 3 columns x 32 rows; at most 12 accumulators (16 registers), at least 8 to keep both FMA
// units busy. Measured in user cycles (one thread, C probe, 256 positions x 8 query heads x 2 KV
// heads, head dim 64, causal over the last 256 of N keys): 25 flop/cycle at N = 2048, 21 at 256
// (the FMA peak is 32: 2 FMAs of 8 lanes).

#include "attention_avx2.h"

#define vf __m256
#define VW 8
#define VX _mm256_
#include "attention_ops.h"
#define vf_bcast(p) _mm256_broadcast_ss(p)
#define vf_round(x) _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define vf_pow2_scale(y, n, x)                                                                                      \
  _mm256_andnot_ps(_mm256_cmp_ps(x, _mm256_set1_ps(-126.0f), _CMP_LT_OQ),                                         \
                   _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(y), _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23))))
#define vf_differs(a, b) _mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_NEQ_UQ))
#define vf_ninf_to_zero(x) _mm256_andnot_ps(_mm256_cmp_ps(x, _mm256_set1_ps(-__builtin_inff()), _CMP_EQ_OQ), x)
#define vf_one_where_equal(x, a, b) _mm256_blendv_ps(x, _mm256_set1_ps(1.0f), _mm256_cmp_ps(a, b, _CMP_EQ_OQ))
#define NK1 8
#define NK2 6
#define NK3 4
#define NK4 3

#include "../attention_tile.h"
