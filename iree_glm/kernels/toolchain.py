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
MATMUL_ROWS = 64  # rows of x a matrix kernel call takes, unless its set says otherwise (KernelSet.matmul_rows)


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
    # Its int4 / int8 sources have the few-row matrix-vector kernels that `verify` calls (each row
    # bit for bit the decode kernel's); a set without them verifies on the prompt path.
    verify_rows: bool = False
    # Rows of x one call of a prompt (matrix) kernel takes, per kernel where not MATMUL_ROWS: the
    # C file's limit, and the dispatch grid's range of rows (the weights are read once per call).
    matmul_rows: tuple[tuple[str, int], ...] = ()

    def rows_per_call(self, kernel: str) -> int:
        """Rows of x one call of `kernel`'s matrix kernel takes (its provider's number)."""
        provider = self.provider(kernel)
        return dict(provider.matmul_rows).get(kernel, MATMUL_ROWS) if provider is not None else MATMUL_ROWS

    def provider(self, kernel: str) -> Optional["KernelSet"]:
        """The set whose folder holds `kernel`'s source: this one, or its base for a kernel it
        has no form of its own for (e.g. attention in the AMX and i8mm sets); None where no set
        of the chain has one."""
        if kernel in self.kernels:
            return self
        return self.base.provider(kernel) if self.base is not None else None

    def source(self, kernel: str) -> Path:
        provider = self.provider(kernel)
        if provider is None:
            raise ValueError(f"kernel set {self.name} has no {kernel} kernel")
        return FOLDER / provider.name / f"{kernel}.c"


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
    verify_rows=True,
)
X86_64_AVX512 = KernelSet(
    name="x86_64_avx512",
    short="avx512",
    arch="x86_64",
    # The int4 / int8 prompt kernels use vpdpbusd on 512-bit vectors, attention 16-lane FMAs; the
    # files include the AVX2 set's sources for the rest (decode, row quantization, attention of
    # up to 8 rows), hence its features too.
    features=("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512vnni"),
    cflags=("-O3", "-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-std=c17",
            "-ffreestanding", "-fPIC", "-fno-stack-protector", "-fno-plt", "-fno-asynchronous-unwind-tables", "-fno-exceptions",
            "-fno-tree-ter"),
    object_format="embedded-elf-x86_64",
    base=X86_64_AVX2,
    verify_rows=True,  # x86_64_avx2's, included
)
# Arm: freestanding PIC code as the x86 sets'; -mno-outline-atomics keeps GCC from calling
# libgcc's atomics helpers, which IREE's embedded-ELF link cannot resolve.
_ARM_CFLAGS = ("-O3", "-std=c17", "-ffreestanding", "-fPIC", "-fno-stack-protector", "-fno-plt",
               "-fno-asynchronous-unwind-tables", "-fno-exceptions", "-mno-outline-atomics")
AARCH64_DOTPROD = KernelSet(
    name="aarch64_dotprod",
    short="dotprod",
    arch="aarch64",
    features=("dotprod", "fullfp16"),
    cflags=("-march=armv8.2-a+dotprod+fp16", *_ARM_CFLAGS),
    object_format="embedded-elf-arm_64",
    verify_rows=True,
)
AARCH64_I8MM = KernelSet(
    name="aarch64_i8mm",
    short="i8mm",
    arch="aarch64",
    # Its own sources are the prompt kernels (`smmla`); decode, verify rows, row quantization and
    # attention are the dotprod set's, hence its features too.
    features=("dotprod", "fullfp16", "i8mm"),
    cflags=("-march=armv8.2-a+dotprod+fp16+i8mm", *_ARM_CFLAGS),
    object_format="embedded-elf-arm_64",
    kernels=("int4", "int8"),
    base=AARCH64_DOTPROD,
    verify_rows=True,  # aarch64_dotprod's, included
)
X86_64_AMX = KernelSet(
    name="x86_64_amx",
    short="amx",
    arch="x86_64",
    # The int8 and int4 prompt kernels run on AMX tiles (tdpbssd), int8 regrouping weights with
    # vpermt2b (VBMI, which every AMX CPU has); the rest is the AVX-512 set's. The
    # process must request the tile state from Linux first (cpu_features.request_amx).
    # Its bf16 kernel and the int4 prompt path (tdpbf16ps, vdpbf16ps, vcvtne2ps2bf16) need
    # AVX512-BF16 and AMX-BF16, which every AMX CPU has (kernels/bf16.py's FEATURES).
    features=(*X86_64_AVX512.features, "avx512vbmi", "amx-tile", "amx-int8", "avx512bf16", "amx-bf16"),
    cflags=(*X86_64_AVX512.cflags, "-mavx512vbmi", "-mamx-tile", "-mamx-int8", "-mavx512bf16", "-mamx-bf16"),
    object_format="embedded-elf-x86_64",
    kernels=("int4", "int8", "bf16"),
    base=X86_64_AVX512,
    verify_rows=True,  # x86_64_avx2's, included
    # AMX multiplies faster than 64 rows' weights arrive (kernels.md): AMX_MAX_ROWS in int4.c, int8.c.
    matmul_rows=(("int4", 256), ("int8", 256), ("bf16", 256)),  # bf16: BF16_MAX_ROWS in bf16_tiles.h
)
# Best first: a target gets the first set whose architecture and features it has.
KERNEL_SETS = (X86_64_AMX, X86_64_AVX512, X86_64_AVX2, AARCH64_I8MM, AARCH64_DOTPROD)


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


