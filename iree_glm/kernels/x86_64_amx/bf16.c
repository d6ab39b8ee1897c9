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

enum {
  LANES = 16,             // output rows of a weight tile
  KSTEP = 32,             // k per tile product (16 pairs)
  TILE_BYTES = 1024,      // one B tile: 32 k of a weight tile
  CHUNK_STEPS = 8,        // k steps of a weight-tile pair kept in L1 while all row blocks run over it (16 KB)
  MAX_ROWS = 256,         // rows of x per matrix-kernel call (the weights are read once per call)
  MAX_K = 16384,          // the matrix-vector kernel keeps x's bf16 pairs on the stack
};

#ifndef PREFETCH_AHEAD
#define PREFETCH_AHEAD 1024
#endif

static inline size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

static inline size_t padded_k(size_t k) { return (k + KSTEP - 1) / KSTEP * KSTEP; }

// Bytes of one converted row of x: K bf16, zero-padded to a multiple of 32 k.
static inline size_t xb_row_bytes(size_t k) { return 2 * padded_k(k); }

// k floats -> padded_k(k) bf16 (round to nearest even), zeros past k.
static void convert_row(const float *x, size_t k, uint16_t *out) {
  for (size_t i = 0; i < padded_k(k); i += 32) {
    const size_t left = k > i ? k - i : 0;
    const __mmask16 lo = left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1);
    const __mmask16 hi = left >= 32 ? 0xFFFF : left > 16 ? (__mmask16)((1u << (left - 16)) - 1) : 0;
    const __m512 a = _mm512_maskz_loadu_ps(lo, x + i), b = _mm512_maskz_loadu_ps(hi, x + i + 16);
    _mm512_storeu_si512((void *)(out + i), (__m512i)_mm512_cvtne2ps_pbh(b, a));
  }
}

// Rows row_begin..row_end of x [m, k] f32 -> rows of xb_row_bytes(k) (the prompt kernel's input).
void iree_glm_bf16_convert_workgroup(MEMREF(const float, x), MEMREF(int8_t, xb), size_t m, size_t k, size_t row_begin,
                                     size_t row_end) {
  MEMREF_START(x); MEMREF_START(xb);
  for (size_t r = row_begin; r < min_size(row_end, m); ++r) convert_row(x + r * k, k, (uint16_t *)(xb + r * xb_row_bytes(k)));
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
    convert_row(x + r * k, k, (uint16_t *)xp);
    matvec_row(xp, w, y + r * tiles * LANES, k2, t_begin, t_end);
  }
}

// ---- matrix kernel (prompts) ----

