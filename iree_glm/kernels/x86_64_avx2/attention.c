// Flash attention (fp32), AVX2 + FMA, linked into IREE dispatches (passes/attention_kernel.py).
//
// out[h, r, :] = softmax_j(scale * q[h, r, :] . k[h, j, :] + mask[h, r, j]) @ v[h, :, :]
//
// q [H, M, D], k [H, N, D], v [H, N, E], out [H, M, E] (H: batch x KV heads, M: query rows, N:
// keys), row-major and contiguous. The additive mask is read at
// mask[h * mask_head_stride + (r / mask_row_div) * N + j]: a stride of 0 reads one mask for all
// heads, a divisor of `group` one mask row for the `group` query heads of a position (the
// pass strips the broadcasts that would otherwise materialize it H * group times).
//
// One call computes ROWS query rows of one head: an online softmax over blocks of BLOCK keys,
// with the rows' running max / sum and output accumulators kept on the stack (~40 KB). Per
// block, the mask is scanned first (each distinct mask row once): a block that is -inf for all
// the tile's rows is skipped (causal prefill: about half of them), keys past the last one a row
// sees are trimmed (the causal diagonal), and where the mask is 0 on all the rest (every block
// before the diagonal) none is added and the rows' max comes from the score registers.
// Everything on the stack is row-minor, a vector holding 8 query rows, so that K and V are
// read in place as broadcast scalars: scores^T are 3 keys x 32 rows of FMAs per step (8 x 8 for
// 8 rows), out^T 3 columns x 32 rows; the softmax bookkeeping is lane-wise. (A row-major first
// version that transposed each K block was 1.5x slower.) V's rows are prefetched while their
// keys' scores are computed: the products read V a column at a time (a cache line per key), which
// stalls on lines not yet in L1. Measured in user cycles (one thread, C probe, 256 positions x
// 8 query heads x 2 KV heads, head dim 64, causal over the last 256 of N keys): 25 flop/cycle at
// N = 2048, 21 at 256 (the FMA peak is 32: 2 FMAs of 8 lanes).
//
// Block-sparse attention (`local` > 0) is the same kernel told the pattern of its mask: a query at
// position p sees the keys k <= p with k < `global_` or k > p - `local`. The tile then visits only
// the key blocks of [0, global_) and of its rows' windows; the blocks between are neither read
// nor computed (the mask scan above would skip them too, but only after reading their mask: at
// 4k keys that scan alone is as long as the window's products). Each row's p is found from its
// mask with a few probes (`last_seen`). Dense attention is `local` = 0: every block.
//
// A row whose keys are all masked has no softmax (0 / 0); it gives NaN like the decomposed
// form IREE generates for the op (tests compare both).
// IREE_GLM_ATTENTION_PROBE (tests only, never in a bundle's object): count the key blocks whose
// mask a tile reads and those it computes, in two exported globals.
// Embedded-ELF rules: no libc, no globals, no TLS; buffers arrive as MLIR memref descriptors
// (base, aligned base, offset, size, stride).

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#define MEMREF(T, name) T *name##_base, T *name, size_t name##_offset, size_t name##_size, size_t name##_stride
#define UNUSED_MEMREF(name) (void)name##_base, (void)name##_size, (void)name##_stride

enum { ROWS = 32, VECS = ROWS / 8, BLOCK = 64, MAX_D = 128 };
#define LOG2E 1.44269504088896341f  // scores and mask are kept in base 2: softmax by exp2

#ifdef IREE_GLM_ATTENTION_PROBE
size_t iree_glm_attention_blocks_read, iree_glm_attention_blocks_computed;
#define PROBE_COUNT(counter) (++(counter))
#else
#define PROBE_COUNT(counter) ((void)0)
#endif

