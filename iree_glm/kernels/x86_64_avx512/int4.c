// int4 x f32 matrix products for x86-64 with AVX-512 (F, BW, VL) and VNNI, linked into IREE
// dispatches. The same weight layout, quantized rows of x and entry points as
// x86_64_avx2/int4.c, which this file includes for everything but the prompt (matrix) kernel
// (decode streams the weights as fast in its AVX2 form).
//
// y[m, n] = sum_g scale[n, g] * sum_{k in group g} w[n, k] * x[m, k]
//
// The nibbles (each the weight + 8, 0..15) are the unsigned operand of vpdpbusd and x's int8
// blocks the signed one, broadcast 4 bytes at a time: each instruction adds 4 products per row
// into an i32 lane, with no pair sums in i16 and no widening step. Each block's i32 sum starts
// at -8 * sum(x's block) (the nibbles' + 8, stored with x's quantized row), so after the block
// it is exactly sum w * x; then one conversion and one FMA (x's block scale times the group
// scale) per 16 outputs.

#include <stddef.h>
#include <stdint.h>

// Speculative verification's pairs of rows of x (x86_64_avx2/int4.c's verify kernel, below).
static inline __attribute__((always_inline)) void verify_pair512(const int8_t *q, const float *sf, size_t r, const int nw,
                                                                 const int8_t *xq, const float *dx, const float *off, size_t i,
                                                                 size_t k, size_t group, size_t n, float *y);
#define VERIFY_PAIR verify_pair512
#define IREE_GLM_OWN_MATRIX_KERNEL
#include "../x86_64_avx2/int4.c"

// Rows i and i + 1 of x in the two halves of 512-bit vectors, each half going through the AVX2
// verify_tile's operations lane for lane (vpdpbusd's 4-byte sums are vpmaddubsw + vpmaddwd's,
// exact integers; the same conversion, fmsub and FMA; the same horizontal sum per half): each
// row stays bit for bit the decode kernel's, at half the instructions per row.
static inline __attribute__((always_inline)) void verify_pair512(const int8_t *q, const float *sf, size_t r, const int nw,
                                                                 const int8_t *xq, const float *dx, const float *off, size_t i,
                                                                 size_t k, size_t group, size_t n, float *y) {
  const size_t per_group = group / BLOCK, groups = k / group, blocks = k / BLOCK, row_bytes = k / 2;
  const __m256i shifts = _mm256_setr_epi64x(0, 0, 4, 4);
  __m512 acc[4];
  for (int b = 0; b < 4; ++b) acc[b] = _mm512_setzero_ps();
  const int8_t *x0 = xq + i * k, *x1 = x0 + k;
  const float *d0 = dx + i * blocks, *d1 = d0 + blocks, *o0 = off + i * blocks, *o1 = o0 + blocks;
  for (size_t g = 0, c = 0; g < groups; ++g) {
    __m512 sg[4];
    for (int b = 0; b < nw; ++b) sg[b] = _mm512_set1_ps(sf[b * groups + g]);
    for (size_t end = c + per_group; c < end; ++c) {
      _mm_prefetch((const char *)(q + (r + 4) * row_bytes + c * 64), _MM_HINT_T0);  // the next quad, as decode
      const __m512i xv = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_load_si256((const __m256i *)(x0 + c * BLOCK))),
                                            _mm256_load_si256((const __m256i *)(x1 + c * BLOCK)), 1);
      const __m512 d = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_set1_ps(d0[c])), _mm256_castps_pd(_mm256_set1_ps(d1[c])), 1));
      const __m512 o = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_set1_ps(o0[c])), _mm256_castps_pd(_mm256_set1_ps(o1[c])), 1));
      for (int b = 0; b < nw; ++b) {
        const __m512i nib = _mm512_broadcast_i64x4(nibbles(q + (r + b) * row_bytes + c * 16, shifts));
        const __m512 dot = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), nib, xv));
        acc[b] = _mm512_fmadd_ps(_mm512_fmsub_ps(dot, d, o), sg[b], acc[b]);
      }
    }
  }
  for (int b = 0; b < nw; ++b) {
    y[i * n + r + b] = hsum(_mm512_castps512_ps256(acc[b]));
    y[(i + 1) * n + r + b] = hsum(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[b]), 1)));
  }
}

