// The AMX bf16 tile code shared by the bf16 kernel (bf16.c, weights stored bf16) and the int4
// kernel's bf16 prompt path (int4.c, weights widened to bf16 per chunk of K): rows of x rounded to
// bf16, and the tdpbf16ps loop over weight tiles in the layout [tiles, K2, 16, 2] (per pair of k,
// 16 output rows x (k = 2p, 2p + 1): per 32 k one 1 KB B tile, read as stored).
//
// Names carry a BF16_ / bf16_ prefix: the int4 file includes this beside the AVX-512 set's code.

#ifndef IREE_GLM_AMX_BF16_TILES_H_
#define IREE_GLM_AMX_BF16_TILES_H_

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "tile_config.h"

enum {
  BF16_LANES = 16,         // output rows of a weight tile
  BF16_KSTEP = 32,         // k per tile product (16 pairs)
  BF16_TILE_BYTES = 1024,  // one B tile: 32 k of a weight tile
  BF16_CHUNK_STEPS = 8,    // k steps of a weight-tile pair kept in L1 while all row blocks run over it (16 KB)
  BF16_MAX_ROWS = 256,     // rows of x per matrix-kernel call (the weights are read once per call)
};

static inline size_t bf16_padded_k(size_t k) { return (k + BF16_KSTEP - 1) / BF16_KSTEP * BF16_KSTEP; }

// Bytes of one converted row of x: K bf16, zero-padded to a multiple of 32 k.
static inline size_t bf16_xb_row_bytes(size_t k) { return 2 * bf16_padded_k(k); }

// k floats -> bf16_padded_k(k) bf16 (round to nearest even, as IREE's arith.truncf; bf16
// denormals as zero, as the tile products), zeros past k.
static void bf16_convert_row(const float *x, size_t k, uint16_t *out) {
  for (size_t i = 0; i < bf16_padded_k(k); i += 32) {
    const size_t left = k > i ? k - i : 0;
    const __mmask16 lo = left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1);
    const __mmask16 hi = left >= 32 ? 0xFFFF : left > 16 ? (__mmask16)((1u << (left - 16)) - 1) : 0;
    const __m512 a = _mm512_maskz_loadu_ps(lo, x + i), b = _mm512_maskz_loadu_ps(hi, x + i + 16);
    _mm512_storeu_si512((void *)(out + i), (__m512i)_mm512_cvtne2ps_pbh(b, a));
  }
}

// Rows row_begin..row_end of x [m, k] f32 -> rows of bf16_xb_row_bytes(k) (a matrix kernel's input).
static inline void bf16_convert_rows(const float *x, int8_t *xb, size_t m, size_t k, size_t row_begin, size_t row_end) {
  for (size_t r = row_begin; r < row_end && r < m; ++r) bf16_convert_row(x + r * k, k, (uint16_t *)(xb + r * bf16_xb_row_bytes(k)));
}

// Tiles: 0 A of block 0 (`r0` rows), 1 A of block 1 (`r1` rows, 0: none), 2 and 3 B, 4 and 5 C
// of block 0, 6 and 7 C of block 1. One configuration per phase (ldtilecfg zeroes the tiles).
static inline void bf16_configure(int r0, int r1) {
  const int rows[8] = {r0, r1, 16, 16, r0, r0, r1, r1}, colsb[8] = {64, 64, 64, 64, 64, 64, 64, 64};
  load_tile_config(rows, colsb);
}

// A phase: `pairs` pairs of row blocks (block 1 only if `second`) starting at x (bf16 rows of
// `stride` bytes) and y (f32 rows of n) over weight tiles t_begin..t_end of `w` (k2 pairs of k a
// tile). For each pair of weight tiles and each chunk of BF16_CHUNK_STEPS k steps (16 KB of B, in
// L1), every block pair runs its steps; sums between chunks wait in `acc` (f32, 32 a row; unused
// where K is one chunk), the last chunk's go to y. With `accumulate` the sums start from y's
// values (a caller walking K in pieces), else from zero.
// The block pair's C tiles (4-5: block 0, 6-7: block 1; 5 and 7 the second weight tile) loaded
// from or stored to y by `op`, _tile_loadd or _tile_stored.
#define Y_TILES(op)                                   \
  do {                                                \
    op(4, y0, 4 * n);                                 \
    if (nt == 2) op(5, y0 + BF16_LANES, 4 * n);       \
    if (second) {                                     \
      op(6, y1, 4 * n);                               \
      if (nt == 2) op(7, y1 + BF16_LANES, 4 * n);     \
    }                                                 \
  } while (0)