// 2^x, relative error ~2.3e-7 (a degree-5 fit of 2^f on [-0.5, 0.5], Horner); exactly 0 below
// -126 (and for -inf). The kernel works in base 2 (scores pre-scaled by log2(e)): 5 FMAs a
// vector here against 11 multiplies / FMAs of a natural-base expf, which shared the two FMA
// units with the products themselves.
static inline __m256 exp2_256(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-126.0f);
  const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(127.0f));
  const __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(x, n);
  __m256 y = _mm256_fmadd_ps(_mm256_set1_ps(1.327647129073739e-3f), f, _mm256_set1_ps(9.675540961325169e-3f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(5.550713092088699e-2f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(2.4022120237350464e-1f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(6.931469440460205e-1f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(1.0000001192092896f));
  // times 2^n: n added to the exponent bits (y in [0.7, 1.42], n in [-126, 127]: stays normal)
  const __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
  return _mm256_andnot_ps(under, _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(y), e)));
}


// The one FMA loop of both products, on nk x nv accumulators of 8 lanes (nk, nv constants
// after inlining): out[i][8v..8v+8) (+)= sum_t x[t * xs + i * xi] * y[t * ROWS + 8v..].
// Scores: x = keys (xi = d), y = q^T, t over d. Outputs: x = v (xs = e), y = p^T, t over keys.
// At most 12 accumulators (16 registers); at least 8 keep both FMA units busy. With `top`, also
// top[v] = max(top[v], the tile's outputs) (the scores' running max, while still in registers).
static inline __attribute__((always_inline)) void fma_tile(const float *x, size_t xs, size_t xi, const float *y, size_t len,
                                                           float *out, int accumulate, __m256 *top, const int nk,
                                                           const int nv) {
  __m256 a[8][VECS];
  for (int i = 0; i < nk; ++i)
    for (int v = 0; v < nv; ++v) a[i][v] = accumulate ? _mm256_load_ps(out + i * ROWS + 8 * v) : _mm256_setzero_ps();
  for (size_t t = 0; t < len; ++t) {
    for (int i = 0; i < nk; ++i) {  // one broadcast live at a time: 12 accumulators fit the 16 registers
      const __m256 b = _mm256_broadcast_ss(x + t * xs + i * xi);
      for (int v = 0; v < nv; ++v) a[i][v] = _mm256_fmadd_ps(b, _mm256_load_ps(y + t * ROWS + 8 * v), a[i][v]);
    }
  }
  for (int i = 0; i < nk; ++i)
    for (int v = 0; v < nv; ++v) {
      _mm256_store_ps(out + i * ROWS + 8 * v, a[i][v]);
      if (top) top[v] = _mm256_max_ps(top[v], a[i][v]);
    }
}

// fma_tile over `count` outputs, NK at a time, the rest 2 and 1 at a time (a lone output has
// too few accumulators to hide the FMA latency: a remainder of 1 after NK = 3 is taken as 2 + 2).
#define FMA_TILES(NK, NV)                                                                                         \
  do {                                                                                                            \
    size_t i = 0, full = count / NK;                                                                              \
    if (NK == 3 && count % NK == 1 && full > 0) --full;                                                           \
    for (; full > 0; --full, i += NK) {                                                                           \
      for (size_t p = 0; pf && p < NK * pf_row; p += 16) _mm_prefetch((const char *)(pf + i * pf_row + p), _MM_HINT_T0); \
      fma_tile(x + i * xi, xs, xi, y, len, out + i * ROWS, accumulate, top, NK, NV);                             \
    }                                                                                                             \
    for (; i + 2 <= count; i += 2) fma_tile(x + i * xi, xs, xi, y, len, out + i * ROWS, accumulate, top, 2, NV);   \
    if (i < count) fma_tile(x + i * xi, xs, xi, y, len, out + i * ROWS, accumulate, top, 1, NV);                   \
  } while (0)

static inline __attribute__((always_inline)) void fma_tiles(const float *x, size_t xs, size_t xi, const float *y,
                                                            size_t len, float *out, int accumulate, __m256 *top,
                                                            const float *pf, size_t pf_row, size_t count, int nv) {
  switch (nv) {  // 8 rows (decode: the query heads of one KV head) take 8 outputs per step
    case 1: FMA_TILES(8, 1); break;
    case 2: FMA_TILES(6, 2); break;
    case 3: FMA_TILES(4, 3); break;
    default: FMA_TILES(3, 4); break;
  }
}

// In registers: t[j] lane i = r[i] lane j (8 x 8 floats); r is overwritten.
static inline __attribute__((always_inline)) void transpose8_regs(__m256 r[8], __m256 t[8]) {
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x20);
    t[i + 4] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x31);
  }
}

