// The int4 prompt (matrix) kernel's entry point, and the driver of every kernel set but
// x86_64_amx (x86 and aarch64): it walks weight strips and chunks of K and calls the set's own
// `pack_strip` and `tile` (and vector type `strip_vector`), defined before this file is included.
// Only the strip and tile code differ between sets. A set with a driver of its own defines
// IREE_GLM_INT4_OWN_DRIVER, its `matmul_rows` and IREE_GLM_MATMUL_MAX_ROWS (the rows a call takes).

#ifndef IREE_GLM_INT4_OWN_DRIVER
// Rows m_begin..m_end of x and weight rows n_begin..n_end (whole panels of 16 rows, taken 2 *
// STRIP at a time: a last panel may leave the second strip empty), within the matrices.
static void matmul_rows(const int8_t *xq, const int8_t *q, const uint16_t *s, float *y, size_t n, size_t k, size_t group,
                        size_t n_begin, size_t n_end, size_t m_begin, size_t m_end) {
  const size_t stride = xq_row_bytes(k);
  const size_t chunk = CHUNK_K / group * group;  // whole groups
  strip_vector strip_a[CHUNK_K / BLOCK * 8], strip_b[CHUNK_K / BLOCK * 8];
  float scales_a[CHUNK_K / BLOCK * STRIP] __attribute__((aligned(32))), scales_b[CHUNK_K / BLOCK * STRIP] __attribute__((aligned(32)));
  for (size_t n0 = n_begin; n0 < n_end; n0 += 2 * STRIP) {
    const size_t cols = n_end - n0 < 2 * STRIP ? n_end - n0 : 2 * STRIP;
    for (size_t k0 = 0; k0 < k; k0 += chunk) {
      const size_t kc = k - k0 < chunk ? k - k0 : chunk;
      pack_strip(q, s, n_end, n0, k, group, k0, kc, strip_a, scales_a);
      pack_strip(q, s, n_end, n0 + STRIP, k, group, k0, kc, strip_b, scales_b);
      size_t r = m_begin;
      const int8_t *x = xq + r * stride;
      float *out = y + r * n + n0;
      for (; r + TILE_M <= m_end; r += TILE_M, x += TILE_M * stride, out += TILE_M * n)
        tile(strip_a, strip_b, scales_a, scales_b, x, stride, k, group, k0, kc, out, n, cols, TILE_M);
      switch (m_end - r) {  // the last rows, with the tile height a constant
        case 3: tile(strip_a, strip_b, scales_a, scales_b, x, stride, k, group, k0, kc, out, n, cols, 3); break;
        case 2: tile(strip_a, strip_b, scales_a, scales_b, x, stride, k, group, k0, kc, out, n, cols, 2); break;
        case 1: tile(strip_a, strip_b, scales_a, scales_b, x, stride, k, group, k0, kc, out, n, cols, 1); break;
        default: break;
      }
    }
  }
}
#endif  // IREE_GLM_INT4_OWN_DRIVER

// y[m, n] for rows m_begin..m_end of x (rows of iree_glm_int4_quantize_workgroup's output) and
// weight rows n_begin..n_end: the set's `matmul_rows` on the ranges clamped to the matrices.
void iree_glm_int4_matmul_workgroup(MEMREF(const int8_t, xq), MEMREF(const int8_t, q), MEMREF(const uint16_t, s),
                                    MEMREF(float, y), size_t m, size_t n, size_t k, size_t group,
                                    size_t n_begin, size_t n_end, size_t m_begin, size_t m_end) {
  MEMREF_START(xq); MEMREF_START(q); MEMREF_START(s); MEMREF_START(y);
  if (n_end > n) n_end = n;
  if (m_end > m) m_end = m;
#ifdef IREE_GLM_MATMUL_MAX_ROWS
  if (m_end > m_begin + IREE_GLM_MATMUL_MAX_ROWS) m_end = m_begin + IREE_GLM_MATMUL_MAX_ROWS;
#endif
  if (m_end > m_begin && n_end > n_begin) matmul_rows(xq, q, s, y, n, k, group, n_begin, n_end, m_begin, m_end);
}
