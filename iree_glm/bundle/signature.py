"""The tensor shapes a compiled function declares, read from the module itself.

The export records each function's type in its reflection (`iree_glm.signature`, a string
such as `(!torch.vtensor<[1,?],si64>, ...) -> !torch.vtensor<[1,257],f32>`). The runtime
checks the manifest's numbers (context, cache slots, vocabulary, layers, heads) against these
before any call, because `manifest.json` can be edited and the compiled code does no bounds
checks: a larger `max_context` than the code was built for writes past the KV cache.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SIGNATURE_KEY = "iree_glm.signature"
_TENSOR = re.compile(r"vtensor<\[([^\]]*)\],\s*([a-z0-9]+)>")


@dataclass(frozen=True)
class TensorType:
    dims: tuple[int | None, ...]  # None: dynamic
    dtype: str


@dataclass(frozen=True)
class Signature:
    args: tuple[TensorType, ...]
    results: tuple[TensorType, ...]


def _tensors(text: str) -> tuple[TensorType, ...]:
    out = []
    for dims, dtype in _TENSOR.findall(text):
        sizes = tuple(None if d.strip() == "?" else int(d) for d in dims.split(",") if d.strip())
        out.append(TensorType(sizes, dtype))
    return tuple(out)


def parse_signature(text: str) -> Signature | None:
    """The signature in `text`, or None if it is not one of ours."""
    if "->" not in text:
        return None
    args, _, results = text.rpartition("->")
    try:
        return Signature(_tensors(args), _tensors(results))
    except ValueError:
        return None


def check_entry_point(where: str, name: str, text: str | None, *, batch: int, seq_len: int | None,
                      cache_layers: int, kv_heads: int, slots: int, head_dim: int, cache_dtype: str,
                      vocab_size: int | None, hidden_size: int | None = None) -> None:
    """Raise ValueError (one line, naming the manifest field) unless function `name`'s declared
    types agree with what the manifest says: tokens [batch, seq_len], `2 * cache_layers` caches
    [rows, kv_heads, slots, head_dim] of `cache_dtype`, and (vocab_size given) logits [..., vocab_size]
    or (hidden_size given) hidden states [..., hidden_size]."""
    sig = parse_signature(text) if text else None
    if sig is None or len(sig.args) < 4 or not sig.results:
        raise ValueError(f"{where}: function '{name}' declares no iree_glm signature (compiled by an older iree_glm?)")
    tokens, caches = sig.args[0], sig.args[4:]
    if tokens.dims[:1] != (batch,) or (len(tokens.dims) > 1 and tokens.dims[1] != seq_len):
        raise ValueError(f"{where}: entry point '{name}' says batch {batch}, seq_len {seq_len}; "
                         f"the module's function takes {list(tokens.dims[:2])}")
    if len(caches) != 2 * cache_layers:
        raise ValueError(f"{where}: model.num_layers says {cache_layers} cached layers; '{name}' takes {len(caches) // 2}")
    for cache in caches:
        _check_cache(where, name, cache.dims[1:], cache.dtype, kv_heads, slots, head_dim, cache_dtype)
    if vocab_size is not None and sig.results[0].dims[-1:] != (vocab_size,):
        raise ValueError(f"{where}: model.vocab_size is {vocab_size}; '{name}' returns logits {list(sig.results[0].dims)}")
    if hidden_size is not None and sig.results[0].dims[-1:] != (hidden_size,):
        raise ValueError(f"{where}: model.hidden_size is {hidden_size}; '{name}' returns hidden states {list(sig.results[0].dims)}")


def check_store_kv(where: str, text: str | None, *, cache_layers: int, kv_heads: int, slots: int,
                   head_dim: int, cache_dtype: str) -> None:
    """As `check_entry_point`, for `store_kv(slot, start, kv [2, L, Hkv, P, D], *caches)`."""
    sig = parse_signature(text) if text else None
    if sig is None or len(sig.args) < 3:
        raise ValueError(f"{where}: function 'store_kv' declares no iree_glm signature (compiled by an older iree_glm?)")
    kv, caches = sig.args[2], sig.args[3:]
    if kv.dims != (2, cache_layers, kv_heads, None, head_dim) or len(caches) != 2 * cache_layers:
        raise ValueError(f"{where}: model config (layers {cache_layers}, kv heads {kv_heads}, head_dim {head_dim}) "
                         f"does not match store_kv's {list(kv.dims)}")
    for cache in caches:
        _check_cache(where, "store_kv", cache.dims[1:], cache.dtype, kv_heads, slots, head_dim, cache_dtype)


def _check_cache(where, name, dims, dtype, kv_heads, slots, head_dim, cache_dtype) -> None:
    if dims[1:2] != (slots,):
        raise ValueError(f"{where}: options.kv_cache_slots / entry point capacity say {slots}; "
                         f"'{name}' was compiled for {dims[1] if len(dims) > 1 else '?'} KV positions per row")
    if dims != (kv_heads, slots, head_dim):
        raise ValueError(f"{where}: model.num_kv_heads {kv_heads}, head_dim {head_dim}: '{name}' takes caches {list(dims)}")
    if dtype != cache_dtype:
        raise ValueError(f"{where}: options.activation_dtype is {cache_dtype}; '{name}' takes {dtype} caches")
