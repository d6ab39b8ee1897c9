// int4 x f32 matrix products for x86-64 with AMX (AMX-TILE, AMX-INT8) besides AVX-512 VNNI,
// linked into IREE dispatches. The same weight layout, quantized rows of x and entry points as
// x86_64_avx512/int4.c, which this file includes for everything but the prompt (matrix) kernel
// (decode reads every weight once: tiles do not help it).
//
// y[m, n] = sum_g scale[n, g] * sum_{k in group g} w[n, k] * x[m, k]
//
// Per block of 32 k, tdpbssd multiplies 16 rows of x (an A tile of 32 bytes a row, x's
// quantized block as stored) by 16 weight rows (a B tile of 8 rows: per 4 k, 4 bytes of each
// weight row), signed by signed: the nibbles less 8 are the weights themselves, so the i32 sum
// is exactly sum w * x, the number the AVX-512 kernel's vpdpbusd sum less 8 * sum(x) gives.
// Then, as the AVX-512 kernel, per block one conversion and one FMA of x's block scale times
// the group scale, accumulated per chunk of CHUNK_K in the same order and added into y the same
// way: the results are the AVX-512 set's bit for bit (tests compare them).
//
// x's block scales differ per row and block, so the i32 sums cannot run on across blocks in the
// tiles as the int8 kernel's do: each block's C tile goes to memory and through that float step.
//
// The process must have asked Linux for the tile state (bundle/cpu_features.py's request_amx)
// before any tile instruction runs, or it dies of SIGILL.

#define IREE_GLM_AMX_MATRIX_KERNEL
#include "../x86_64_avx512/int4.c"

// A call takes up to AMX_MAX_ROWS rows of x (kernels/toolchain.py's X86_64_AMX.matmul_rows):
// it unpacks each strip of weights once for all of them.
enum { AMX_MAX_ROWS = 256, B_TILE = 8 * 64, LAG = 4, RING = 2 * LAG, CHUNK_BLOCKS = CHUNK_K / BLOCK };  // B_TILE: bytes of one block's B tile; LAG, RING: see row_tile

#include "tile_config.h"

// Tiles: 0 and 1 A (`rows` x 32 bytes), 2 and 3 B (8 rows x 64 bytes), 4 to 7 C (`rows` x 16
// i32): blocks take them in turn, so that 4 blocks' products can be in flight. One
// configuration a call, or three where a call ends in a partial row tile.
static inline void configure(int rows) {
  const int shape_rows[8] = {rows, rows, 8, 8, rows, rows, rows, rows}, colsb[8] = {BLOCK, BLOCK, 64, 64, 64, 64, 64, 64};
  load_tile_config(shape_rows, colsb);
}

// pack_strip's vectors of a block (2p: the low nibbles of bytes 4p..4p+3, k 4p..4p+3 of x's
// block; 2p + 1: their high nibbles, k 16 + 4p..) -> the block's B tile in place: row q holds k
// 4q..4q+3 of every weight row, as the nibbles less 8.
static inline void to_b_tiles(strip_vector *strip, size_t blocks) {
  const __m512i eight = _mm512_set1_epi8(8);
  for (size_t c = 0; c < blocks; ++c) {
    strip_vector v[8];
    for (int j = 0; j < 8; ++j) v[j] = strip[c * 8 + j];
    for (int p = 0; p < 4; ++p) {
      strip[c * 8 + p] = _mm512_sub_epi8(v[2 * p], eight);
      strip[c * 8 + 4 + p] = _mm512_sub_epi8(v[2 * p + 1], eight);
    }
  }
}

// tilestored naming what it writes: GCC's _tile_stored clobbers all memory, which made the
// float accumulators of the block step go to the stack and back around every block.
#define TILE_STORED(C, buf) \
  __asm__ volatile("tilestored %%tmm" #C ", (%1,%2,1)" : "=m"(*(int32_t(*)[16 * 16])(buf)) : "r"(buf), "r"((long)64))

// Block c's sums (of the chunk from k0) for the rows of x from `x` in A tile `A`, with B tile
// `B`, into C tile `C`, stored to `buf` (16 i32 a row).
#define BLOCK_SUMS(A, B, C, c, buf)                              \
  do {                                                           \
    _tile_zero(C);                                               \
    _tile_loadd(A, x + k0 + (c) * BLOCK, stride);                \
    _tile_loadd(B, (const int8_t *)strip + (c) * B_TILE, 64);    \
    _tile_dpbssd(C, A, B);                                       \
    TILE_STORED(C, buf);                                         \
  } while (0)

// acc[i] += block c's sums of row i (buf) times the group scales `sg` times row i's block scale
// (dx[i * CHUNK_BLOCKS + c], copied together per row tile: one base register and constant
// offsets; read where they lie in x's rows, each row's offset took a register, and they spilled).
static inline __attribute__((always_inline)) void scale_block(__m512 *acc, const int32_t *buf, __m512 sg, const float *dx,
                                                              size_t c, const int tm) {
  for (int i = 0; i < tm; ++i) {
    const __m512 d = _mm512_set1_ps(dx[i * CHUNK_BLOCKS + c]);
    acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512((const void *)(buf + 16 * i))), _mm512_mul_ps(sg, d), acc[i]);
  }
}

