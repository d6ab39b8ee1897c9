"""MLIR -> IREE VM bytecode (.vmfb) for one target, with the flags that were measured to help.

The flags are data (a `Target`), so device profiles can carry their own; `host_cpu_target`
is what the host profile uses.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .errors import UserError

# Attention decomposed before codegen into online-softmax linalg ops: ~10x faster on CPU than
# IREE's default lowering, and the only form vulkan-spirv compiles (its own lowering fails on
# `iree_linalg_ext.online_attention`).
ATTENTION_DECOMPOSITION = "--iree-preprocessing-pass-pipeline=builtin.module(util.func(iree-linalg-ext-convert-attention-to-online-attention,iree-linalg-ext-decompose-attention))"
# Measured on the host CPU with tools/bench.py --breakdown and side-by-side runs (README,
# "Prefill"); each flag kept because it won there:
HOST_CPU_FLAGS = (
    # Resolves to the build machine's CPU name and features (znver3 + AVX2/FMA/F16C on the
    # development host); a profile for another CPU names it instead.
    "--iree-llvmcpu-target-cpu=host",
    "--iree-opt-level=O3",
    ATTENTION_DECOMPOSITION,
    # Data tiling from global optimization: matmuls become mmt4d on packed operands and the
    # weights' packing is hoisted to load time (~1.3x prefill). The dispatch-creation path
    # (`--iree-opt-data-tiling`) fails to compile the decomposed attention's transposes.
    "--iree-global-opt-data-tiling=true",
    # mmt4d as IREE's hand-written ukernels rather than generated code (a further ~5%).
    "--iree-llvmcpu-enable-ukernels=all",
    # Keep the heads' transpose out of the q/k/v projections: propagated into them, they
    # became batch-like generics that data tiling skips (12% of prefill); now plain mmt4d
    # (~1.1x prefill, decode unchanged).
    "--iree-global-opt-propagate-transposes=false",
)
VULKAN_FLAGS = (ATTENTION_DECOMPOSITION,)


@dataclass(frozen=True)
class Target:
    """Where a module runs: IREE backend, HAL driver and compile flags."""

    backend: str  # "llvm-cpu", "vulkan-spirv", ...
    driver: str  # "local-task", "vulkan", ...
    flags: tuple[str, ...] = field(default_factory=tuple)

    def compile_args(self) -> list[str]:
        if self.backend == "llvm-cpu":
            device = ["--iree-hal-target-device=local", "--iree-hal-local-target-device-backends=llvm-cpu"]
        else:
            device = [f"--iree-hal-target-device={self.driver}"]
        return [*device, *self.flags]


def merge_flags(base: Sequence[str], overrides: Sequence[str]) -> tuple[str, ...]:
    """`base` with each `--option=value` of `overrides` replacing base's value of that option
    (iree-compile refuses an option given twice); other overrides are appended."""
    names = {f.split("=", 1)[0] for f in overrides}
    return (*[f for f in base if f.split("=", 1)[0] not in names], *overrides)


def host_cpu_target() -> Target:
    return Target(backend="llvm-cpu", driver="local-task", flags=HOST_CPU_FLAGS)


# A rewrite of input-phase IR between two compiler phases: (source file, destination file).
InputPass = Callable[[Path, Path], object]


def compile_mlir(
    mlir_path: Path, vmfb_path: Path, target: Target, extra_flags: tuple[str, ...] = (), log_path: Path | None = None,
    input_passes: Sequence[InputPass] = (),
) -> list[str]:
    """Compile an MLIR file (torch input dialect) to a .vmfb; returns the flags used.

    With `input_passes`, compilation is phased: `--compile-to=input`, each pass rewrites the
    linalg IR file in turn, then `--compile-from=input` finishes. On failure the compiler's
    full diagnostics go to `log_path` (if given) and the error names the first diagnostic,
    so a failure is one readable line.
    """
    import iree.compiler as ic

    args = list(merge_flags(target.compile_args(), extra_flags))
    try:
        if not input_passes:
            ic.compile_file(str(mlir_path), output_file=str(vmfb_path), input_type="torch", extra_args=args)
        else:
            with tempfile.TemporaryDirectory(prefix="iree_glm-phases-") as work:
                current = Path(work) / "input-0.mlirbc"
                ic.compile_file(str(mlir_path), output_file=str(current), input_type="torch", extra_args=[*args, "--compile-to=input"])
                for i, rewrite in enumerate(input_passes, 1):
                    rewritten = Path(work) / f"input-{i}.mlirbc"
                    rewrite(current, rewritten)
                    current = rewritten
                ic.compile_file(str(current), output_file=str(vmfb_path), extra_args=[*args, "--compile-from=input"])
    except ic.CompilerToolError as e:
        errors = [line for line in str(e).splitlines() if "error:" in line]
        first = errors[0][:300] if errors else str(e)[:300]
        where = ""
        if log_path is not None:
            Path(log_path).write_text(str(e))
            where = f" (full log: {log_path})"
        raise RuntimeError(f"iree-compile failed for {mlir_path.name}: {first}{where}") from None
    if not Path(vmfb_path).is_file() or Path(vmfb_path).stat().st_size == 0:
        # iree-compile interrupted by a signal deletes its output and can still exit 0.
        raise UserError(f"iree-compile wrote no module for {mlir_path.name} (was it interrupted?)")
    return args