def _compiler(arch: str) -> Optional[list[str]]:
    """The command that compiles C for `arch` here: the native compiler, or a cross compiler
    (Debian's `ARCH-linux-gnu-gcc`, or clang told the target)."""
    native = [[c] for c in ("cc", "gcc")] if arch == host_arch() else []
    candidates = [*native, [f"{arch}-linux-gnu-gcc"], ["clang", *(() if arch == host_arch() else (f"--target={arch}-linux-gnu",))]]
    return next((c for c in candidates if shutil.which(c[0])), None)


def build_reason(kernel_set: KernelSet = X86_64_AVX2) -> Optional[str]:
    """Why `kernel_set` cannot be built here (None if it can)."""
    if _compiler(kernel_set.arch):
        return None
    if kernel_set.arch == host_arch():
        return "no C compiler (cc, gcc or clang) on PATH"
    return f"no {kernel_set.arch} C compiler ({kernel_set.arch}-linux-gnu-gcc or clang)"


def object_format(obj: Path) -> str:
    """IREE's executable format for an object of ours (`hal.executable.objects` links an object
    only into executables of its format), from the object's own ELF machine, so the MLIR cannot
    name a format the object was not built for."""
    with open(obj, "rb") as f:
        header = f.read(20)
    arch = {62: "x86_64", 183: "aarch64"}.get(int.from_bytes(header[18:20], "little")) if header[:4] == b"\x7fELF" else None
    found = next((s.object_format for s in KERNEL_SETS if s.arch == arch), None)
    if found is None:
        raise KernelUnavailable(f"{obj}: not an x86-64 or aarch64 ELF object")
    return found


def unavailable_reason(kernel_set: KernelSet = X86_64_AVX2) -> Optional[str]:
    """Why `kernel_set` cannot be built and run here (None if it can)."""
    return host_reason(kernel_set) or build_reason(kernel_set)


@dataclass(frozen=True)
class KernelObject:
    """A kernel's object as a build links it, with what the dispatches calling it must know
    (how many rows of x a matrix-kernel call takes), typed rather than read from its file name.
    Path-like: MLIR text and `open` take it as its path."""

    path: Path
    kernel: str  # "int4", "int8"
    kernel_set: KernelSet

    @property
    def rows_per_call(self) -> int:
        return self.kernel_set.rows_per_call(self.kernel)

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)


def build_kernel(folder: Path, kernel: str, kernel_set: KernelSet = X86_64_AVX2) -> KernelObject:
    """`kernel` of `kernel_set` as an object in `folder` (raises KernelUnavailable where it cannot
    build)."""
    return KernelObject(build_object(folder, kernel_set.source(kernel), kernel_set), kernel, kernel_set)


def build_object(folder: Path, source: Path, kernel_set: KernelSet = X86_64_AVX2, shared: bool = False,
                 defines: tuple[str, ...] = ()) -> Path:
    """Compile `source` (a kernel of `kernel_set`) to an ELF object in `folder` (kept until IREE
    has linked it; named after the set, as one build may link several sets' objects); with
    `shared`, to a shared library instead (tests call the kernels directly, `defines` switching
    on what a test probes)."""
    reason = build_reason(kernel_set) or (host_reason(kernel_set) if shared else None)
    if reason:
        raise KernelUnavailable(reason)
    cc = _compiler(kernel_set.arch)
    out = Path(folder) / f"{source.stem}_{kernel_set.short}.{'so' if shared else 'o'}"
    # Objects: hidden symbols, so IREE's link calls them directly; with default visibility the
    # aarch64 link went through a PLT slot that IREE's embedded-ELF loader left unresolved (SIGSEGV).
    mode = ("-shared",) if shared else ("-c", "-fvisibility=hidden")
    flags = [*kernel_set.cflags, *(f"-D{d}" for d in defines)]
    proc = subprocess.run([*cc, *flags, *mode, str(source), "-o", str(out)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise KernelUnavailable(f"{cc[0]} failed on {source.name}: {proc.stderr.strip().splitlines()[-1:]}")
    return out
