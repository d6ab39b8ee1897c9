// Flash attention (fp32): the driver every kernel set's attention.c shares (the tile and key-block
// iteration, the block-sparse pattern's visible blocks, the mask scan, the online softmax), written
// on a small vector interface that each set's file defines before including this header: only the
// vector inner loops differ per instruction set. Linked into IREE dispatches by
// passes/attention_kernel.py.
//
// out[h, r, :] = softmax_j(scale * q[h, r, :] . k[h, j, :] + mask[h, r, j]) @ v[h, :, :]
//
// q [H, M, D], k [H, N, D], v [H, N, E], out [H, M, E] (H: batch x KV heads, M: query rows, N:
// keys), row-major; K's and V's heads lie `key_stride` >= N positions apart (N: their own
// tensors; a KV cache's capacity where they are the first N positions of a cache row, read in
// place). The additive mask is read at
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
// Everything on the stack is row-minor, a vector holding VW query rows, so that K and V are
// read in place as broadcast scalars: scores^T are NK keys x ROWS rows of FMAs per step,
// out^T NK columns x ROWS rows; the softmax bookkeeping is lane-wise. (A row-major first version
// that transposed each K block was 1.5x slower on AVX2.) V's rows are prefetched while their
// keys' scores are computed: the products read V a column at a time (a cache line per key),
// which stalls on lines not yet in L1.
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
//
// A row's bits do not depend on the call (its tile's other rows, how many there are, the keys
// past its last visible one), which an exact `verify` relies on (docs/speculative.md): each sum
// is lane-wise and in key / element order whatever NK or the vector the row lands in; a key a
// row does not see adds exp2(-inf) = 0 to its sum and 0 x v to its outputs, which leaves them as
// they were; and where another row's max grows, this row is rescaled by exactly 1 (not by
// exp2(0), which the polynomial puts one ulp above 1). tests/kernels/test_attention_rows.py.
//
// IREE_GLM_ATTENTION_PROBE (tests only, never in a bundle's object): count the key blocks whose
// mask a tile reads and those it computes, in two exported globals.
// Embedded-ELF rules: no libc, no globals, no TLS; buffers arrive as MLIR memref descriptors
// (base, aligned base, offset, size, stride).
//
// What the including file defines first (the scores and mask are kept in base 2: softmax by exp2):
//   vf, VW          (macros) a vector type of VW floats (VW divides ROWS); TW: the transposes' block (divides 8 and VW)
//   vf_zero() vf_set1(s) vf_bcast(const float *) vf_load(p) (aligned) vf_store(p, x)
//   vf_add vf_sub vf_mul vf_div vf_max, vf_fma(a, b, c) = a * b + c
//   vf_min, vf_round(x) (to nearest), vf_pow2_scale(y, n, x): y * 2^n (n integral, added to the
//                   exponent bits), 0 in the lanes where x < -126 (exp2's last step)
//   vf_differs(a, b)  some lane has a != b (NaN differs)
//   vf_ninf_to_zero(x)  x with its -inf lanes 0
//   vf_one_where_equal(x, a, b)  x with 1 in the lanes where a == b
//   tv: a vector of TW floats (the transposes'), tv_loadu tv_storeu tv_mul tv_fma tv_set1, and
//   transpose_regs(r, t): t[j] lane i = r[i] lane j (TW x TW); defined by the first inclusion of
//   a file (the transposes are shared by its vector widths)
//   mask_bits8(p, &seen, &nz)  bit i: p[i] != -inf (seen), p[i] != 0 (nz), i < 8; NaN counts as both
//   NK1 .. NK<ROWS / VW>: the keys (or output columns) per FMA step for that many vectors of rows
//   (and NK_MAX where one is above 8)
//   ATTENTION_ENTRY (optional): the entry's name, then static (a file holding two vector widths
//   includes this header once per width, e.g. the AVX-512 set's); default iree_glm_attention_workgroup.
// All of these but the per-file ones (TW, tv*, transpose_regs, mask_bits8) are undefined at the
// end of the header, so that a second width can define them anew.

#ifndef IREE_GLM_ATTENTION_TILE_ONCE_
#define IREE_GLM_ATTENTION_TILE_ONCE_

#include <stddef.h>
#include <stdint.h>

