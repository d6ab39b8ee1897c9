"""Block-sparse causal attention: the G first tokens plus a sliding window of W keys.

A query at position p sees key positions k <= p with k < G (globals) or k > p - W (its
window, W keys including itself). Queries are processed in blocks of B: each block gathers
only the W + B - 1 keys its window can reach, plus the G globals, so the work and the memory
grow as S * (W + B + G) instead of S * C.

The model marks its attention with the custom op `iree_glm::block_sparse_attention`
(`attend`); the MLIR pass in `iree_glm.passes.sparse_attention` replaces each marked op by
`block_sparse_attention` below, exported through torch. `dense_reference` is the same
pattern as a dense masked SDPA: the reference for tests, never the implementation.
A build whose attention calls our kernel exports the pattern instead as the mask of the
model's dense attention (`enable(..., as_mask=True)`, `in_pattern`): the kernel, told the
pattern, skips the key blocks outside it (passes/attention_kernel.py).

Sliding-window KV cache (`ring`): since no query sees a key more than W positions back
(globals aside), the cache only needs the G globals plus a ring of the last W' >= W + B
positions: slot = p for p < G, else G + (p - G) mod W'. Rotary uses the absolute position,
so a conversation can run past the cache size; memory and per-token work stay constant.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from iree_glm.bundle.sparse_pattern import SparsePattern, parse_pattern  # noqa: F401  (re-exported)

OP_NAME = "iree_glm::block_sparse_attention"
# A finite "minus infinity": a fully masked row stays finite (its output is discarded anyway).
_NEG = -1e30


def block_sparse_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor, local: int, global_: int, block: int, ring: int = 0
) -> torch.Tensor:
    """q [b,H,S,D]; k, v [b,Hkv,C,D] (cache indexed by absolute position); positions [b,S]
    consecutive per row -> [b,H,S,D]. Pads the queries to whole blocks around `blocked_attention`."""
    s = q.shape[2]
    rows = -(-s // block) * block
    out = blocked_attention(F.pad(q, (0, 0, 0, rows - s)), k, v, positions[:, :1], local, global_, block, ring)
    return out[:, :, :s]


def blocked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: torch.Tensor, local: int, global_: int, block: int, ring: int = 0
) -> torch.Tensor:
    """q [b,H,rows,D] with rows a multiple of `block`, query i at position start + i; k, v
    [b,Hkv,C,D]; start [b,1] -> [b,H,rows,D]. With `ring` > 0 the cache is a sliding window
    of G + ring slots (`ring_slot`) holding at least every key the queries' windows reach.

    Layout: rows are (query block, head group, query in block) so that the local part is one
    batched matmul per (KV head, query block) against that block's gathered keys, and the
    global part one matmul against the G leading keys. The two parts share one softmax
    (common row maximum and denominator), so no concatenation is needed.
    """
    b, h, rows, d = q.shape
    hkv, capacity = k.shape[1], k.shape[2]
    group = h // hkv
    nblk = rows // block
    # Keys a query block's windows can reach (W + B - 1), rounded up to a multiple of 16 so the
    # matmuls get vector-friendly sizes; the extra keys are masked by the band below.
    span = -(-(local + block - 1) // 16) * 16
    dev = q.device

    qb = (q * (d**-0.5)).view(b, hkv, group, nblk, block, d).permute(0, 1, 3, 2, 4, 5).contiguous()  # [b,hkv,nblk,group,block,D]
    qb = qb.view(b, hkv, nblk, group * block, d)

    block_first = start + torch.arange(nblk, device=dev)[None, :] * block  # [b,nblk] first query position
    key_pos = (block_first - (local - 1))[:, :, None] + torch.arange(span, device=dev)  # [b,nblk,span]
    slot = ring_slot(key_pos, global_, ring) if ring else key_pos
    slot = slot.clamp(0, capacity - 1)
    k_loc = _take(k, slot).view(b, hkv, nblk, span, d)
    v_loc = _take(v, slot).view(b, hkv, nblk, span, d)

    # Local bias: the window band is static (key j of the span is visible to query r iff
    # r <= j < r + W); keys below G belong to the global part, negative positions are padding.
    r = torch.arange(block, device=dev)[:, None]
    j = torch.arange(span, device=dev)[None, :]
    band = (j >= r) & (j < r + local)  # [block, span]
    ok = band[None, None, None, None] & (key_pos >= global_)[:, None, :, None, None, :]
    s_loc = qb @ k_loc.transpose(-1, -2)  # [b,hkv,nblk,group*block,span]
    s_loc = s_loc.view(b, hkv, nblk, group, block, span)
    s_loc = torch.where(ok, s_loc, _NEG)

    # Global part: every query against the G leading keys, causally.
    # Gathered rather than sliced: a cache shorter than G (a short fresh prompt) still gives G rows.
    first = torch.arange(global_, device=dev).clamp(max=capacity - 1)[None].expand(b, global_)
    k_glob, v_glob = _take(k, first), _take(v, first)  # [b,hkv,G,D]
    s_glob = qb.view(b, hkv, rows * group, d) @ k_glob.transpose(-1, -2)
    s_glob = s_glob.view(b, hkv, nblk, group, block, global_)
    query_pos = block_first[:, :, None] + torch.arange(block, device=dev)  # [b,nblk,block]
    seen = torch.arange(global_, device=dev) <= query_pos[..., None]  # [b,nblk,block,G]
    s_glob = torch.where(seen[:, None, :, None], s_glob, _NEG)

    top = torch.maximum(s_loc.amax(-1, keepdim=True), s_glob.amax(-1, keepdim=True))
    p_loc = torch.exp(s_loc - top)
    p_glob = torch.exp(s_glob - top)
    denom = p_loc.sum(-1, keepdim=True) + p_glob.sum(-1, keepdim=True)
    o_loc = p_loc.view(b, hkv, nblk, group * block, span) @ v_loc
    o_glob = p_glob.view(b, hkv, rows * group, global_) @ v_glob
    out = (o_loc.view(b, hkv, nblk, group, block, d) + o_glob.view(b, hkv, nblk, group, block, d)) / denom
    return out.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, rows, d)


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [b,Hkv,C,D] at positions index [b,...] -> [b,Hkv,n,D]. One row: `index_select` with
    a flat index (no index tensor the size of the result); several rows: `gather`."""
    b, hkv, _, d = x.shape
    flat = index.reshape(b, -1)
    if b == 1:
        return x.index_select(2, flat[0])
    return x.gather(2, flat[:, None, :, None].expand(b, hkv, flat.shape[1], d))