// The sums of tm (<= 16, the rows the tiles are configured for) rows of x from `x` over the
// chunk's blocks, software-pipelined: each block's tile product is issued LAG blocks before its
// float step, which reads sums stored long before, so the tile unit and the vector units work at
// once (4 C tiles in turn). Then each row's 16 outputs into y (tile_store: stored for k0 = 0,
// added after).
static inline __attribute__((always_inline)) void row_tile(const int8_t *x, size_t stride, size_t k, size_t k0, size_t blocks,
                                                           const strip_vector *strip, const float *scales, size_t per_group,
                                                           float *out_y, size_t n, size_t cols, const int tm) {
  float dx[16 * CHUNK_BLOCKS] __attribute__((aligned(64)));  // the rows' block scales of the chunk, row after row
  for (int i = 0; i < tm; ++i)
    for (size_t c = 0; c < blocks; c += 16) {
      const __mmask16 live = blocks - c < 16 ? (__mmask16)((1u << (blocks - c)) - 1) : (__mmask16)0xFFFF;
      _mm512_mask_storeu_ps(dx + i * CHUNK_BLOCKS + c, live, _mm512_maskz_loadu_ps(live, (const float *)(x + i * stride + k) + k0 / BLOCK + c));
    }
  int32_t buf[RING][16 * 16] __attribute__((aligned(64)));  // block c's sums in buf[c % RING]
  __m512 acc[16];
  for (int i = 0; i < tm; ++i) acc[i] = _mm512_setzero_ps();
#define SCALE(c) scale_block(acc, buf[(c) % RING], _mm512_load_ps(scales + (c) / per_group * STRIP), dx, c, tm)
  size_t c = 0;
  for (; c < LAG && c < blocks; ++c) BLOCK_SUMS(0, 2, 4, c, buf[c % RING]);
  for (; c + 4 <= blocks; c += 4) {  // c - LAG: the block whose float step is due; C tiles in turn
    BLOCK_SUMS(0, 2, 4, c, buf[c % RING]);
    SCALE(c - LAG);
    BLOCK_SUMS(1, 3, 5, c + 1, buf[(c + 1) % RING]);
    SCALE(c + 1 - LAG);
    BLOCK_SUMS(0, 2, 6, c + 2, buf[(c + 2) % RING]);
    SCALE(c + 2 - LAG);
    BLOCK_SUMS(1, 3, 7, c + 3, buf[(c + 3) % RING]);
    SCALE(c + 3 - LAG);
  }
  for (; c < blocks; ++c) {
    BLOCK_SUMS(0, 2, 4, c, buf[c % RING]);
    SCALE(c - LAG);
  }
  for (c = blocks > LAG ? blocks - LAG : 0; c < blocks; ++c) SCALE(c);
#undef SCALE
  for (int i = 0; i < tm; ++i) {
    float out[STRIP];
    _mm512_storeu_ps(out, acc[i]);
    tile_store(out_y + i * n, out, cols, k0);
  }
}

// Rows m_begin..m_end of x (1..AMX_MAX_ROWS) x weight rows n_begin..n_end, a strip of STRIP
// weight rows and a chunk of K at a time (../int4_matmul.h's iree_glm_int4_matmul_workgroup
// clamps the ranges and calls this).
static void matmul_rows(const int8_t *xq, const int8_t *q, const uint16_t *s, float *y, size_t n, size_t k, size_t group,
                        size_t n_begin, size_t n_end, size_t m_begin, size_t m_end) {
  const size_t stride = xq_row_bytes(k), per_group = group / BLOCK;
  const size_t chunk = CHUNK_K / group * group;  // whole groups, the AVX-512 kernel's chunks
  const size_t rows = m_end - m_begin, full = rows / 16 * 16, tail = rows - full;
  strip_vector strip[CHUNK_K / BLOCK * 8];  // the chunk's B tiles, block after block
  float scales[CHUNK_K / BLOCK * STRIP] __attribute__((aligned(64)));
  configure(full ? 16 : (int)tail);
  for (size_t n0 = n_begin; n0 < n_end; n0 += STRIP) {
    const size_t cols = n_end - n0 < STRIP ? n_end - n0 : STRIP;
    for (size_t k0 = 0; k0 < k; k0 += chunk) {
      const size_t kc = k - k0 < chunk ? k - k0 : chunk, blocks = kc / BLOCK;
      pack_strip(q, s, n_end, n0, k, group, k0, kc, strip, scales);
      to_b_tiles(strip, blocks);
      __asm__ volatile("" ::: "memory");  // the B tiles are in memory before a tile load reads them (it names no memory)
      const int8_t *x = xq + m_begin * stride;
      float *out_y = y + m_begin * n + n0;
      for (size_t r = 0; r < full; r += 16)
        row_tile(x + r * stride, stride, k, k0, blocks, strip, scales, per_group, out_y + r * n, n, cols, 16);
      if (tail && full) configure((int)tail);  // the last rows' own tile shapes (none past m_end is read)
      if (tail) row_tile(x + full * stride, stride, k, k0, blocks, strip, scales, per_group, out_y + full * n, n, cols, (int)tail);
      if (tail && full) configure(16);
    }
  }
  _tile_release();
}

