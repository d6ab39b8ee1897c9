"""What a bundle's f32 matmuls multiply in: f32, or bf16 inputs accumulated in f32.

`compile --compute-dtype bf16` (default: the profile device's `compute_dtype`) keeps the weights
f32 in the parameter archive and every elementwise op, norm and the KV cache f32; only the
inputs of the named matmuls (the linear layers and the head) are rounded to bf16, which the CPU
multiplies with `vdpbf16ps` into f32 accumulators. With data tiling the weights' rounding and
packing run once at load time, so decode streams bf16 weights (half the bytes of f32).

IREE has this as a pass (`iree-global-opt-demote-contraction-inputs`), but its own flag
(`--iree-global-opt-demote-contraction-inputs-type`) runs it after global optimization has
generalized the named matmuls, where it matches nothing: the bundle came out bit-identical to
f32. We add the pass to the preprocessing pipeline instead, before that generalization.

Where the target also has AMX-BF16 (and the build links the AMX kernel set), the layers'
weights (and an untied head's) are stored bf16 instead and call our kernels (kernels/bf16.py:
the same rounding of x, f32 sums); the demotion then covers a tied head only
(compiler/kernel_choice.py's `_bf16`).

Only for x86-64 targets with AVX-512 BF16: without `avx512bf16` IREE would emulate bf16 in
f32 (slower than f32 and less exact), so such a target is refused in one line.
"""

from __future__ import annotations

from typing import Sequence

from iree_glm.errors import UserError
from iree_glm.kernels import target_cpu

COMPUTE_DTYPES = ("f32", "bf16")
PIPELINE_FLAG = "--iree-preprocessing-pass-pipeline"
DEMOTE_PASS = "iree-global-opt-demote-contraction-inputs{type=bf16 operation=matmul}"
NEEDS = {"x86_64": "avx512bf16"}  # the feature that multiplies bf16 pairs into f32, per architecture


def check(name: str, option: str = "--compute-dtype") -> str:
    if name not in COMPUTE_DTYPES:
        raise UserError(f"{option}: unknown compute dtype '{name}' (choose from {', '.join(COMPUTE_DTYPES)})")
    return name


def refusal(name: str, backend: str, flags: Sequence[str]) -> str | None:
    """Why the target these llvm-cpu flags compile for cannot compute in `name` (None: it can)."""
    if name == "f32":
        return None
    if backend != "llvm-cpu":
        return f"--compute-dtype {name} is for llvm-cpu targets (this device's backend is {backend})"
    cpu = target_cpu.from_flags(flags)
    feature = NEEDS.get(cpu.arch)
    if feature is None:
        return f"--compute-dtype {name} is supported on x86-64 with avx512bf16 only (target: {cpu.describe()})"
    if not cpu.has([feature]):
        return f"--compute-dtype {name}: target CPU {cpu.describe()} lacks {feature} (bf16 would be emulated, slower than f32)"
    return None


def flag_overrides(name: str, flags: Sequence[str]) -> tuple[str, ...]:
    """The compile flags to add to `flags` (target and extra flags) for compute dtype `name`:
    the preprocessing pipeline with the demotion pass appended (last `util.func` pass)."""
    if name == "f32":
        return ()
    pipeline = next((f.split("=", 1)[1] for f in reversed(flags) if f.startswith(PIPELINE_FLAG + "=")), None)
    if pipeline is None:
        return (f"{PIPELINE_FLAG}=builtin.module(util.func({DEMOTE_PASS}))",)
    if not pipeline.endswith("))") or "util.func(" not in pipeline:
        raise UserError(f"--compute-dtype {name}: cannot add the bf16 demotion to the preprocessing pipeline '{pipeline}' "
                        "(expected builtin.module(util.func(...)))")
    return (f"{PIPELINE_FLAG}={pipeline[:-2]},{DEMOTE_PASS}))",)
