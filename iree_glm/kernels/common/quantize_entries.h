// The row-quantization entry points of the int8 and int4 kernels, the same in every kernel set:
// quantize rows of x (plain, or after the silu_mul / rms_norm glue) into rows of xq_row_bytes(k)
// bytes, one row after another, for rows row_begin..row_end of m. Included by each set's int8.c
// (IREE_GLM_INT8_ENTRIES) and int4.c (IREE_GLM_INT4_ENTRIES) after it has defined, with the
// set's instructions: MEMREF, GLUE_MAX_K, glue_silu_mul, glue_rms_norm (its row_glue.h),
// xq_row_bytes and quantize_row (the set's quantized-row format; int4's takes the group size).
// Each dispatch writes its own rows. Embedded-ELF rules: no libc, no globals; the glue's row
// (k <= GLUE_MAX_K floats, 32 KB) is on the stack.

#if defined(IREE_GLM_INT8_ENTRIES)
#define IREE_GLM_ENTRY(name) iree_glm_int8_##name##_workgroup
#define IREE_GLM_GROUP_ARG
#define IREE_GLM_GROUP
#define IREE_GLM_SILU_SCALE MEMREF(const float, scale),
#define IREE_GLM_SILU_SCALE_USE (void)scale_base; (void)scale_size; (void)scale_stride; scale += scale_offset;
#define IREE_GLM_SILU_SCALE_PTR scale
#elif defined(IREE_GLM_INT4_ENTRIES)
#define IREE_GLM_ENTRY(name) iree_glm_int4_##name##_workgroup
#define IREE_GLM_GROUP_ARG size_t group,
#define IREE_GLM_GROUP group,
#define IREE_GLM_SILU_SCALE
#define IREE_GLM_SILU_SCALE_USE
#define IREE_GLM_SILU_SCALE_PTR NULL
#else
#error "define IREE_GLM_INT8_ENTRIES or IREE_GLM_INT4_ENTRIES before including quantize_entries.h"
#endif

void IREE_GLM_ENTRY(quantize)(MEMREF(const float, x), MEMREF(int8_t, xq), size_t m, size_t k, IREE_GLM_GROUP_ARG
                              size_t row_begin, size_t row_end) {
  (void)x_base; (void)x_size; (void)x_stride; (void)xq_base; (void)xq_size; (void)xq_stride;
  x += x_offset; xq += xq_offset;
  if (row_end > m) row_end = m;
  for (size_t r = row_begin; r < row_end; ++r) quantize_row(x + r * k, k, IREE_GLM_GROUP xq + r * xq_row_bytes(k));
}

// x = silu(gate) * up of rows [gate | up] of gu [m, 2k]; int8: each first times the gate/up
// matmul's per-channel weight scale [sg | su] (applied after its kernel), int4: no scale.
void IREE_GLM_ENTRY(quantize_silu_mul)(MEMREF(const float, gu), IREE_GLM_SILU_SCALE MEMREF(int8_t, xq), size_t m, size_t k,
                                       IREE_GLM_GROUP_ARG size_t row_begin, size_t row_end) {
  (void)gu_base; (void)gu_size; (void)gu_stride; (void)xq_base; (void)xq_size; (void)xq_stride;
  IREE_GLM_SILU_SCALE_USE
  gu += gu_offset; xq += xq_offset;
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
  (void)h_base; (void)h_size; (void)h_stride; (void)w_base; (void)w_size; (void)w_stride;
  (void)xq_base; (void)xq_size; (void)xq_stride;
  h += h_offset; w += w_offset; xq += xq_offset;
  if (row_end > m) row_end = m;
  float x[GLUE_MAX_K] __attribute__((aligned(32)));
  for (size_t r = row_begin; r < row_end; ++r) {
    glue_rms_norm(h + r * k, w, k, eps, x);
    quantize_row(x, k, IREE_GLM_GROUP xq + r * xq_row_bytes(k));
  }
}

#undef IREE_GLM_ENTRY
#undef IREE_GLM_GROUP_ARG
#undef IREE_GLM_GROUP
#undef IREE_GLM_SILU_SCALE
#undef IREE_GLM_SILU_SCALE_USE
#undef IREE_GLM_SILU_SCALE_PTR
