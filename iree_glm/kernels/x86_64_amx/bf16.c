// bf16 x bf16 -> f32 matrix products for x86-64 with AMX-BF16 and AVX-512 BF16, linked into
// IREE dispatches: the linear layers of bundles compiled with `--compute-dtype bf16`.
//
// y[m, n] = sum_k w[n, k] * x[m, k]   with w and x rounded to bf16, sums in f32
//
// Weights (transforms/quantize.py's bf16 layout): bf16 [N/16, K2, 16, 2], K2 = ceil(K / 2):
// tile t holds output rows 16t..16t+15; per pair p of k, 16 rows x (k = 2p, 2p + 1). Per 32 k
// that is 1 KB, exactly an AMX B tile of tdpbf16ps (16 rows of k pairs x 16 columns), and each
// 64 bytes one vector of vdpbf16ps: both kernels read the weights as stored, no regrouping.
//
// x is rounded f32 -> bf16 round-to-nearest-even (vcvtne2ps2bf16, as the arith.truncf of IREE's
// bf16 demotion; this instruction and the tile products treat bf16 denormals as zero).
//
// - Prompts: a dispatch converts x's rows once into rows of xb_row_bytes(k) (K rounded up to 32,
//   zero-padded), then the matrix kernel multiplies blocks of 16 rows x pairs of weight tiles on
//   tiles (tdpbf16ps).
// - Decode (one row) and verify (a few rows, each as decode computes it): a matrix-vector
//   kernel on vdpbf16ps, x's row converted on the stack.
//
// The process must have asked Linux for the tile state (bundle/cpu_features.request_amx).
// Embedded-ELF rules: no libc, no globals, no TLS; buffers arrive as memref descriptors.

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "../memref.h"
#include "bf16_tiles.h"  // x's conversion and the tile loop, shared with int4.c's bf16 prompt path

enum {
  LANES = BF16_LANES,
  MAX_K = 16384,  // the matrix-vector kernel keeps x's bf16 pairs on the stack
};

#ifndef PREFETCH_AHEAD
#define PREFETCH_AHEAD 1024
#endif

static inline size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

// Rows row_begin..row_end of x [m, k] f32 -> rows of bf16_xb_row_bytes(k) (the prompt kernel's input).
void iree_glm_bf16_convert_workgroup(MEMREF(const float, x), MEMREF(int8_t, xb), size_t m, size_t k, size_t row_begin,
                                     size_t row_end) {
  MEMREF_START(x); MEMREF_START(xb);
  bf16_convert_rows(x, xb, m, k, row_begin, row_end);
}

// ---- matrix-vector kernel (decode, verify) ----

// One row: y[t_begin*16 .. t_end*16) from x's bf16 pairs `xp` (k2 of them).
static void matvec_row(const uint32_t *xp, const uint16_t *w, float *y, size_t k2, size_t t_begin, size_t t_end) {
  for (size_t t = t_begin; t < t_end; ++t) {
    const uint16_t *tile = w + t * k2 * 2 * LANES;
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    size_t p = 0;
    for (; p + 4 <= k2; p += 4) {  // 4 independent sums: vdpbf16ps's latency
      const uint16_t *v = tile + p * 2 * LANES;
      _mm_prefetch((const char *)v + PREFETCH_AHEAD, _MM_HINT_T0);
      _mm_prefetch((const char *)v + PREFETCH_AHEAD + 64, _MM_HINT_T0);
      _mm_prefetch((const char *)v + PREFETCH_AHEAD + 128, _MM_HINT_T0);
      _mm_prefetch((const char *)v + PREFETCH_AHEAD + 192, _MM_HINT_T0);
      for (int j = 0; j < 4; ++j)
        acc[j] = _mm512_dpbf16_ps(acc[j], (__m512bh)_mm512_loadu_si512((const void *)(v + j * 2 * LANES)),
                                  (__m512bh)_mm512_set1_epi32((int)xp[p + j]));
    }
    for (; p < k2; ++p)
      acc[0] = _mm512_dpbf16_ps(acc[0], (__m512bh)_mm512_loadu_si512((const void *)(tile + p * 2 * LANES)),
                                (__m512bh)_mm512_set1_epi32((int)xp[p]));
    _mm512_storeu_ps(y + t * LANES, _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
  }
}

// y [m, N] = x [m, k] (f32, rounded to bf16 here) times weight tiles t_begin..t_end (clamped to
// `tiles`); every row computed alone, as a one-row call would (verify's rows are decode steps').
void iree_glm_bf16_matvec_workgroup(MEMREF(const float, x), MEMREF(const uint16_t, w), MEMREF(float, y), size_t m,
                                    size_t tiles, size_t k, size_t t_begin, size_t t_end) {
  MEMREF_START(x); MEMREF_START(w); MEMREF_START(y);
  t_end = min_size(t_end, tiles);
  if (k > MAX_K || t_end <= t_begin) return;
  uint32_t xp[MAX_K / 2 + 16] __attribute__((aligned(64)));
  const size_t k2 = (k + 1) / 2;
  for (size_t r = 0; r < m; ++r) {
    bf16_convert_row(x + r * k, k, (uint16_t *)xp);
    matvec_row(xp, w, y + r * tiles * LANES, k2, t_begin, t_end);
  }
}

// ---- matrix kernel (prompts) ----

// y [m, N] for rows m_begin..m_end of the converted x (at most BF16_MAX_ROWS) and weight tiles
// t_begin..t_end (both clamped).
void iree_glm_bf16_matmul_workgroup(MEMREF(const int8_t, xb), MEMREF(const uint16_t, w), MEMREF(float, y), size_t m,
                                    size_t tiles, size_t k, size_t t_begin, size_t t_end, size_t m_begin, size_t m_end) {
  MEMREF_START(xb); MEMREF_START(w); MEMREF_START(y);
  t_end = min_size(t_end, tiles);
  m_end = min_size(min_size(m_end, m), m_begin + BF16_MAX_ROWS);
  if (m_end <= m_begin || t_end <= t_begin) return;
  float acc[BF16_MAX_ROWS][2 * LANES] __attribute__((aligned(64)));
  const size_t stride = bf16_xb_row_bytes(k), n = tiles * LANES;
  bf16_rows((const uint8_t *)xb + m_begin * stride, stride, w, y + m_begin * n, n, k, t_begin, t_end, m_end - m_begin, acc, 0);
  _tile_release();
}
