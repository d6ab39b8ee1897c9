// The entry points of the aarch64 int8 and int4 kernels (the symbols and MEMREF arguments
// kernels/int8.py and int4.py call, as for the x86 sets), written once for both files and both
// aarch64 sets: quantize rows of x (plain, or after the silu_mul / rms_norm glue) into rows of
// xq_row_bytes(k) bytes, for rows row_begin..row_end of m; and the argument handling around
// the set's int8_matvec / int4_matvec (decode) and their few-row forms int8_matvec_rows /
// int4_matvec_rows (verify). The prompt matrix kernels' entry points are ../int8_matmul.h and
// ../int4_matmul.h, shared with the x86 sets.
// Included by int8.c (IREE_GLM_INT8_ENTRIES) and int4.c (IREE_GLM_INT4_ENTRIES) after they
// define GLUE_MAX_K, glue_silu_mul, glue_rms_norm (row_glue.h), xq_row_bytes, quantize_row (the
// quantized-row format; int4's takes the group size) and the decode and verify bodies.
// Embedded-ELF rules: no libc, no globals; the glue's row (k <= GLUE_MAX_K floats, 32 KB) is on
// the stack.

#if defined(IREE_GLM_INT8_ENTRIES)
#define IREE_GLM_ENTRY(name) iree_glm_int8_##name##_workgroup
#define IREE_GLM_GROUP_ARG
#define IREE_GLM_GROUP
#define IREE_GLM_SILU_SCALE MEMREF(const float, scale),
#define IREE_GLM_SILU_SCALE_START MEMREF_START(scale);
#define IREE_GLM_SILU_SCALE_PTR scale
#elif defined(IREE_GLM_INT4_ENTRIES)
#define IREE_GLM_ENTRY(name) iree_glm_int4_##name##_workgroup
#define IREE_GLM_GROUP_ARG size_t group,
#define IREE_GLM_GROUP group,
#define IREE_GLM_SILU_SCALE
#define IREE_GLM_SILU_SCALE_START
#define IREE_GLM_SILU_SCALE_PTR NULL
#else
#error "define IREE_GLM_INT8_ENTRIES or IREE_GLM_INT4_ENTRIES before including entry_points.h"
#endif

void IREE_GLM_ENTRY(quantize)(MEMREF(const float, x), MEMREF(int8_t, xq), size_t m, size_t k, IREE_GLM_GROUP_ARG
                              size_t row_begin, size_t row_end) {
  MEMREF_START(x); MEMREF_START(xq);
  if (row_end > m) row_end = m;
  for (size_t r = row_begin; r < row_end; ++r) quantize_row(x + r * k, k, IREE_GLM_GROUP xq + r * xq_row_bytes(k));
}

// x = silu(gate) * up of rows [gate | up] of gu [m, 2k]; int8: each first times the gate/up
// matmul's per-channel weight scale [sg | su] (applied after its kernel), int4: no scale.
void IREE_GLM_ENTRY(quantize_silu_mul)(MEMREF(const float, gu), IREE_GLM_SILU_SCALE MEMREF(int8_t, xq), size_t m, size_t k,
                                       IREE_GLM_GROUP_ARG size_t row_begin, size_t row_end) {
  MEMREF_START(gu); MEMREF_START(xq); IREE_GLM_SILU_SCALE_START
  if (row_end > m) row_end = m;
  float x[GLUE_MAX_K] __attribute__((aligned(32)));
  for (size_t r = row_begin; r < row_end; ++r) {
    glue_silu_mul(gu + r * 2 * k, IREE_GLM_SILU_SCALE_PTR, k, x);
    quantize_row(x, k, IREE_GLM_GROUP xq + r * xq_row_bytes(k));
  }
}

// x = RMSNorm(h) with weight w [k].
void IREE_GLM_ENTRY(quantize_rms_norm)(MEMREF(const float, h), MEMREF(const float, w), MEMREF(int8_t, xq), size_t m, size_t k,
                                       IREE_GLM_GROUP_ARG float eps, size_t row_begin, size_t row_end) {
  MEMREF_START(h); MEMREF_START(w); MEMREF_START(xq);
  if (row_end > m) row_end = m;
  float x[GLUE_MAX_K] __attribute__((aligned(32)));
  for (size_t r = row_begin; r < row_end; ++r) {
    glue_rms_norm(h + r * k, w, k, eps, x);
    quantize_row(x, k, IREE_GLM_GROUP xq + r * xq_row_bytes(k));
  }
}

#if defined(IREE_GLM_INT8_ENTRIES)
// Decode: tiles tile_begin..tile_end of y (16 outputs each) for one row of x: the set's
// int8_matvec, defined before this file is included.
void iree_glm_int8_matvec_workgroup(MEMREF(const float, x), MEMREF(const int8_t, q), MEMREF(float, y), size_t tiles,
                                    size_t k, size_t tile_begin, size_t tile_end) {
  MEMREF_START(x); MEMREF_START(q); MEMREF_START(y);
  if (tile_end > tiles) tile_end = tiles;
  int8_matvec(x, q, y, k, tile_begin, tile_end);
}

// Verify: the same tiles of y [m, tiles * 16] for the m rows of x [m, k], each row bit for bit
// the decode entry point's for that row alone (the set's int8_matvec_rows).
void iree_glm_int8_matvec_rows_workgroup(MEMREF(const float, x), MEMREF(const int8_t, q), MEMREF(float, y), size_t m,
                                         size_t tiles, size_t k, size_t tile_begin, size_t tile_end) {
  MEMREF_START(x); MEMREF_START(q); MEMREF_START(y);
  if (tile_end > tiles) tile_end = tiles;
  int8_matvec_rows(x, q, y, m, tiles, k, tile_begin, tile_end);
}

#else
// Decode: rows row_begin..row_end of y for one row of x: the set's int4_matvec, defined before
// this file is included.
void iree_glm_int4_matvec_workgroup(MEMREF(const float, x), MEMREF(const int8_t, q), MEMREF(const uint16_t, s),
                                    MEMREF(float, y), size_t n, size_t k, size_t group, size_t row_begin,
                                    size_t row_end) {
  MEMREF_START(x); MEMREF_START(q); MEMREF_START(s); MEMREF_START(y);
  if (row_end > n) row_end = n;
  int4_matvec(x, q, s, y, k, group, row_begin, row_end);
}

// Verify: the same rows of y [m, n] for the m rows of x [m, k], each row bit for bit the decode
// entry point's for that row alone (the set's int4_matvec_rows).
void iree_glm_int4_matvec_rows_workgroup(MEMREF(const float, x), MEMREF(const int8_t, q), MEMREF(const uint16_t, s),
                                         MEMREF(float, y), size_t m, size_t n, size_t k, size_t group, size_t row_begin,
                                         size_t row_end) {
  MEMREF_START(x); MEMREF_START(q); MEMREF_START(s); MEMREF_START(y);
  if (row_end > n) row_end = n;
  int4_matvec_rows(x, q, s, y, m, n, k, group, row_begin, row_end);
}

#endif

#undef IREE_GLM_ENTRY
#undef IREE_GLM_GROUP_ARG
#undef IREE_GLM_GROUP
#undef IREE_GLM_SILU_SCALE
#undef IREE_GLM_SILU_SCALE_START
#undef IREE_GLM_SILU_SCALE_PTR