#include "attention_layout.h"
#include "memref.h"

#ifdef IREE_GLM_ATTENTION_PROBE
size_t iree_glm_attention_blocks_read, iree_glm_attention_blocks_computed;
#define PROBE_COUNT(counter) (++(counter))
#else
#define PROBE_COUNT(counter) ((void)0)
#endif

#define TILE_CAT_(a, b) a##b
#define TILE_CAT(a, b) TILE_CAT_(a, b)
#define fma_tile TILE_CAT(fma_tile_, VW)  // one of each per vector width
#define fma_tiles TILE_CAT(fma_tiles_, VW)
#define vf_exp2 TILE_CAT(exp2_, VW)
#define add_mask_rows TILE_CAT(add_mask_rows_, VW)
#define VECS (ROWS / VW)

// TW x TW floats, transposed in registers and scaled: dst[j * ds + i] = src[i * ss + j] * f[j].
static inline void transpose_scaled(const float *src, size_t ss, float *dst, size_t ds, const float *f) {
  tv r[TW], t[TW];
  const tv fv = tv_loadu(f);
  for (int i = 0; i < TW; ++i) r[i] = tv_mul(tv_loadu(src + i * ss), fv);
  transpose_regs(r, t);
  for (int i = 0; i < TW; ++i) tv_storeu(dst + i * ds, t[i]);
}

