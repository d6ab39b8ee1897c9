"""Kernel sets and how their C sources become objects IREE links into its dispatches.

A kernel set is one instruction-set level: a folder of C sources beside this file (the same
file names in every set), the CPU features the code needs, the C flags that build it, and the
executable format IREE links the object into (`hal.executable.objects`). A build takes the set
that its *target* CPU supports (`select`, from kernels/target_cpu.py), never the build
machine's; the object is built at compile time and linked statically into the bundle's module.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from iree_glm.bundle.cpu_features import host_arch, missing_features, needs_amx, request_amx
from iree_glm.kernels.target_cpu import TargetCpu

FOLDER = Path(__file__).resolve().parent


@dataclass(frozen=True)
class KernelSet:
    """One instruction-set level's kernels: sources in `FOLDER / name`, what they need and how they build."""

    name: str  # folder, e.g. "x86_64_avx2"
    short: str  # what manifests call it, e.g. "avx2"
    arch: str  # "x86_64" or "aarch64"
    features: tuple[str, ...]  # LLVM feature names the code uses: the target must have them
    cflags: tuple[str, ...]
    object_format: str  # IREE's executable format the object links into
    kernels: tuple[str, ...] = ("int4", "int8", "attention")  # the kernels with a source in this set's folder
    base: Optional["KernelSet"] = None  # the set whose code the others are (the target has its features too)

    def provider(self, kernel: str) -> "KernelSet":
        """The set whose folder holds `kernel`'s source: this one, or its base for a kernel it
        has no form of its own for (e.g. attention in the AVX-512 set)."""
        if kernel in self.kernels:
            return self
        if self.base is None:
            raise ValueError(f"kernel set {self.name} has no {kernel} kernel")
        return self.base.provider(kernel)

    def source(self, kernel: str) -> Path:
        return FOLDER / self.provider(kernel).name / f"{kernel}.c"


X86_64_AVX2 = KernelSet(
    name="x86_64_avx2",
    short="avx2",
    arch="x86_64",
    features=("avx2", "fma", "f16c"),
    # -fno-tree-ter: without it GCC 12 moves the matrix kernel's vpmaddubsw ahead of their adds
    # and spills them (1.35x slower; clang ignores the flag with a warning).
    cflags=("-O3", "-mavx2", "-mfma", "-mf16c", "-std=c17", "-ffreestanding", "-fPIC", "-fno-stack-protector", "-fno-plt",
            "-fno-asynchronous-unwind-tables", "-fno-exceptions", "-fno-tree-ter"),
    object_format="embedded-elf-x86_64",
)
X86_64_AVX512 = KernelSet(
    name="x86_64_avx512",
    short="avx512",
    arch="x86_64",
    # The int4 / int8 prompt kernels use vpdpbusd on 512-bit vectors; the files include the AVX2
    # set's sources for the rest (decode, row quantization), hence its features too.
    features=("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512vnni"),
    cflags=("-O3", "-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-std=c17",
            "-ffreestanding", "-fPIC", "-fno-stack-protector", "-fno-plt", "-fno-asynchronous-unwind-tables", "-fno-exceptions",
            "-fno-tree-ter"),
    object_format="embedded-elf-x86_64",
    kernels=("int4", "int8"),
    base=X86_64_AVX2,
)
X86_64_AMX = KernelSet(
    name="x86_64_amx",
    short="amx",
    arch="x86_64",
    # The int8 prompt kernel runs on AMX tiles (tdpbssd), regrouping weights with vpermt2b
    # (VBMI, which every AMX CPU has); the rest is the AVX-512 set's. The
    # process must request the tile state from Linux first (cpu_features.request_amx).
    features=(*X86_64_AVX512.features, "avx512vbmi", "amx-tile", "amx-int8"),
    cflags=(*X86_64_AVX512.cflags, "-mavx512vbmi", "-mamx-tile", "-mamx-int8"),
    object_format="embedded-elf-x86_64",
    kernels=("int8",),
    base=X86_64_AVX512,
)
# Best first: a target gets the first set whose architecture and features it has.
KERNEL_SETS = (X86_64_AMX, X86_64_AVX512, X86_64_AVX2)


def by_name(name: str) -> KernelSet:
    """The kernel set whose folder is `name` (as a manifest's KernelChoice.kernel_set records it)."""
    found = next((s for s in KERNEL_SETS if s.name == name), None)
    if found is None:
        raise ValueError(f"no kernel set {name!r} (have: {', '.join(s.name for s in KERNEL_SETS)})")
    return found


def select(cpu: TargetCpu) -> tuple[KernelSet | None, str | None]:
    """The kernel set for a target CPU, or None and why not."""
    candidates = [s for s in KERNEL_SETS if s.arch == cpu.arch]
    if not candidates:
        return None, f"target {cpu.describe()}: no kernel set of ours for {cpu.arch}"
    for kernel_set in candidates:
        if cpu.has(kernel_set.features):
            return kernel_set, None
    if not cpu.known:
        return None, f"target {cpu.describe()}: unknown CPU (name its features with --iree-llvmcpu-target-cpu-features)"
    missing = [f for f in candidates[-1].features if f not in cpu.features]
    return None, f"target {cpu.describe()} lacks {', '.join(missing)}"


class KernelUnavailable(RuntimeError):
    """The kernel cannot be used for this build (the reason is the message)."""


def host_reason(kernel_set: KernelSet = X86_64_AVX2) -> Optional[str]:
    """Why this machine cannot run `kernel_set`'s code (None if it can): tests and benchmarks
    that call the kernels directly skip with it."""
    if host_arch() != kernel_set.arch:
        return f"the host is {platform.machine()}, the {kernel_set.name} kernels need {kernel_set.arch}"
    missing = missing_features(kernel_set.features)
    if missing:
        return f"the CPU lacks {', '.join(missing)}"
    # Running a tile kernel needs the process's AMX permission, which this requests (once).
    return request_amx() if needs_amx(kernel_set.features) else None


def _compiler() -> Optional[str]:
    return next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)


def build_reason(kernel_set: KernelSet = X86_64_AVX2) -> Optional[str]:
    """Why `kernel_set` cannot be built here (None if it can)."""
    if kernel_set.arch != host_arch():
        return f"no C compiler for {kernel_set.arch} here"
    return None if _compiler() else "no C compiler (cc, gcc or clang) on PATH"


def unavailable_reason(kernel_set: KernelSet = X86_64_AVX2) -> Optional[str]:
    """Why `kernel_set` cannot be built and run here (None if it can)."""
    return host_reason(kernel_set) or build_reason(kernel_set)


def build_object(folder: Path, source: Path, kernel_set: KernelSet = X86_64_AVX2, shared: bool = False) -> Path:
    """Compile `source` (a kernel of `kernel_set`) to an ELF object in `folder` (kept until IREE
    has linked it; named after the set, as one build may link several sets' objects); with
    `shared`, to a shared library instead (tests call the kernels directly)."""
    reason = build_reason(kernel_set) or (host_reason(kernel_set) if shared else None)
    if reason:
        raise KernelUnavailable(reason)
    cc = _compiler()
    out = Path(folder) / f"{source.stem}_{kernel_set.short}.{'so' if shared else 'o'}"
    mode = "-shared" if shared else "-c"
    proc = subprocess.run([cc, *kernel_set.cflags, mode, str(source), "-o", str(out)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise KernelUnavailable(f"{cc} failed on {source.name}: {proc.stderr.strip().splitlines()[-1:]}")
    return out