static void bf16_phase(const uint8_t *x, size_t stride, const uint16_t *w, float *y, size_t n, size_t k, size_t t_begin,
                       size_t t_end, size_t pairs, int second, float (*acc)[2 * BF16_LANES], int accumulate) {
  const size_t k2 = (k + 1) / 2, steps = bf16_padded_k(k) / BF16_KSTEP, tile_pairs = k2 * 2 * BF16_LANES;
  const size_t partial = k2 % 16;  // pairs of the last step inside the tile (0: full)
  uint8_t last[2][BF16_TILE_BYTES] __attribute__((aligned(64)));  // the last step's B tiles, zero past K
  for (size_t t0 = t_begin; t0 < t_end; t0 += 2) {
    const int nt = t_end - t0 < 2 ? 1 : 2;
    const uint8_t *wt[2] = {(const uint8_t *)(w + t0 * tile_pairs), (const uint8_t *)(w + (t0 + nt - 1) * tile_pairs)};
    if (partial)
      for (int j = 0; j < nt; ++j) {
        const uint8_t *src = wt[j] + (steps - 1) * BF16_TILE_BYTES;
        for (size_t b = 0; b < BF16_TILE_BYTES; b += 64)
          _mm512_store_si512((void *)(last[j] + b), b < 64 * partial ? _mm512_loadu_si512((const void *)(src + b)) : _mm512_setzero_si512());
      }
    for (size_t s0 = 0; s0 < steps; s0 += BF16_CHUNK_STEPS) {
      const size_t s1 = steps - s0 < BF16_CHUNK_STEPS ? steps : s0 + BF16_CHUNK_STEPS;
      const int first = s0 == 0, final = s1 == steps;
      for (size_t p = 0; p < pairs; ++p) {
        const uint8_t *xa = x + 32 * p * stride;
        float *y0 = y + 32 * p * n + t0 * BF16_LANES, *y1 = y0 + 16 * n;
        if (first && !accumulate) {
          _tile_zero(4); _tile_zero(5);
          if (second) { _tile_zero(6); _tile_zero(7); }
        } else if (first) {
          Y_TILES(_tile_loadd);
        } else {
          float *a0 = acc[32 * p], *a1 = acc[32 * p + 16];
          _tile_loadd(4, a0, 128); _tile_loadd(5, a0 + BF16_LANES, 128);
          if (second) { _tile_loadd(6, a1, 128); _tile_loadd(7, a1 + BF16_LANES, 128); }
        }
        for (size_t s = s0; s < s1; ++s) {
          const int tail = partial && s == steps - 1;
          _tile_loadd(2, tail ? last[0] : wt[0] + s * BF16_TILE_BYTES, 64);
          _tile_loadd(3, tail ? last[1] : wt[1] + s * BF16_TILE_BYTES, 64);  // nt == 1: tile 0 again, unused
          _tile_loadd(0, xa + s * 64, stride);
          _tile_dpbf16ps(4, 0, 2);
          if (nt == 2) _tile_dpbf16ps(5, 0, 3);
          if (second) {
            _tile_loadd(1, xa + 16 * stride + s * 64, stride);
            _tile_dpbf16ps(6, 1, 2);
            if (nt == 2) _tile_dpbf16ps(7, 1, 3);
          }
        }
        if (final) {
          Y_TILES(_tile_stored);
        } else {
          float *a0 = acc[32 * p], *a1 = acc[32 * p + 16];
          _tile_stored(4, a0, 128); _tile_stored(5, a0 + BF16_LANES, 128);
          if (second) { _tile_stored(6, a1, 128); _tile_stored(7, a1 + BF16_LANES, 128); }
        }
      }
    }
  }
}

// `rows` (<= BF16_MAX_ROWS) converted rows of x from `x` times weight tiles t_begin..t_end of
// `w` into y (f32 rows of n): pairs of full 16-row blocks, then the rest (< 32 rows) with tiles
// configured for its row counts (no row past `rows` is read or written). Leaves the tiles
// configured: the caller releases them.
static void bf16_rows(const uint8_t *x, size_t stride, const uint16_t *w, float *y, size_t n, size_t k, size_t t_begin,
                      size_t t_end, size_t rows, float (*acc)[2 * BF16_LANES], int accumulate) {
  const size_t pairs = rows / 32, rest = rows - 32 * pairs;
  if (pairs) {
    bf16_configure(16, 16);
    bf16_phase(x, stride, w, y, n, k, t_begin, t_end, pairs, 1, acc, accumulate);
  }
  if (rest) {
    const int r0 = rest < 16 ? (int)rest : 16, r1 = (int)rest - r0;
    bf16_configure(r0, r1);
    bf16_phase(x + 32 * pairs * stride, stride, w, y + 32 * pairs * n, n, k, t_begin, t_end, 1, r1 > 0, acc, accumulate);
  }
}

#undef Y_TILES

#endif  // IREE_GLM_AMX_BF16_TILES_H_