// 8 x 8 floats, transposed and scaled: dst[j * ds + i] = src[i * ss + j] * f[j], i, j < 8.
static inline void transpose8(const float *src, size_t ss, float *dst, size_t ds, __m256 f) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_mul_ps(_mm256_loadu_ps(src + i * ss), f);
  transpose8_regs(r, t);
  for (int i = 0; i < 8; ++i) _mm256_storeu_ps(dst + i * ds, t[i]);
}

// st[j][0..8) += log2(e) x the mask of 8 rows (own mask rows mr[0..8)) at keys j0 + j, j < keys: 8 x 8
// blocks transposed in registers, the last keys % 8 one at a time.
static void add_mask_rows(const float *const *mr, size_t j0, size_t keys, float *st) {
  const __m256 log2e = _mm256_set1_ps(LOG2E);
  size_t j = 0;
  for (; j + 8 <= keys; j += 8) {
    __m256 r[8], t[8];
    for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(mr[i] + j0 + j);
    transpose8_regs(r, t);
    for (int i = 0; i < 8; ++i) _mm256_store_ps(st + (j + i) * ROWS, _mm256_fmadd_ps(t[i], log2e, _mm256_load_ps(st + (j + i) * ROWS)));
  }
  for (; j < keys; ++j) {
    const __m256 mv = _mm256_setr_ps(mr[0][j0 + j], mr[1][j0 + j], mr[2][j0 + j], mr[3][j0 + j],
                                     mr[4][j0 + j], mr[5][j0 + j], mr[6][j0 + j], mr[7][j0 + j]);
    _mm256_store_ps(st + j * ROWS, _mm256_fmadd_ps(mv, log2e, _mm256_load_ps(st + j * ROWS)));
  }
}

// The last key a mask row `mr` of the block-sparse pattern sees (its query's position p, the
// keys being causal), or -1 if none. Within [global_, n) the row sees the interval
// (p - local, p]: a probe every `local` keys from the end hits it when it is that long; otherwise
// it lies in [global_, global_ + local) (p is near the globals), read whole; else p < global_.
static ptrdiff_t last_seen(const float *mr, size_t n, size_t global_, size_t local) {
  const float ninf = -__builtin_inff();
  for (ptrdiff_t k = (ptrdiff_t)n - 1; k >= (ptrdiff_t)global_; k -= (ptrdiff_t)local) {
    if (mr[k] == ninf) continue;
    for (size_t j = (size_t)k + local < n ? (size_t)k + local : n; j-- > (size_t)k;)  // the interval is < local long
      if (mr[j] != ninf) return (ptrdiff_t)j;
  }
  for (size_t j = global_ + local < n ? global_ + local : n; j-- > 0;)
    if (mr[j] != ninf) return (ptrdiff_t)j;
  return -1;
}

