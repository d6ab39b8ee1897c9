"""Reading and writing the per-layer KV-cache tensors in torch, in forms torch.export and
IREE turn into in-place scatters and slices of the caller's buffer.
"""

from __future__ import annotations

import torch

def write_cache_(cache: torch.Tensor, new: torch.Tensor, slots: torch.Tensor, positions: torch.Tensor) -> None:
    """In place: cache [R,Hkv,C,D] row slots[b] takes new [B,Hkv,S,D] at positions [B,S].

    One `index_put_` over the new entries only; exported, it becomes a scatter that IREE
    performs in the caller's buffer (see export.py), so nothing else of the cache is touched.
    """
    hkv = cache.shape[1]
    heads = torch.arange(hkv, device=cache.device)[None, :, None]
    cache.index_put_((slots[:, None, None], heads, positions[:, None, :]), new)


def read_cache(cache: torch.Tensor, slots: torch.Tensor, key_positions: torch.Tensor) -> torch.Tensor:
    """The rows `slots` of cache [R,Hkv,C,D] at `key_positions` [n] -> [B,Hkv,n,D].

    One gather over (row, head, position): two `index_select`s would copy whole rows first."""
    heads = torch.arange(cache.shape[1], device=cache.device)[None, :, None]
    return cache[slots[:, None, None], heads, key_positions[None, None, :]]


def read_cache_prefix(cache: torch.Tensor, slots: torch.Tensor, n: int) -> torch.Tensor:
    """Positions 0..n-1 of the rows `slots` of cache [R,Hkv,C,D], as [n,B,Hkv,D] in f32.

    Slices rather than gathers, so that IREE reads the cache buffer in place: one row is a
    slice at a run-time offset; several rows are one gather over rows only. Positions come
    first because torch.export checks every view's contiguity: a [B,Hkv,n,D] view of the
    cache would compare n with C and fix n to one of them (so would converting the view: the
    rows are converted before slicing; compiled, the conversion fuses into the reads)."""
    return read_cache_rows(cache, slots).float().permute(2, 0, 1, 3).narrow(0, 0, n)


def read_cache_rows(cache: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """The whole rows `slots` of cache [R,Hkv,C,D] -> [B,Hkv,C,D]: one row is a slice at a
    run-time offset (read in place by the reductions IREE generates; the attention kernel's
    pass hands the kernel the cache and the offset, passes/attention_kernel.py, since a slice
    as a dispatch operand is copied); several rows are one gather over rows only."""
    if slots.shape[0] == 1:
        row = slots[0].item()
        torch._check(row >= 0)
        torch._check(row < cache.shape[0])
        return cache.narrow(0, row, 1)
    return cache.index_select(0, slots)