#define IREE_GLM_INT4_OWN_DRIVER
#define IREE_GLM_MATMUL_MAX_ROWS AMX_MAX_ROWS
#include "../int4_matmul.h"

// ---- the bf16 prompt path: weights widened to bf16, tdpbf16ps ----
//
// y[m, n] = sum_k bf16(scale[n, g] * (nibble - 8)) * bf16(x[m, k]), f32 sums.
//
// Per call (up to BF16_MAX_ROWS rows of x), each pair of weight tiles (32 rows) is widened
// WIDE_K elements at a time into bf16 B tiles (bf16_tiles.h's layout, 16 KB: in L1) and every
// row block of x runs over them; the next piece of K starts from y's sums. No per-block float
// step: x's rows are bf16 (bf16_convert_rows, a dispatch before), not int8 blocks with scales,
// so the sums run through K in the tiles. Not the AVX-512 set's numbers: x and the dequantized
// weights are rounded to bf16 (tests compare with float64 products of exactly those).

#include "bf16_tiles.h"

enum { WIDE_K = 256, WIDE_TILES = 2 };  // K and weight tiles widened at once: 16 KB of B tiles

// Rows row_begin..row_end of x [m, k] f32 -> bf16 rows of bf16_xb_row_bytes(k) (this path's input).
void iree_glm_int4_convert_bf16_workgroup(MEMREF(const float, x), MEMREF(int8_t, xb), size_t m, size_t k, size_t row_begin,
                                          size_t row_end) {
  MEMREF_START(x); MEMREF_START(xb);
  bf16_convert_rows(x, xb, m, k, row_begin, row_end);
}

// The same for x = silu(gate) * up of rows [gate | up] of gu [m, 2k] (k <= GLUE_MAX_K), as the
// int4 quantization's glue computes it.
void iree_glm_int4_convert_bf16_silu_mul_workgroup(MEMREF(const float, gu), MEMREF(int8_t, xb), size_t m, size_t k,
                                                   size_t row_begin, size_t row_end) {
  MEMREF_START(gu); MEMREF_START(xb);
  float x[GLUE_MAX_K] __attribute__((aligned(32)));
  for (size_t r = row_begin; r < row_end && r < m; ++r) {
    glue_silu_mul(gu + r * 2 * k, NULL, k, x);
    bf16_convert_row(x, k, (uint16_t *)(xb + r * bf16_xb_row_bytes(k)));
  }
}

// The same for x = RMSNorm(h) with weight w [k] (k <= GLUE_MAX_K).
void iree_glm_int4_convert_bf16_rms_norm_workgroup(MEMREF(const float, h), MEMREF(const float, w), MEMREF(int8_t, xb),
                                                   size_t m, size_t k, float eps, size_t row_begin, size_t row_end) {
  MEMREF_START(h); MEMREF_START(w); MEMREF_START(xb);
  float x[GLUE_MAX_K] __attribute__((aligned(32)));
  for (size_t r = row_begin; r < row_end && r < m; ++r) {
    glue_rms_norm(h + r * k, w, k, eps, x);
    bf16_convert_row(x, k, (uint16_t *)(xb + r * bf16_xb_row_bytes(k)));
  }
}

