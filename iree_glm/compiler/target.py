"""MLIR -> IREE VM bytecode (.vmfb) for one target, with the flags that were measured to help.

The flags are data (a `Target`), so device profiles can carry their own; `host_cpu_target`
is what the host profile uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from iree_glm.planner.profile import DEFAULT_FLAGS, TUNING_SPEC, Device, tuning_spec_path

# Attention decomposed before codegen into online-softmax linalg ops: ~10x faster on CPU than
# IREE's default lowering, and the only form vulkan-spirv compiles (its own lowering fails on
# `iree_linalg_ext.online_attention`).
ATTENTION_DECOMPOSITION = "--iree-preprocessing-pass-pipeline=builtin.module(util.func(iree-linalg-ext-convert-attention-to-online-attention,iree-linalg-ext-decompose-attention))"
# Measured on the host CPU with tools/bench.py --breakdown and side-by-side runs
# (docs/benchmarks.md); each flag kept because it won there:
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
    # No DWARF in the executables: it named the build's temporary folders, so two builds of one
    # checkpoint differed, and it was a quarter of a small module. Symbols stay (profilers,
    # the tests' kernel checks).
    "--iree-llvmcpu-debug-symbols=false",
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


def device_target(device: Device) -> Target:
    """The lowering `Target` for a profile device's modules: its flags, with "@defaults" expanded
    to ours for its backend and "@tuning-spec:NAME" to the shipped spec's path."""
    defaults = {"llvm-cpu": HOST_CPU_FLAGS, "vulkan-spirv": VULKAN_FLAGS}.get(device.backend, ())
    flags: tuple[str, ...] = ()
    for f in device.flags:  # a flag after "@defaults" overrides the default of the same option
        if f.startswith(TUNING_SPEC):
            f = f"--iree-codegen-tuning-spec-path={tuning_spec_path(f[len(TUNING_SPEC):])}"
        flags = merge_flags(flags, defaults if f == DEFAULT_FLAGS else (f,))
    return Target(backend=device.backend, driver=device.hal_driver, flags=flags)