// Rows row_begin .. row_begin + ROWS (clipped to m) of head `head`. d: q/k width, e: v/out
// width, both multiples of 8 and <= MAX_D (the pass checks). Layouts on the stack are
// row-minor (q^T, scores^T, out^T: [.][ROWS]) so that a vector holds 8 query rows: the
// running max / sum and the rescaling of the outputs are lane-wise, and both products are
// FMAs of broadcast k / v elements with vectors of rows.
void iree_glm_attention_workgroup(MEMREF(const float, q), MEMREF(const float, k), MEMREF(const float, v),
                                  MEMREF(const float, mask), MEMREF(float, out), size_t m, size_t n, size_t d,
                                  size_t e, float scale, size_t mask_head_stride, size_t mask_row_div, size_t head,
                                  size_t row_begin, size_t local, size_t global_) {
  UNUSED_MEMREF(q); UNUSED_MEMREF(k); UNUSED_MEMREF(v); UNUSED_MEMREF(mask); UNUSED_MEMREF(out);
  q += q_offset; k += k_offset; v += v_offset; mask += mask_offset; out += out_offset;
  if (row_begin >= m) return;
  const size_t rows = m - row_begin < ROWS ? m - row_begin : ROWS;
  const int nv = (int)((rows + 7) / 8);
  const size_t lanes = 8 * (size_t)nv;
  const float *qh = q + (head * m + row_begin) * d, *kh = k + head * n * d, *vh = v + head * n * e;
  const float *mh = mask + head * mask_head_stride;
  float qt[MAX_D * ROWS] __attribute__((aligned(32)));   // q^T * scale * log2(e) (zero lanes past `rows`)
  float st[BLOCK * ROWS] __attribute__((aligned(32)));   // scores^T, then probabilities^T
  float acc[MAX_D * ROWS] __attribute__((aligned(32)));  // unnormalized outputs^T
  const float *mrow[ROWS];
  __m256 run_max[VECS], run_sum[VECS];
  int uniform[VECS];     // a vector's 8 rows share one mask row (the query heads of a position)
  const __m256 ninf = _mm256_set1_ps(-__builtin_inff()), zero = _mm256_setzero_ps(), log2e = _mm256_set1_ps(LOG2E);
  const float scale2 = scale * LOG2E;
  for (size_t r0 = 0; r0 < lanes; r0 += 8) {
    if (r0 + 8 <= rows) {  // 8 x 8 transposes
      for (size_t c0 = 0; c0 < d; c0 += 8) transpose8(qh + r0 * d + c0, d, qt + c0 * ROWS + r0, ROWS, _mm256_set1_ps(scale2));
    } else {
      for (size_t r = r0; r < r0 + 8; ++r)
        for (size_t c = 0; c < d; ++c) qt[c * ROWS + r] = r < rows ? qh[r * d + c] * scale2 : 0.0f;
    }
  }
  for (size_t i = 0; i < e * ROWS; i += 8) _mm256_store_ps(acc + i, zero);
  for (size_t r = 0; r < lanes; ++r)
    mrow[r] = mh + ((row_begin + (r < rows ? r : rows - 1)) / mask_row_div) * n;  // padding lanes: the last row's
  for (int w = 0; w < nv; ++w) {
    run_max[w] = ninf;
    run_sum[w] = zero;
    uniform[w] = mrow[8 * w] == mrow[8 * w + 7];
  }
  // Keys [0, end) are visited but for the blocks in [gap_from, gap_to): those a sparse tile's
  // rows cannot see (between the globals and the earliest window, after the latest query).
  size_t end = n, gap_from = n, gap_to = n;
  if (local) {
    ptrdiff_t lo = PTRDIFF_MAX, hi = -1;
    for (size_t r = 0; r < rows; ++r) {
      if (r > 0 && mrow[r] == mrow[r - 1]) continue;
      const ptrdiff_t p = last_seen(mrow[r], n, global_, local);
      if (p < 0) continue;
      if (p > hi) hi = p;
      if (p - (ptrdiff_t)local + 1 < lo) lo = p - (ptrdiff_t)local + 1;
    }
    end = hi < 0 ? (global_ < n ? global_ : n) : (size_t)hi + 1;
    gap_from = (global_ + BLOCK - 1) / BLOCK * BLOCK;
    gap_to = hi < 0 || lo < 0 ? 0 : (size_t)lo / BLOCK * BLOCK;
  }
  for (size_t j0 = 0; j0 < end; j0 += BLOCK) {
    if (j0 >= gap_from && j0 < gap_to) j0 = gap_to;
    if (j0 >= end) break;
    const size_t block = end - j0 < BLOCK ? end - j0 : BLOCK;
    PROBE_COUNT(iree_glm_attention_blocks_read);
    // The block's mask (each distinct row once): `keys` = 1 + the last key a row sees (0: skip
    // the block; causal prefill skips about half and trims the diagonal's), `plain` = the mask is
    // 0 on all of them for every row (no mask to add, the max taken from the scores' registers).
    size_t keys = 0, nonzero = block;
    for (size_t r = 0; r < rows; ++r) {
      if (r > 0 && mrow[r] == mrow[r - 1]) continue;
      const float *mr = mrow[r] + j0;
      size_t j = 0;
      for (; j + 8 <= block; j += 8) {
        const __m256 x = _mm256_loadu_ps(mr + j);
        const unsigned seen = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(x, ninf, _CMP_NEQ_UQ));
        const unsigned nz = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(x, zero, _CMP_NEQ_UQ));
        if (seen && j + 32 - (size_t)__builtin_clz(seen) > keys) keys = j + 32 - (size_t)__builtin_clz(seen);
        if (nz && j + (size_t)__builtin_ctz(nz) < nonzero) nonzero = j + (size_t)__builtin_ctz(nz);
      }
      for (; j < block; ++j) {
        if (mr[j] != -__builtin_inff() && j + 1 > keys) keys = j + 1;
        if (!(mr[j] == 0.0f) && j < nonzero) nonzero = j;
      }
    }
    if (keys == 0) continue;
    PROBE_COUNT(iree_glm_attention_blocks_computed);
    const int plain = nonzero >= keys;
    __m256 top[VECS];
    for (int w = 0; w < VECS; ++w) top[w] = ninf;
    fma_tiles(kh + j0 * d, 1, d, qt, d, st, 0, plain ? top : 0, vh + j0 * e, e, keys, nv);  // st[j][r] = q[r] . k[j0 + j]
    for (int w = 0; w < nv; ++w) {
      float *sw = st + 8 * w;
      if (!plain) {
        if (!uniform[w]) add_mask_rows(mrow + 8 * w, j0, keys, sw);
        for (size_t j = 0; j < keys; ++j) {
          __m256 x = _mm256_load_ps(sw + j * ROWS);
          if (uniform[w]) {
            x = _mm256_fmadd_ps(_mm256_broadcast_ss(mrow[8 * w] + j0 + j), log2e, x);
            _mm256_store_ps(sw + j * ROWS, x);
          }
          top[w] = _mm256_max_ps(top[w], x);
        }
      }
      const __m256 new_max = _mm256_max_ps(run_max[w], top[w]);
      // Rows with nothing visible yet subtract 0: their p = exp(-inf) = 0 and alpha = 0 on zeros.
      const __m256 safe = _mm256_andnot_ps(_mm256_cmp_ps(new_max, ninf, _CMP_EQ_OQ), new_max);
      __m256 sum = zero;
      for (size_t j = 0; j < keys; ++j) {
        const __m256 p = exp2_256(_mm256_sub_ps(_mm256_load_ps(sw + j * ROWS), safe));
        _mm256_store_ps(sw + j * ROWS, p);
        sum = _mm256_add_ps(sum, p);
      }
      if (_mm256_movemask_ps(_mm256_cmp_ps(new_max, run_max[w], _CMP_NEQ_UQ))) {  // a row's max grew: rescale
        const __m256 alpha = exp2_256(_mm256_sub_ps(run_max[w], safe));
        for (size_t c = 0; c < e; ++c) _mm256_store_ps(acc + c * ROWS + 8 * w, _mm256_mul_ps(_mm256_load_ps(acc + c * ROWS + 8 * w), alpha));
        run_sum[w] = _mm256_mul_ps(run_sum[w], alpha);
        run_max[w] = new_max;
      }
      run_sum[w] = _mm256_add_ps(run_sum[w], sum);
    }
    fma_tiles(vh + j0 * e, e, 1, st, keys, acc, 1, 0, 0, 0, e, nv);  // acc[c][r] += sum_j p[r][j] v[j0 + j][c]
  }
  float inv[ROWS] __attribute__((aligned(32)));
  for (int w = 0; w < nv; ++w) _mm256_store_ps(inv + 8 * w, _mm256_div_ps(_mm256_set1_ps(1.0f), run_sum[w]));
  float *oh = out + (head * m + row_begin) * e;
  for (size_t r0 = 0; r0 < rows; r0 += 8) {  // 0 visible keys: 0 * (1 / 0) = NaN
    if (r0 + 8 <= rows) {
      for (size_t c0 = 0; c0 < e; c0 += 8) transpose8(acc + c0 * ROWS + r0, ROWS, oh + r0 * e + c0, e, _mm256_load_ps(inv + r0));
    } else {
      for (size_t r = r0; r < rows; ++r)
        for (size_t c = 0; c < e; ++c) oh[r * e + c] = acc[c * ROWS + r] * inv[r];
    }
  }
}
