// int8 x f32 matrix products for x86-64 with AMX (AMX-TILE, AMX-INT8) besides AVX-512 VNNI,
// linked into IREE dispatches. The same weight layout, quantized rows of x and entry points as
// x86_64_avx512/int8.c, which this file includes for everything but the prompt (matrix) kernel:
// decode reads every weight once, so tiles do not help it.
//
// y[m, n] = sum_k w[n, k] * x[m, k]   (the per-channel weight scale is applied after, in the graph)
//
// tdpbssd multiplies signed by signed bytes: C[m][n] += sum_q sum_i A[m][4q+i] * B[q][4n+i]
// over a 16 x 64-byte A tile (16 rows of x, 64 k) and a 16 x 64-byte B tile (per 4 k, 16 weight
// rows x 4 bytes: interleave8's vectors, whose 4-byte groups are in x's order). x and w are used
// as stored (no +128 bias as vpdpbusd needs), the sums are exact i32 like the other sets' (|sum|
// <= K * 127 * 127 < 2^31 for K < 133000): the same numbers.
//
// The process must have asked Linux for the tile state (arch_prctl ARCH_REQ_XCOMP_PERM,
// bundle/cpu_features.py's request_amx) before any tile instruction runs, or it dies of SIGILL.

#define IREE_GLM_AMX_MATRIX_KERNEL
#include "../x86_64_avx512/int8.c"

// A chunk of AMX_CHUNK_K k of up to 2 weight tiles is regrouped once into B tiles (16 KB, in
// L1); then blocks of 16 rows of x run over it into 2 C tiles (16 rows x 16 outputs each). Sums
// of other chunks wait in `acc` as i32 (tiles load and store them). A block of fewer rows uses
// its own A and C tiles, configured with that many rows: one configuration per call.
// A call takes up to AMX_MAX_ROWS rows of x, not the other sets' 64: at 64 rows a call, AMX
// multiplies faster than the weights (read once per call) arrive (kernels.md).
enum { AMX_CHUNK_K = 512, TILE_BYTES = 1024, ACC_STRIDE = 128, AMX_MAX_ROWS = 256 };  // ACC_STRIDE: bytes of acc's rows (2 C tiles)

// 8 k of a weight tile (128 bytes: k0..k7 x 16 rows) -> 2 rows of a B tile: row r's bytes
// k0 k2 k4 k6 in the first's lane r, k1 k3 k5 k7 in the second's (interleave8's numbers), one
// vpermt2b each (AVX-512 VBMI) instead of interleave8's unpacks. `pick`: pick_indices().
static inline void regroup_b(const int8_t *w, const __m512i pick[2], int8_t *b) {
  const __m512i lo = _mm512_loadu_si512((const void *)w), hi = _mm512_loadu_si512((const void *)(w + 64));
  _mm512_store_si512((void *)b, _mm512_permutex2var_epi8(lo, pick[0], hi));
  _mm512_store_si512((void *)(b + 64), _mm512_permutex2var_epi8(lo, pick[1], hi));
}

// Byte 4r + i of the even row is k = 2i of row r: index 16 * 2i + r of the 128 bytes (odd: 2i + 1).
static inline void pick_indices(__m512i pick[2]) {
  const __m512i r = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  const __m512i base = _mm512_add_epi32(_mm512_mullo_epi32(r, _mm512_set1_epi32(0x01010101)),  // r in every byte ...
                                        _mm512_set1_epi32(0x60402000));                         // ... + 32 i in byte i
  pick[0] = base;
  pick[1] = _mm512_add_epi8(base, _mm512_set1_epi8(16));
}

#include "tile_config.h"

// Tiles: 0 A (16 rows), 1 A (`tail` rows), 2 and 3 B, 4 and 5 C of 16 rows, 6 and 7 C of `tail` rows.
static inline void configure(int tail) {
  const int rows[8] = {16, tail, 16, 16, 16, 16, tail, tail}, colsb[8] = {64, 64, 64, 64, 64, 64, 64, 64};
  load_tile_config(rows, colsb);
}

