"""Block-sparse causal attention: the G first tokens plus a sliding window of W keys.

A query at position p sees key positions k <= p with k < G (globals) or k > p - W (its
window, W keys including itself). Queries are processed in blocks of B: each block gathers
only the W + B - 1 keys its window can reach, plus the G globals, so the work and the memory
grow as S * (W + B + G) instead of S * C.

The model marks its attention with the custom op `iree_glm::block_sparse_attention`
(`attend`); the MLIR pass in `iree_glm.passes.sparse_attention` replaces each marked op by
`block_sparse_attention` below, exported through torch. `dense_reference` is the same
pattern as a dense masked SDPA: the reference for tests, never the implementation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import UserError

OP_NAME = "iree_glm::block_sparse_attention"
# A finite "minus infinity": a fully masked row stays finite (its output is discarded anyway).
_NEG = -1e30


@dataclass(frozen=True)
class SparsePattern:
    """Window of `local` keys, `global_` leading tokens, query blocks of `block`."""

    local: int
    global_: int
    block: int
    ring: bool = False  # KV cache of G + W slots (globals + a ring of the last W), see `attention`

    def __str__(self) -> str:
        return f"local={self.local},global={self.global_},block={self.block}" + (",ring" if self.ring else "")

    @property
    def ring_slots(self) -> int:
        """KV-cache positions a sliding-window cache needs: the G globals plus the last W."""
        return self.global_ + self.local

    def check(self, max_context: int, option: str = "--sparse-attention") -> None:
        """Validate for a bundle of `max_context` positions (bundles do not serve the ring cache yet)."""
        if self.ring:
            raise UserError(f"{option}: 'ring' (sliding-window KV cache) is not supported in bundles yet; "
                            "the runtime session indexes its cache by position")
        for name, value in (("local", self.local), ("global", self.global_), ("block", self.block)):
            if value <= 0:
                raise UserError(f"{option}: {name} must be positive (got {value})")
        if self.block > max_context:
            raise UserError(f"{option}: block={self.block} is larger than the context ({max_context})")
        if self.global_ >= max_context:
            raise UserError(f"{option}: global={self.global_} must be smaller than the context ({max_context})")


def parse_pattern(text: str, option: str = "--sparse-attention") -> SparsePattern:
    """'local=W,global=G,block=B[,ring]' -> SparsePattern (one-line UserError if malformed)."""
    values: dict[str, int] = {}
    ring = False
    for part in text.split(","):
        if part.strip() == "ring":
            ring = True
            continue
        m = re.fullmatch(r"\s*(local|global|block)\s*=\s*(-?\d+)\s*", part)
        if not m:
            raise UserError(f"{option}: cannot parse '{part.strip()}' in '{text}' (expected local=W,global=G,block=B)")
        if m.group(1) in values:
            raise UserError(f"{option}: '{m.group(1)}' given twice in '{text}'")
        values[m.group(1)] = int(m.group(2))
    missing = [k for k in ("local", "global", "block") if k not in values]
    if missing:
        raise UserError(f"{option}: missing {', '.join(missing)} in '{text}' (expected local=W,global=G,block=B)")
    return SparsePattern(values["local"], values["global"], values["block"], ring)


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
    [b,Hkv,C,D]; start [b,1] -> [b,H,rows,D]. With `ring` = W the cache is a sliding window
    (`ring_slot`); a block's span must then fit in the ring (decode: block 1).

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


def ring_slot(position: torch.Tensor, global_: int, local: int) -> torch.Tensor:
    """Slot of an absolute position in a sliding-window cache: globals stay at their position,
    later tokens cycle through W slots after them (a token overwrites the one W before it)."""
    return torch.where(position < global_, position, global_ + (position - global_) % local)


def write_ring(cache: torch.Tensor, new: torch.Tensor, positions: torch.Tensor, global_: int, local: int) -> torch.Tensor:
    """cache [b,Hkv,G+W,D] with new [b,Hkv,S,D] (positions [b,S], consecutive) written: each
    slot takes the newest position that maps to it; slots no new position maps to keep theirs.
    An elementwise select over the cache, like the model's dense cache write."""
    b, hkv, slots, d = cache.shape
    s = new.shape[2]
    first, last = positions[:, :1], positions[:, -1:]  # [b,1]
    c = torch.arange(slots, device=cache.device)[None, :]  # [1,slots]
    source = torch.where(c < global_, c, last - (last - c) % local)  # newest position of each slot
    inside = (source >= first) & (source <= last) & ((c < global_) | (source >= global_))
    index = (source - first).clamp(0, s - 1)[:, None, :, None].expand(b, hkv, slots, d)
    return torch.where(inside[:, None, :, None], new.gather(2, index), cache)


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


def attend(q, k, v, positions, pattern: SparsePattern, ring: bool = False) -> torch.Tensor:
    """The model's attention under `pattern`: exported as one marked op for the MLIR pass.
    `ring`: k, v are a sliding-window cache of `pattern.ring_slots` positions.

    A single-token call (decode) uses query blocks of 1, so it reads only W + G keys.
    """
    block = 1 if isinstance(q.shape[2], int) and q.shape[2] == 1 else pattern.block
    return torch.ops.iree_glm.block_sparse_attention(
        q, k, v, positions, pattern.local, pattern.global_, block, pattern.local if ring else 0
    )


def attention(q, k, v, positions, slots, key_positions, k_cache, v_cache, pattern: SparsePattern):
    """The model's attention layer under `pattern`: cache update (in place) + attention -> out.

    Without `pattern.ring` the cache [R,Hkv,C,D] is indexed by position and written like the
    model's dense cache (`model.write_cache_`); the attention reads the first n positions
    (`key_positions` = 0..n-1). With it, the cache holds G + W slots (`write_ring`): decode
    attends over the ring, so memory and per-token work stay constant however long the
    conversation; a prefill attends over its own keys, so it must start at position 0.
    """
    from .model import read_cache, write_cache_

    if not pattern.ring:
        write_cache_(k_cache, k, slots, positions)
        write_cache_(v_cache, v, slots, positions)
        keys, values = read_cache(k_cache, slots, key_positions), read_cache(v_cache, slots, key_positions)
        return attend(q, keys, values, positions, pattern)
    if k_cache.shape[2] != pattern.ring_slots:
        raise ValueError(f"a sliding-window cache has {pattern.ring_slots} slots (got {k_cache.shape[2]})")
    ring_k = write_ring(k_cache.index_select(0, slots), k, positions, pattern.global_, pattern.local)
    ring_v = write_ring(v_cache.index_select(0, slots), v, positions, pattern.global_, pattern.local)
    k_cache.index_copy_(0, slots, ring_k)
    v_cache.index_copy_(0, slots, ring_v)
    if isinstance(q.shape[2], int) and q.shape[2] == 1:  # decode: over the ring
        return attend(q, ring_k, ring_v, positions, pattern, ring=True)
    return attend(q, k, v, positions, pattern)  # fresh prefill: over its own keys


def enable(model: torch.nn.Module, pattern: SparsePattern | None) -> None:
    """Switch every attention layer of a `CausalLM` to `pattern` (None: dense)."""
    for layer in model.model.layers:
        layer.self_attn.sparse = pattern
