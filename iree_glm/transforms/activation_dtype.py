"""The dtype a bundle computes in: f32, f16 or bf16 weights, activations and KV cache.

`--activation-dtype` on compile (default: the device profile's `activation_dtype`). The model
is cast before export, so the parameter archive holds weights in that dtype and every matmul
and elementwise op runs in it. What must stay wide does: RMSNorm normalizes in f32
(model.RMSNorm), the rotary frequencies stay f32 (only cos/sin are rounded), and the logits
leave the module as f32. Which dtype is fastest depends on the CPU (docs/benchmarks.md, tools/bench.py).
"""

from __future__ import annotations

from iree_glm.bundle.dtypes import DTYPES

from iree_glm.errors import UserError


def check(name: str, option: str = "--activation-dtype"):
    """The torch dtype of `name`, or a UserError naming the option."""
    import torch

    if name not in DTYPES:
        raise UserError(f"{option}: unknown dtype '{name}' (choose from {', '.join(DTYPES)})")
    return getattr(torch, DTYPES[name])


def convert(model, name: str):
    """Cast `model` (an iree_glm CausalLM) in place to compute in dtype `name`; returns it."""
    import torch

    dtype = check(name)
    if dtype == torch.float32:
        return model
    rotary = model.model.rotary
    inv_freq = rotary.inv_freq.clone()
    model.to(dtype)
    rotary.inv_freq = inv_freq  # positions x frequencies in f32: bf16 would blur long positions
    rotary.__class__ = _narrow_subclass(type(rotary), "cos_sin", dtype, _all)
    model.__class__ = _narrow_subclass(type(model), "forward", torch.float32, _first)
    return model


def _all(out):
    return out if isinstance(out, tuple) else (out,)


def _first(out):
    return out[:1] if isinstance(out, tuple) else (out,)


def _narrow_subclass(base: type, method: str, dtype, which) -> type:
    """A subclass of `base` whose `method` casts its floating outputs (those `which` picks) to dtype.

    Subclassing keeps the module's parameter names, so the archive and the export agree."""
    import functools

    import torch

    original = getattr(base, method)

    @functools.wraps(original)  # torch.export reads the signature
    def cast(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        chosen = which(out)
        cast_out = tuple(t.to(dtype) if torch.is_tensor(t) and t.is_floating_point() else t for t in chosen)
        if not isinstance(out, tuple):
            return cast_out[0]
        return cast_out + out[len(chosen):]

    return type(f"{base.__name__}In{str(dtype).split('.')[-1]}", (base,), {method: cast})