// One block of rows (A tile `A`, C tiles C0 and C1; C1 only when nt == 2) over a regrouped chunk
// `wb` of `steps` 64-k steps; C starts at zero (`first`) or from `acc` (i32, ACC_STRIDE bytes a row).
#define RUN_BLOCK(A, C0, C1, x, stride, wb, steps, acc, first, nt)                        \
  do {                                                                                    \
    if (first) {                                                                          \
      _tile_zero(C0);                                                                     \
      if (nt == 2) _tile_zero(C1);                                                        \
    } else {                                                                              \
      _tile_loadd(C0, acc, ACC_STRIDE);                                                   \
      if (nt == 2) _tile_loadd(C1, acc + LANES, ACC_STRIDE);                              \
    }                                                                                     \
    for (size_t s = 0; s < steps; ++s) {                                                  \
      _tile_loadd(A, x + 64 * s, stride);                                                 \
      _tile_loadd(2, wb + 2 * s * TILE_BYTES, 64);                                        \
      _tile_dpbssd(C0, A, 2);                                                             \
      if (nt == 2) {                                                                      \
        _tile_loadd(3, wb + (2 * s + 1) * TILE_BYTES, 64);                                \
        _tile_dpbssd(C1, A, 3);                                                           \
      }                                                                                   \
    }                                                                                     \
    _tile_stored(C0, acc, ACC_STRIDE);                                                    \
    if (nt == 2) _tile_stored(C1, acc + LANES, ACC_STRIDE);                               \
  } while (0)

// Rows m_begin..m_end of x (1..AMX_MAX_ROWS) x weight tiles t_begin..t_end (int8_matmul.h's
// iree_glm_int8_matmul_workgroup clamps the ranges and calls this).
static void matmul_rows(const int8_t *xq, const int8_t *q, float *y, size_t tiles, size_t k, size_t t_begin, size_t t_end,
                        size_t m_begin, size_t m_end) {
  const size_t stride = xq_row_bytes(k), n = tiles * LANES, rows = m_end - m_begin, full = rows / 16 * 16;
  const int8_t *x = xq + m_begin * stride;
  int8_t wb[AMX_CHUNK_K / 64 * 2 * TILE_BYTES] __attribute__((aligned(64)));  // per 64 k: B tiles of weight tiles 0, 1
  int32_t acc[AMX_MAX_ROWS][2 * LANES] __attribute__((aligned(64)));
  __m512i pick[2];
  pick_indices(pick);
  configure((int)(rows - full));
  for (size_t t0 = t_begin; t0 < t_end; t0 += 2) {
    const int nt = t_end - t0 < 2 ? 1 : 2;
    for (size_t k0 = 0; k0 < k; k0 += AMX_CHUNK_K) {
      const size_t kc = k - k0 < AMX_CHUNK_K ? k - k0 : AMX_CHUNK_K, steps = (kc + 63) / 64;
      for (int j = 0; j < nt; ++j) {
        const int8_t *tile = q + (t0 + j) * k * LANES + k0 * LANES;
        for (size_t s = 0; s < kc / 8; ++s)  // 8 k = 2 rows of a B tile
          regroup_b(tile + 8 * s * LANES, pick, wb + (2 * (s / 8) + j) * TILE_BYTES + 128 * (s % 8));
        if (kc % 64)  // K = 64 j + 32: the last B tile's rows past K are zero, so A's bytes there (the row scale) add nothing
          for (int r = 8; r < 16; ++r)
            _mm512_store_si512((void *)(wb + (2 * (steps - 1) + j) * TILE_BYTES + 64 * r), _mm512_setzero_si512());
      }
      const int first = k0 == 0;
      size_t r = 0;
      for (; r < full; r += 16) {
        if (nt == 2) RUN_BLOCK(0, 4, 5, x + r * stride + k0, stride, wb, steps, acc[r], first, 2);
        else RUN_BLOCK(0, 4, 5, x + r * stride + k0, stride, wb, steps, acc[r], first, 1);
      }
      if (r < rows) {
        if (nt == 2) RUN_BLOCK(1, 6, 7, x + r * stride + k0, stride, wb, steps, acc[r], first, 2);
        else RUN_BLOCK(1, 6, 7, x + r * stride + k0, stride, wb, steps, acc[r], first, 1);
      }
    }
    for (size_t r = 0; r < rows; ++r) {
      const __m512 scale = _mm512_set1_ps(*(const float *)(x + r * stride + k));
      for (int j = 0; j < nt; ++j)
        _mm512_storeu_ps(y + (m_begin + r) * n + (t0 + j) * LANES,
                         _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512((const void *)(acc[r] + j * LANES))), scale));
    }
  }
  _tile_release();
}

#define IREE_GLM_MATMUL_MAX_ROWS AMX_MAX_ROWS
#include "../int8_matmul.h"