// Weight rows n0..n0+16 (zeros from n on), elements k0..k0+kc (whole groups) -> bf16 tile
// [kc / 2][16][2] at `out`. pack_strip gives, per block of 16 packed bytes, lane r = row r and
// 4 nibbles a byte lane; a group's byte i holds elements i (low nibble) and group/2 + i (high),
// so block c's vectors land at their elements' own pairs (natural k order, as x's bf16 rows).
static void widen_tile(const int8_t *q, const uint16_t *s, size_t n, size_t n0, size_t k, size_t group, size_t k0, size_t kc,
                       uint16_t *out) {
  strip_vector strip[WIDE_K / BLOCK * 8];
  float scales[WIDE_K / BLOCK * STRIP] __attribute__((aligned(64)));
  pack_strip(q, s, n, n0, k, group, k0, kc, strip, scales);
  const size_t half = group / 2;
  const __m512i byte = _mm512_set1_epi32(0xFF);
  // vcvtne2ps2bf16 gives the even k's 16 rows, then the odd k's: interleave to (even, odd) per row
  const __m512i pairs = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20,
                                         4, 19, 3, 18, 2, 17, 1, 16, 0);
  for (size_t c = 0; c < kc / BLOCK; ++c) {
    const size_t g = c * 16 / half, at = g * group + c * 16 % half;  // element of block c's byte 0 (low nibble)
    const __m512 sg = _mm512_load_ps(scales + g * STRIP), off = _mm512_mul_ps(sg, _mm512_set1_ps(-8.0f));
    for (int h = 0; h < 2; ++h)      // low nibbles, then high (half further on)
      for (int p = 0; p < 4; ++p) {  // bytes 4p..4p+3: elements at + 4p + j
        const __m512i v = strip[c * 8 + 2 * p + h];
        for (int j = 0; j < 4; j += 2) {  // (q - 8) * scale is exact in f32 (4 by 11 bits): one rounding, to bf16
          const __m512 even = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(v, 8 * j), byte)), sg, off);
          const __m512 odd = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(v, 8 * j + 8), byte)), sg, off);
          const size_t e = at + h * half + 4 * p + j;  // the even element
          _mm512_store_si512((void *)(out + e * BF16_LANES),
                             _mm512_permutexvar_epi16(pairs, (__m512i)_mm512_cvtne2ps_pbh(odd, even)));
        }
      }
  }
}

// y[m, n] for rows m_begin..m_end of the bf16 rows of x and weight rows n_begin..n_end (clamped;
// at most BF16_MAX_ROWS rows a call). K goes in pieces of whole groups, so groups are multiples
// of 32 up to WIDE_K (kernels/int4.py's `fits_bf16`; others write nothing). Weight tiles that
// would reach past n_end go through `edge` (tile stores write 16 columns), their columns copied
// to y at the end.
void iree_glm_int4_bf16_matmul_workgroup(MEMREF(const int8_t, xb), MEMREF(const int8_t, q), MEMREF(const uint16_t, s),
                                         MEMREF(float, y), size_t m, size_t n, size_t k, size_t group, size_t n_begin,
                                         size_t n_end, size_t m_begin, size_t m_end) {
  MEMREF_START(xb); MEMREF_START(q); MEMREF_START(s); MEMREF_START(y);
  if (n_end > n) n_end = n;
  if (m_end > m) m_end = m;
  if (m_end > m_begin + BF16_MAX_ROWS) m_end = m_begin + BF16_MAX_ROWS;
  if (m_end <= m_begin || n_end <= n_begin || group % BLOCK || group > WIDE_K || k % group) return;
  uint16_t wide[WIDE_TILES * WIDE_K * BF16_LANES] __attribute__((aligned(64)));
  float edge[BF16_MAX_ROWS][WIDE_TILES * BF16_LANES] __attribute__((aligned(64)));
  const size_t stride = bf16_xb_row_bytes(k), rows = m_end - m_begin, chunk = WIDE_K / group * group;
  const uint8_t *x = (const uint8_t *)xb + m_begin * stride;
  for (size_t n0 = n_begin; n0 < n_end; n0 += WIDE_TILES * BF16_LANES) {
    const size_t cols = n_end - n0 < WIDE_TILES * BF16_LANES ? n_end - n0 : WIDE_TILES * BF16_LANES;
    const size_t tiles = (cols + BF16_LANES - 1) / BF16_LANES;
    const int ragged = tiles * BF16_LANES != cols;
    float *out = ragged ? edge[0] : y + m_begin * n + n0;
    const size_t out_n = ragged ? WIDE_TILES * BF16_LANES : n;
    for (size_t k0 = 0; k0 < k; k0 += chunk) {
      const size_t kc = k - k0 < chunk ? k - k0 : chunk;
      for (size_t t = 0; t < tiles; ++t) widen_tile(q, s, n_end, n0 + t * BF16_LANES, k, group, k0, kc, wide + t * kc * BF16_LANES);
      __asm__ volatile("" ::: "memory");  // the B tiles are in memory before a tile load reads them (it names no memory)
      bf16_rows(x + 2 * k0, stride, wide, out, out_n, kc, 0, tiles, rows, 0, k0 > 0);
    }
    if (ragged)
      for (size_t r = 0; r < rows; ++r)
        for (size_t c = 0; c < cols; ++c) y[(m_begin + r) * n + n0 + c] = edge[r][c];
  }
  _tile_release();
}