// st[k * ROWS + i] += log2(e) x mr[i][j + k], i, k < TW: the mask of TW rows, transposed in registers.
static inline void add_mask_block(const float *const *mr, size_t j, float *st) {
  tv r[TW], t[TW];
  for (int i = 0; i < TW; ++i) r[i] = tv_loadu(mr[i] + j);
  transpose_regs(r, t);
  for (int i = 0; i < TW; ++i) tv_storeu(st + i * ROWS, tv_fma(t[i], tv_set1(LOG2E), tv_loadu(st + i * ROWS)));
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

// A block's mask (each distinct row of the tile once): *keys = 1 + the last key a row sees (0:
// skip the block), *nonzero = the first key where a row's mask is not 0.
static void scan_block_mask(const float *const *mrow, size_t rows, size_t j0, size_t block, size_t *keys, size_t *nonzero) {
  size_t kk = 0, nz0 = block;
  for (size_t r = 0; r < rows; ++r) {
    if (r > 0 && mrow[r] == mrow[r - 1]) continue;
    const float *mr = mrow[r] + j0;
    size_t j = 0;
    for (; j + 8 <= block; j += 8) {
      unsigned seen, nz;
      mask_bits8(mr + j, &seen, &nz);
      if (seen && j + 32 - (size_t)__builtin_clz(seen) > kk) kk = j + 32 - (size_t)__builtin_clz(seen);
      if (nz && j + (size_t)__builtin_ctz(nz) < nz0) nz0 = j + (size_t)__builtin_ctz(nz);
    }
    for (; j < block; ++j) {
      if (mr[j] != -__builtin_inff() && j + 1 > kk) kk = j + 1;
      if (!(mr[j] == 0.0f) && j < nz0) nz0 = j;
    }
  }
  *keys = kk;
  *nonzero = nz0;
}

#endif  // IREE_GLM_ATTENTION_TILE_ONCE_

#ifndef NK_MAX
#define NK_MAX 8  // the largest NK a set's table names
#endif

// 2^x, relative error ~2.3e-7 (a degree-5 fit of 2^f on [-0.5, 0.5], Horner); exactly 0 below
// -126 (and for -inf). The kernel works in base 2 (scores pre-scaled by log2(e)): 5 FMAs a
// vector here against 11 multiplies / FMAs of a natural-base expf, which shared the FMA units
// with the products themselves.
static inline vf vf_exp2(vf x) {
  const vf xc = vf_min(vf_max(x, vf_set1(-126.0f)), vf_set1(127.0f));
  const vf n = vf_round(xc), f = vf_sub(xc, n);
  vf y = vf_fma(vf_set1(1.327647129073739e-3f), f, vf_set1(9.675540961325169e-3f));
  y = vf_fma(y, f, vf_set1(5.550713092088699e-2f));
  y = vf_fma(y, f, vf_set1(2.4022120237350464e-1f));
  y = vf_fma(y, f, vf_set1(6.931469440460205e-1f));
  y = vf_fma(y, f, vf_set1(1.0000001192092896f));
  return vf_pow2_scale(y, n, x);  // y in [0.7, 1.42], n in [-126, 127]: stays normal
}

// st[j][0..VW) += log2(e) x the mask of VW rows (own mask rows mr[0..VW)) at keys j0 + j, j < keys:
// TW x TW blocks transposed in registers, the last keys % TW one at a time.
static void add_mask_rows(const float *const *mr, size_t j0, size_t keys, float *st) {
  size_t j = 0;
  for (; j + TW <= keys; j += TW)
    for (int h = 0; h < VW; h += TW) add_mask_block(mr + h, j0 + j, st + j * ROWS + h);
  for (; j < keys; ++j) {
    float m[VW] __attribute__((aligned(64)));
    for (int i = 0; i < VW; ++i) m[i] = mr[i][j0 + j];
    vf_store(st + j * ROWS, vf_fma(vf_load(m), vf_set1(LOG2E), vf_load(st + j * ROWS)));
  }
}

// The one FMA loop of both products, on nk x nv accumulators of VW lanes (nk, nv constants
// after inlining): out[i][VW v..) (+)= sum_t x[t * xs + i * xi] * y[t * ROWS + VW v..].
// Scores: x = keys (xi = d), y = q^T, t over d. Outputs: x = v (xs = e), y = p^T, t over keys.
// One broadcast live at a time; the NK tables keep the accumulators within the register file and
// enough of them to hide the FMA latency. With `top`, also top[v] = max(top[v], the tile's
// outputs) (the scores' running max, while still in registers).
static inline __attribute__((always_inline)) void fma_tile(const float *x, size_t xs, size_t xi, const float *y, size_t len,
                                                           float *out, int accumulate, vf *top, const int nk, const int nv) {
  vf a[NK_MAX * VECS];  // a[i * nv + v]: flat, so that GCC keeps it in registers (as [NK_MAX][VECS] it
                        // stored every accumulator to the stack at each step)
  for (int i = 0; i < nk; ++i)
    for (int v = 0; v < nv; ++v) a[i * nv + v] = accumulate ? vf_load(out + i * ROWS + VW * v) : vf_zero();
  for (size_t t = 0; t < len; ++t) {
    for (int i = 0; i < nk; ++i) {
      const vf b = vf_bcast(x + t * xs + i * xi);
      for (int v = 0; v < nv; ++v) a[i * nv + v] = vf_fma(b, vf_load(y + t * ROWS + VW * v), a[i * nv + v]);
    }
  }
  for (int i = 0; i < nk; ++i)
    for (int v = 0; v < nv; ++v) {
      vf_store(out + i * ROWS + VW * v, a[i * nv + v]);
      if (top) top[v] = vf_max(top[v], a[i * nv + v]);
    }
}

// fma_tile over `count` outputs, NK at a time, the rest 2 and 1 at a time (a lone output has
// too few accumulators to hide the FMA latency: a remainder of 1 after NK = 3 is taken as 2 + 2).
#define FMA_TILES(NK, NV)                                                                                         \
  do {                                                                                                            \
    size_t i = 0, full = count / NK;                                                                              \
    if (NK == 3 && count % NK == 1 && full > 0) --full;                                                           \
    for (; full > 0; --full, i += NK) {                                                                           \
      for (size_t p = 0; pf && p < NK * pf_row; p += 16) __builtin_prefetch(pf + i * pf_row + p, 0, 3);          \
      fma_tile(x + i * xi, xs, xi, y, len, out + i * ROWS, accumulate, top, NK, NV);                             \
    }                                                                                                             \
    for (; i + 2 <= count; i += 2) fma_tile(x + i * xi, xs, xi, y, len, out + i * ROWS, accumulate, top, 2, NV);   \
    if (i < count) fma_tile(x + i * xi, xs, xi, y, len, out + i * ROWS, accumulate, top, 1, NV);                   \
  } while (0)

static inline __attribute__((always_inline)) void fma_tiles(const float *x, size_t xs, size_t xi, const float *y,
                                                            size_t len, float *out, int accumulate, vf *top,
                                                            const float *pf, size_t pf_row, size_t count, int nv) {
  switch (nv) {  // few rows (decode: the query heads of one KV head) take more outputs per step
#if VW <= 4  // VECS > 4 (the preprocessor cannot read ROWS, an enum)
    case 5: FMA_TILES(NK5, 5); break;
    case 6: FMA_TILES(NK6, 6); break;
    case 7: FMA_TILES(NK7, 7); break;
    case 8: FMA_TILES(NK8, 8); break;
#endif
#if VW <= 8  // VECS > 2
    case 3: FMA_TILES(NK3, 3); break;
    case 4: FMA_TILES(NK4, 4); break;
#endif
    case 2: FMA_TILES(NK2, 2); break;
    default: FMA_TILES(NK1, 1); break;
  }
}

// Rows row_begin .. row_begin + ROWS (clipped to m) of head `head`. d: q/k width, e: v/out
// width, both multiples of 8 and <= MAX_D (the pass checks). Layouts on the stack are
// row-minor (q^T, scores^T, out^T: [.][ROWS]) so that a vector holds VW query rows: the
// running max / sum and the rescaling of the outputs are lane-wise, and both products are
// FMAs of broadcast k / v elements with vectors of rows.
#ifdef ATTENTION_ENTRY
#define ATTENTION_LINKAGE static
#else
#define ATTENTION_ENTRY iree_glm_attention_workgroup
#define ATTENTION_LINKAGE
#endif
ATTENTION_LINKAGE void ATTENTION_ENTRY(MEMREF(const float, q), MEMREF(const float, k), MEMREF(const float, v),
                                     MEMREF(const float, mask), MEMREF(float, out), size_t m, size_t n, size_t d,
                                     size_t e, float scale, size_t mask_head_stride, size_t mask_row_div, size_t head,
                                     size_t row_begin, size_t local, size_t global_, size_t key_stride) {
  MEMREF_START(q); MEMREF_START(k); MEMREF_START(v); MEMREF_START(mask); MEMREF_START(out);
  if (row_begin >= m) return;
  const size_t rows = m - row_begin < ROWS ? m - row_begin : ROWS;
  const int nv = (int)((rows + VW - 1) / VW);
  const size_t lanes = VW * (size_t)nv;
  const float *qh = q + (head * m + row_begin) * d, *kh = k + head * key_stride * d, *vh = v + head * key_stride * e;
  const float *mh = mask + head * mask_head_stride;
  float qt[MAX_D * ROWS] __attribute__((aligned(64)));   // q^T * scale * log2(e) (zero lanes past `rows`)
  float st[BLOCK * ROWS] __attribute__((aligned(64)));   // scores^T, then probabilities^T
  float acc[MAX_D * ROWS] __attribute__((aligned(64)));  // unnormalized outputs^T
  const float *mrow[ROWS];
  vf run_max[VECS], run_sum[VECS];
  int uniform[VECS];     // a vector's VW rows share one mask row (the query heads of a position)
  const vf ninf = vf_set1(-__builtin_inff()), zero = vf_zero(), log2e = vf_set1(LOG2E);
  float scale2[TW];
  for (int i = 0; i < TW; ++i) scale2[i] = scale * LOG2E;
  for (size_t r0 = 0; r0 < lanes; r0 += TW) {
    if (r0 + TW <= rows) {
      for (size_t c0 = 0; c0 < d; c0 += TW) transpose_scaled(qh + r0 * d + c0, d, qt + c0 * ROWS + r0, ROWS, scale2);
    } else {
      for (size_t r = r0; r < r0 + TW; ++r)
        for (size_t c = 0; c < d; ++c) qt[c * ROWS + r] = r < rows ? qh[r * d + c] * scale2[0] : 0.0f;
    }
  }
  for (size_t i = 0; i < e * ROWS; i += VW) vf_store(acc + i, zero);
  for (size_t r = 0; r < lanes; ++r)
    mrow[r] = mh + ((row_begin + (r < rows ? r : rows - 1)) / mask_row_div) * n;  // padding lanes: the last row's
  for (int w = 0; w < nv; ++w) {
    run_max[w] = ninf;
    run_sum[w] = zero;
    uniform[w] = mrow[VW * w] == mrow[VW * w + VW - 1];
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
    // `plain`: the mask is 0 on all the visible keys of every row (no mask to add, the max
    // taken from the scores' registers).
    size_t keys, nonzero;
    scan_block_mask(mrow, rows, j0, block, &keys, &nonzero);
    if (keys == 0) continue;
    PROBE_COUNT(iree_glm_attention_blocks_computed);
    const int plain = nonzero >= keys;
    vf top[VECS];
    for (int w = 0; w < VECS; ++w) top[w] = ninf;
    fma_tiles(kh + j0 * d, 1, d, qt, d, st, 0, plain ? top : 0, vh + j0 * e, e, keys, nv);  // st[j][r] = q[r] . k[j0 + j]
    for (int w = 0; w < nv; ++w) {
      float *sw = st + VW * w;
      if (!plain) {
        if (!uniform[w]) add_mask_rows(mrow + VW * w, j0, keys, sw);
        for (size_t j = 0; j < keys; ++j) {
          vf x = vf_load(sw + j * ROWS);
          if (uniform[w]) {
            x = vf_fma(vf_bcast(mrow[VW * w] + j0 + j), log2e, x);
            vf_store(sw + j * ROWS, x);
          }
          top[w] = vf_max(top[w], x);
        }
      }
      const vf new_max = vf_max(run_max[w], top[w]);
      // Rows with nothing visible yet subtract 0: their p = exp(-inf) = 0 and alpha = 0 on zeros.
      const vf safe = vf_ninf_to_zero(new_max);
      vf sum = zero;
      for (size_t j = 0; j < keys; ++j) {
        const vf p = vf_exp2(vf_sub(vf_load(sw + j * ROWS), safe));
        vf_store(sw + j * ROWS, p);
        sum = vf_add(sum, p);
      }
      if (vf_differs(new_max, run_max[w])) {  // a row's max grew: rescale it (the others by exactly 1)
        const vf alpha = vf_one_where_equal(vf_exp2(vf_sub(run_max[w], safe)), new_max, run_max[w]);
        for (size_t c = 0; c < e; ++c) vf_store(acc + c * ROWS + VW * w, vf_mul(vf_load(acc + c * ROWS + VW * w), alpha));
        run_sum[w] = vf_mul(run_sum[w], alpha);
        run_max[w] = new_max;
      }
      run_sum[w] = vf_add(run_sum[w], sum);
    }
    fma_tiles(vh + j0 * e, e, 1, st, keys, acc, 1, 0, 0, 0, e, nv);  // acc[c][r] += sum_j p[r][j] v[j0 + j][c]
  }
  float inv[ROWS] __attribute__((aligned(64)));
  for (int w = 0; w < nv; ++w) vf_store(inv + VW * w, vf_div(vf_set1(1.0f), run_sum[w]));
  float *oh = out + (head * m + row_begin) * e;
  for (size_t r0 = 0; r0 < rows; r0 += TW) {  // 0 visible keys: 0 * (1 / 0) = NaN
    if (r0 + TW <= rows) {
      for (size_t c0 = 0; c0 < e; c0 += TW) transpose_scaled(acc + c0 * ROWS + r0, ROWS, oh + r0 * e + c0, e, inv + r0);
    } else {
      for (size_t r = r0; r < rows; ++r)
        for (size_t c = 0; c < e; ++c) oh[r * e + c] = acc[c * ROWS + r] * inv[r];
    }
  }
}

#undef ATTENTION_ENTRY
#undef ATTENTION_LINKAGE
#undef NK_MAX
#undef FMA_TILES
#undef vf
#undef VW
#undef vf_zero
#undef vf_set1
#undef vf_bcast
#undef vf_load
#undef vf_store
#undef vf_add
#undef vf_sub
#undef vf_mul
#undef vf_div
#undef vf_max
#undef vf_fma
#undef vf_min
#undef VX
#undef VX_OP
#undef VX_OP_
#undef vf_round
#undef vf_pow2_scale
#undef vf_differs
#undef vf_ninf_to_zero
#undef vf_one_where_equal
#undef NK1
#undef NK2
#undef NK3
#undef NK4
#undef NK5
#undef NK6
#undef NK7
#undef NK8
