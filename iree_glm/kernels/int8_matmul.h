// The int8 prompt (matrix) kernel's entry point, shared by every kernel set (x86 and aarch64):
// it clamps the dispatch's ranges and calls the set's own `matmul_rows` (and MAX_ROWS, or the
// rows its file names in IREE_GLM_MATMUL_MAX_ROWS), defined before this file is included.

#ifndef IREE_GLM_MATMUL_MAX_ROWS
#define IREE_GLM_MATMUL_MAX_ROWS MAX_ROWS
#endif

// y[m, n] (before the weight scale) for rows m_begin..m_end of x (rows of
// iree_glm_int8_quantize_workgroup's output, at most IREE_GLM_MATMUL_MAX_ROWS) and weight tiles t_begin..t_end:
// the set's `matmul_rows` on the ranges clamped to the matrices.
void iree_glm_int8_matmul_workgroup(MEMREF(const int8_t, xq), MEMREF(const int8_t, q), MEMREF(float, y), size_t m,
                                    size_t tiles, size_t k, size_t t_begin, size_t t_end, size_t m_begin, size_t m_end) {
  MEMREF_START(xq); MEMREF_START(q); MEMREF_START(y);
  if (t_end > tiles) t_end = tiles;
  if (m_end > m) m_end = m;
  if (m_end > m_begin + IREE_GLM_MATMUL_MAX_ROWS) m_end = m_begin + IREE_GLM_MATMUL_MAX_ROWS;
  if (m_end > m_begin && t_end > t_begin) matmul_rows(xq, q, y, tiles, k, t_begin, t_end, m_begin, m_end);
}