// Palette 1's 64-byte configuration (Intel SDM, LDTILECFG).
struct tile_config {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// Tiles: 0 A of block 0 (`r0` rows), 1 A of block 1 (`r1` rows, 0: none), 2 and 3 B, 4 and 5 C
// of block 0, 6 and 7 C of block 1. One configuration per phase (ldtilecfg zeroes the tiles).
static inline void configure(int r0, int r1) {
  struct tile_config c __attribute__((aligned(64)));
  _mm512_store_si512((void *)&c, _mm512_setzero_si512());
  c.palette = 1;
  const int rows[8] = {r0, r1, 16, 16, r0, r0, r1, r1};
  for (int t = 0; t < 8; ++t) {
    c.rows[t] = (uint8_t)rows[t];
    c.colsb[t] = rows[t] ? 64 : 0;
  }
  _tile_loadconfig(&c);
}

// A phase: `pairs` pairs of row blocks (block 1 only if `second`) starting at x (bf16 rows of
// `stride` bytes) and y (f32 rows of n) over weight tiles t_begin..t_end. For each pair of
// weight tiles and each chunk of CHUNK_STEPS k steps (16 KB of B, in L1), every block pair runs
// its steps; sums between chunks wait in `acc` (f32, 32 a row), the last chunk's go to y.
static void phase(const uint8_t *x, size_t stride, const uint16_t *w, float *y, size_t n, size_t k, size_t t_begin,
                  size_t t_end, size_t pairs, int second, float (*acc)[2 * LANES]) {
  const size_t k2 = (k + 1) / 2, steps = padded_k(k) / KSTEP, tile_pairs = k2 * 2 * LANES;
  const size_t partial = k2 % 16;  // pairs of the last step inside the tile (0: full)
  uint8_t last[2][TILE_BYTES] __attribute__((aligned(64)));  // the last step's B tiles, zero past K
  for (size_t t0 = t_begin; t0 < t_end; t0 += 2) {
    const int nt = t_end - t0 < 2 ? 1 : 2;
    const uint8_t *wt[2] = {(const uint8_t *)(w + t0 * tile_pairs), (const uint8_t *)(w + (t0 + nt - 1) * tile_pairs)};
    if (partial)
      for (int j = 0; j < nt; ++j) {
        const uint8_t *src = wt[j] + (steps - 1) * TILE_BYTES;
        for (size_t b = 0; b < TILE_BYTES; b += 64)
          _mm512_store_si512((void *)(last[j] + b), b < 64 * partial ? _mm512_loadu_si512((const void *)(src + b)) : _mm512_setzero_si512());
      }
    for (size_t s0 = 0; s0 < steps; s0 += CHUNK_STEPS) {
      const size_t s1 = steps - s0 < CHUNK_STEPS ? steps : s0 + CHUNK_STEPS;
      const int first = s0 == 0, final = s1 == steps;
      for (size_t p = 0; p < pairs; ++p) {
        const uint8_t *xa = x + 32 * p * stride;
        float *a0 = acc[32 * p], *a1 = acc[32 * p + 16];
        float *y0 = y + 32 * p * n + t0 * LANES, *y1 = y0 + 16 * n;
        if (first) {
          _tile_zero(4); _tile_zero(5);
          if (second) { _tile_zero(6); _tile_zero(7); }
        } else {
          _tile_loadd(4, a0, 128); _tile_loadd(5, a0 + LANES, 128);
          if (second) { _tile_loadd(6, a1, 128); _tile_loadd(7, a1 + LANES, 128); }
        }
        for (size_t s = s0; s < s1; ++s) {
          const int tail = partial && s == steps - 1;
          _tile_loadd(2, tail ? last[0] : wt[0] + s * TILE_BYTES, 64);
          _tile_loadd(3, tail ? last[1] : wt[1] + s * TILE_BYTES, 64);  // nt == 1: tile 0 again, unused
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
          _tile_stored(4, y0, 4 * n);
          if (nt == 2) _tile_stored(5, y0 + LANES, 4 * n);
          if (second) {
            _tile_stored(6, y1, 4 * n);
            if (nt == 2) _tile_stored(7, y1 + LANES, 4 * n);
          }
        } else {
          _tile_stored(4, a0, 128); _tile_stored(5, a0 + LANES, 128);
          if (second) { _tile_stored(6, a1, 128); _tile_stored(7, a1 + LANES, 128); }
        }
      }
    }
  }
}

// y [m, N] for rows m_begin..m_end of the converted x (at most MAX_ROWS) and weight tiles
// t_begin..t_end (both clamped): pairs of full 16-row blocks, then the rest (< 32 rows) with
// tiles configured for its row counts.
void iree_glm_bf16_matmul_workgroup(MEMREF(const int8_t, xb), MEMREF(const uint16_t, w), MEMREF(float, y), size_t m,
                                    size_t tiles, size_t k, size_t t_begin, size_t t_end, size_t m_begin, size_t m_end) {
  MEMREF_START(xb); MEMREF_START(w); MEMREF_START(y);
  t_end = min_size(t_end, tiles);
  m_end = min_size(min_size(m_end, m), m_begin + MAX_ROWS);
  if (m_end <= m_begin || t_end <= t_begin) return;
  float acc[MAX_ROWS][2 * LANES] __attribute__((aligned(64)));
  const size_t stride = xb_row_bytes(k), n = tiles * LANES, rows = m_end - m_begin, pairs = rows / 32;
  const uint8_t *x = (const uint8_t *)xb + m_begin * stride;
  float *yr = y + m_begin * n;
  if (pairs) {
    configure(16, 16);
    phase(x, stride, w, yr, n, k, t_begin, t_end, pairs, 1, acc);
  }
  const size_t rest = rows - 32 * pairs;
  if (rest) {
    const int r0 = rest < 16 ? (int)rest : 16, r1 = (int)rest - r0;
    configure(r0, r1);
    phase(x + 32 * pairs * stride, stride, w, yr + 32 * pairs * n, n, k, t_begin, t_end, 1, r1 > 0, acc);
  }
  _tile_release();
}