def ring_slot(position: torch.Tensor, global_: int, ring: int) -> torch.Tensor:
    """Slot of an absolute position in a sliding-window cache: globals stay at their position,
    later tokens cycle through `ring` slots after them (a token overwrites the one `ring` before it)."""
    return torch.where(position < global_, position, global_ + (position - global_) % ring)


def sparse_mask(positions: torch.Tensor, capacity: int, local: int, global_: int) -> torch.Tensor:
    """The pattern as a boolean [b,1,S,C] mask over absolute key positions."""
    key = torch.arange(capacity, device=positions.device)[None, None, :]
    query = positions[:, :, None]
    return ((key <= query) & ((key < global_) | (key > query - local)))[:, None]


def dense_reference(q, k, v, positions, local: int, global_: int, block: int) -> torch.Tensor:
    """The same attention as a dense masked SDPA over the whole cache (reference only)."""
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=sparse_mask(positions, k.shape[2], local, global_))


@torch.library.custom_op(OP_NAME, mutates_args=())
def _marked(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor, local: int, global_: int, block: int, ring: int
) -> torch.Tensor:
    return block_sparse_attention(q, k, v, positions, local, global_, block, ring)


@_marked.register_fake
def _(q, k, v, positions, local, global_, block, ring):
    return torch.empty_like(q)


def attend(q, k, v, positions, pattern: SparsePattern) -> torch.Tensor:
    """The model's attention under `pattern`: exported as one marked op for the MLIR pass.
    With `pattern.ring`, k, v are a sliding-window cache of `pattern.ring_slots` slots.

    A single-token call (decode) uses query blocks of 1, so it reads only W + G keys.
    """
    block = 1 if isinstance(q.shape[2], int) and q.shape[2] == 1 else pattern.block
    return torch.ops.iree_glm.block_sparse_attention(
        q, k, v, positions, pattern.local, pattern.global_, block, pattern.ring
    )


def attention(q, k, v, positions, slots, key_positions, k_cache, v_cache, pattern: SparsePattern):
    """The model's attention layer under `pattern`: cache update (in place) + attention -> out.

    Without `pattern.ring` the cache [R,Hkv,C,D] is indexed by position: the new entries go
    to their positions (`model.write_cache_`) and the attention reads the first n
    (`key_positions` = 0..n-1). With it, the cache holds G + ring slots: position p goes to
    `ring_slot(p)` and the attention reads the whole (small) row, so memory and per-token work
    stay constant however long the conversation; `key_positions` is then unused. A call may
    write at most `pattern.chunk` tokens (the runtime splits longer prompts).
    """
    from iree_glm.frontend.kv_cache_ops import read_cache, write_cache_

    if pattern.ring:
        if k_cache.shape[2] != pattern.ring_slots:
            raise ValueError(f"a sliding-window cache has {pattern.ring_slots} slots (got {k_cache.shape[2]})")
        if isinstance(q.shape[2], int) and q.shape[2] > pattern.chunk:
            raise ValueError(f"a sliding-window cache takes at most {pattern.chunk} tokens per call (got {q.shape[2]})")
        where = ring_slot(positions, pattern.global_, pattern.ring)
        write_cache_(k_cache, k, slots, where)
        write_cache_(v_cache, v, slots, where)
        return attend(q, k_cache.index_select(0, slots), v_cache.index_select(0, slots), positions, pattern)
    write_cache_(k_cache, k, slots, positions)
    write_cache_(v_cache, v, slots, positions)
    keys, values = read_cache(k_cache, slots, key_positions), read_cache(v_cache, slots, key_positions)
    return attend(q, keys, values, positions, pattern)


def in_pattern(key_positions: torch.Tensor, positions: torch.Tensor, pattern: SparsePattern) -> torch.Tensor:
    """[B,S,n]: whether the query at positions [B,S] may see key_positions [n] under the pattern
    (causality aside): the globals and the last `local` positions."""
    key = key_positions[None, None, :]
    return (key < pattern.global_) | (key > positions[:, :, None] - pattern.local)


def enable(model: torch.nn.Module, pattern: SparsePattern | None, as_mask: bool = False) -> None:
    """Switch every attention layer of a `CausalLM` to `pattern` (None: dense).

    `as_mask`: export the pattern as the mask of the dense attention (prefill and decode alike),
    for a build whose attention kernel skips the key blocks it masks (passes/attention_kernel.py);
    else as the marked op that passes/sparse_attention.py lowers. A sliding-window cache (`ring`)
    is always the marked op."""
    for layer in model.model.layers:
        layer.self_attn.sparse = pattern
        layer.self_attn.sparse_as_mask = as_mask and pattern is not None and not pattern.ring
