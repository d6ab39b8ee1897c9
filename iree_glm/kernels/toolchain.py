"""Kernel sets and how their C sources become objects IREE links into its dispatches.

A kernel set is one instruction-set level: a folder of C sources beside this file (the same
file names in every set), the CPU features the code needs, the C flags that build it, and the
executable format IREE links the object into (`hal.executable.objects`). The object is built at
compile time with the system C compiler and linked statically into the bundle's module.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

FOLDER = Path(__file__).resolve().parent


@dataclass(frozen=True)
class KernelSet:
    """One instruction-set level's kernels: sources in `FOLDER / name`, what they need and how they build."""

    name: str
    machines: tuple[str, ...]  # platform.machine() values that run it
    features: tuple[str, ...]  # /proc/cpuinfo flags the code uses
    cflags: tuple[str, ...]
    object_format: str  # IREE's executable format the object links into

    def source(self, kernel: str) -> Path:
        return FOLDER / self.name / f"{kernel}.c"


X86_64_AVX2 = KernelSet(
    name="x86_64_avx2",
    machines=("x86_64", "amd64"),
    features=("avx2", "fma", "f16c"),
    # -fno-tree-ter: without it GCC 12 moves the matrix kernel's vpmaddubsw ahead of their adds
    # and spills them (1.35x slower; clang ignores the flag with a warning).
    cflags=("-O3", "-mavx2", "-mfma", "-mf16c", "-std=c17", "-ffreestanding", "-fPIC", "-fno-stack-protector", "-fno-plt",
            "-fno-asynchronous-unwind-tables", "-fno-exceptions", "-fno-tree-ter"),
    object_format="embedded-elf-x86_64",
)
KERNEL_SETS = {s.name: s for s in (X86_64_AVX2,)}


class KernelUnavailable(RuntimeError):
    """The kernel cannot be used for this build (the reason is the message)."""


def host_reason(kernel_set: KernelSet = X86_64_AVX2) -> Optional[str]:
    """Why this machine cannot run `kernel_set` (None if it can)."""
    if platform.machine().lower() not in kernel_set.machines:
        return f"the host is {platform.machine()}, the {kernel_set.name} kernels need {kernel_set.machines[0]}"
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        return f"cannot read /proc/cpuinfo to check for {', '.join(kernel_set.features)}"
    missing = [f for f in kernel_set.features if f not in flags]
    return f"the CPU lacks {', '.join(missing)}" if missing else None


def _compiler() -> Optional[str]:
    return next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)


def unavailable_reason(kernel_set: KernelSet = X86_64_AVX2) -> Optional[str]:
    """Why `kernel_set` cannot be built and run here (None if it can)."""
    return host_reason(kernel_set) or (None if _compiler() else "no C compiler (cc, gcc or clang) on PATH")


def build_object(folder: Path, source: Path, kernel_set: KernelSet = X86_64_AVX2, shared: bool = False) -> Path:
    """Compile `source` (a kernel of `kernel_set`) to an ELF object in `folder` (kept until IREE
    has linked it); with `shared`, to a shared library instead (tests call the kernels directly)."""
    reason = unavailable_reason(kernel_set)
    if reason:
        raise KernelUnavailable(reason)
    cc = _compiler()
    out = Path(folder) / f"{source.stem}.{'so' if shared else 'o'}"
    mode = "-shared" if shared else "-c"
    proc = subprocess.run([cc, *kernel_set.cflags, mode, str(source), "-o", str(out)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise KernelUnavailable(f"{cc} failed on {source.name}: {proc.stderr.strip().splitlines()[-1:]}")
    return out
