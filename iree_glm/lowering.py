"""MLIR -> IREE VM bytecode (.vmfb) for one target, with the flags that were measured to help.

The flags are data (a `Target`), so device profiles can carry their own; `host_cpu_target`
is what the host profile uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# Measured on the host CPU (see ../shared/IREE_NOTES.md and tools/bench.py): O3 with data
# tiling is the fastest stock lowering for fp32 prefill and leaves decode unchanged.
HOST_CPU_FLAGS = (
    "--iree-llvmcpu-target-cpu=host",
    "--iree-opt-level=O3",
    # Attention as online-softmax tiles: ~10x faster on CPU than IREE's default lowering.
    "--iree-preprocessing-pass-pipeline=builtin.module(util.func(iree-linalg-ext-convert-attention-to-online-attention,iree-linalg-ext-decompose-attention))",
)


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


def host_cpu_target() -> Target:
    return Target(backend="llvm-cpu", driver="local-task", flags=HOST_CPU_FLAGS)


def compile_mlir(
    mlir_path: Path, vmfb_path: Path, target: Target, extra_flags: tuple[str, ...] = (), log_path: Path | None = None
) -> list[str]:
    """Compile an MLIR file (torch input dialect) to a .vmfb; returns the flags used.

    On failure the compiler's full diagnostics go to `log_path` (if given) and the error
    names the first diagnostic, so a failure is one readable line.
    """
    import iree.compiler as ic

    args = [*target.compile_args(), *extra_flags]
    try:
        ic.compile_file(str(mlir_path), output_file=str(vmfb_path), input_type="torch", extra_args=args)
    except ic.CompilerToolError as e:
        errors = [line for line in str(e).splitlines() if "error:" in line]
        first = errors[0][:300] if errors else str(e)[:300]
        where = ""
        if log_path is not None:
            Path(log_path).write_text(str(e))
            where = f" (full log: {log_path})"
        raise RuntimeError(f"iree-compile failed for {mlir_path.name}: {first}{where}") from None
    return args