// Strips of STRIP = 16 weight rows, one row per 32-bit lane: per block of 32, 8 vectors (bytes
// 4p..4p+3 of every row: their low nibbles, then their high). A tile is TILE_M rows of x against
// two strips (32 weight rows). K is walked in chunks of CHUNK_K (two unpacked strips: 32 KB).
enum { STRIP = 16, TILE_M = 4, CHUNK_K = 1024 };

// The strip operations at 512 bits (../int4_strip.h): 16 rows a strip.
typedef __m512i strip_vector;
#define SV(op) _mm512_##op
#define SV_AND _mm512_and_si512
static inline __attribute__((always_inline)) strip_vector sv_load_rows(const int8_t *const *rows, int r, size_t at, const int8_t *zeros) {
  const int8_t *p[4];
  for (int j = 0; j < 4; ++j) p[j] = rows[r + 4 * j] ? rows[r + 4 * j] + at : zeros;
  const __m256i lo = _mm256_setr_m128i(_mm_loadu_si128((const __m128i *)p[0]), _mm_loadu_si128((const __m128i *)p[1]));
  const __m256i hi = _mm256_setr_m128i(_mm_loadu_si128((const __m128i *)p[2]), _mm_loadu_si128((const __m128i *)p[3]));
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}
#include "../int4_strip.h"

#ifndef IREE_GLM_AMX_MATRIX_KERNEL  // x86_64_amx/int4.c includes this file for the rest

static inline int32_t load_i32(const int8_t *p) {
  int32_t v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

// y[0 .. tm, 0 .. cols) (row stride ldy, cols <= 2 * STRIP) += strips a and b times tm rows of
// quantized x starting at `xq` (row stride `stride`), elements k0..k0+kc; the first chunk
// (k0 = 0) stores instead of adding. tm <= TILE_M is a constant after inlining.
static inline __attribute__((always_inline)) void tile(const __m512i *strip_a, const __m512i *strip_b, const float *scales_a,
                                                       const float *scales_b, const int8_t *xq, size_t stride, size_t k,
                                                       size_t group, size_t k0, size_t kc, float *y, size_t ldy, size_t cols,
                                                       const int tm) {
  const tile_rows x = tile_rows_at(xq, stride, k, k0, tm);
  __m512 acc[TILE_M][2];
  for (int i = 0; i < tm; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (size_t g = 0, c = 0; g < kc / group; ++g) {
    const __m512 sa = _mm512_loadu_ps(scales_a + g * STRIP), sb = _mm512_loadu_ps(scales_b + g * STRIP);
    for (size_t end = c + group / BLOCK; c < end; ++c) {
      __m512i dot[TILE_M][2];  // exact i32 sums w * x of the block
      for (int i = 0; i < tm; ++i) dot[i][0] = dot[i][1] = _mm512_set1_epi32(-x.sum8[i][c]);
      for (int p = 0; p < 8; ++p) {
        const __m512i wa = _mm512_load_si512(strip_a + c * 8 + p), wb = _mm512_load_si512(strip_b + c * 8 + p);
        for (int i = 0; i < tm; ++i) {  // the block's x: the low nibbles' 16, then the high nibbles' 16
          const __m512i xb = _mm512_set1_epi32(load_i32(x.x[i] + c * BLOCK + 4 * ((p & 1) * 4 + p / 2)));
          dot[i][0] = _mm512_dpbusd_epi32(dot[i][0], wa, xb);
          dot[i][1] = _mm512_dpbusd_epi32(dot[i][1], wb, xb);
        }
      }
      for (int i = 0; i < tm; ++i) {
        const __m512 d = _mm512_set1_ps(x.dx[i][c]);
        acc[i][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[i][0]), _mm512_mul_ps(sa, d), acc[i][0]);
        acc[i][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[i][1]), _mm512_mul_ps(sb, d), acc[i][1]);
      }
    }
  }
  for (int i = 0; i < tm; ++i) {
    float out[2 * STRIP];
    _mm512_storeu_ps(out, acc[i][0]);
    _mm512_storeu_ps(out + STRIP, acc[i][1]);
    tile_store(y + i * ldy, out, cols, k0);
  }
}

#include "../int4_matmul.h"

#endif  // IREE_GLM_AMX_MATRIX_KERNEL
