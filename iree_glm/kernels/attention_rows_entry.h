// The exact verify's attention entry point (passes/attention_kernel.py's ROW_SYMBOL), shared by
// every set's row kernel (x86_64_avx2/attention_rows.h, aarch64_dotprod/attention_rows.h), which
// defines attend_row(q, k, v, mask, out, n, d, e, scale) for one query row and includes this
// file after it. The flash kernel's contract and arguments (attention_tile.h): one call computes
// the ROWS query rows [row_begin, row_begin + ROWS) of one head, each on its own (no pattern:
// `local` and `global_` are not needed, a hidden key adding exp2(-inf) = 0).
#ifndef IREE_GLM_ATTENTION_ROWS_ENTRY_H_
#define IREE_GLM_ATTENTION_ROWS_ENTRY_H_

#include <stddef.h>

#include "attention_layout.h"
#include "memref.h"

void iree_glm_attention_rows_workgroup(MEMREF(const float, q), MEMREF(const float, k), MEMREF(const float, v),
                                       MEMREF(const float, mask), MEMREF(float, out), size_t m, size_t n, size_t d,
                                       size_t e, float scale, size_t mask_head_stride, size_t mask_row_div, size_t head,
                                       size_t row_begin, size_t local, size_t global_, size_t key_stride) {
  MEMREF_START(q); MEMREF_START(k); MEMREF_START(v); MEMREF_START(mask); MEMREF_START(out);
  (void)local, (void)global_;
  if (row_begin >= m) return;
  const size_t row_end = m - row_begin < ROWS ? m : row_begin + ROWS;
  const float *kh = k + head * key_stride * d, *vh = v + head * key_stride * e, *mh = mask + head * mask_head_stride;
  for (size_t r = row_begin; r < row_end; ++r)
    attend_row(q + (head * m + r) * d, kh, vh, mh + (r / mask_row_div) * n, out + (head * m + r) * e, n, d, e, scale);
}

#endif  // IREE_GLM_ATTENTION_ROWS_ENTRY_H_
