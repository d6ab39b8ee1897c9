"""The CPU a bundle is compiled for, read from its llvm-cpu flags: triple, CPU name, features.

Our kernels are chosen from this, never from the machine that builds the bundle: a bundle for
a Raspberry Pi built on an x86 laptop gets the Pi's kernel set. `--iree-llvmcpu-target-cpu=host`
means the build machine (its /proc/cpuinfo flags). Named CPUs get their features from
`KNOWN_CPUS`; explicit `--iree-llvmcpu-target-cpu-features=+a,-b` adds or removes features.
Feature names are LLVM's (`avx2`, `avx512vnni`, `dotprod`, `i8mm`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from iree_glm.bundle.cpu_features import host_arch, host_features

_X86_HASWELL = ("avx", "avx2", "fma", "f16c", "bmi2")
_X86_AVX512 = (*_X86_HASWELL, "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd")
_X86_ICELAKE = (*_X86_AVX512, "avx512vnni", "avx512vbmi", "avx512vbmi2", "avx512bitalg", "avx512vpopcntdq")
_X86_SAPPHIRE = (*_X86_ICELAKE, "avx512bf16", "amx-tile", "amx-int8", "amx-bf16")
_ARM_V82 = ("neon", "fp-armv8", "fullfp16", "dotprod")
# LLVM CPU name -> the features our kernel sets ask about (not LLVM's full list).
KNOWN_CPUS: dict[str, tuple[str, ...]] = {
    "x86-64": (), "x86-64-v2": (), "x86-64-v3": _X86_HASWELL, "x86-64-v4": _X86_AVX512,
    "haswell": _X86_HASWELL, "skylake": _X86_HASWELL, "znver1": _X86_HASWELL, "znver2": _X86_HASWELL, "znver3": _X86_HASWELL,
    "skylake-avx512": _X86_AVX512, "cascadelake": (*_X86_AVX512, "avx512vnni"), "icelake-server": _X86_ICELAKE,
    "znver4": (*_X86_ICELAKE, "avx512bf16"), "sapphirerapids": _X86_SAPPHIRE, "emeraldrapids": _X86_SAPPHIRE, "graniterapids": _X86_SAPPHIRE,
    "generic": (), "cortex-a53": ("neon", "fp-armv8"), "cortex-a55": _ARM_V82, "cortex-a57": ("neon", "fp-armv8"),
    "cortex-a72": ("neon", "fp-armv8"), "cortex-a76": _ARM_V82, "cortex-a78": _ARM_V82,
    "cortex-x1": _ARM_V82, "cortex-a710": (*_ARM_V82, "i8mm", "bf16", "sve", "sve2"),
    "cortex-x2": (*_ARM_V82, "i8mm", "bf16", "sve", "sve2"), "cortex-x3": (*_ARM_V82, "i8mm", "bf16", "sve", "sve2"),
    "cortex-x4": (*_ARM_V82, "i8mm", "bf16", "sve", "sve2"), "cortex-a720": (*_ARM_V82, "i8mm", "bf16", "sve", "sve2"),
}
# Instruction-set features that decide whether code runs (what a bundle records and checks).
ISA_FEATURES = frozenset(f for features in KNOWN_CPUS.values() for f in features) | {"avxvnni", "avx512fp16"}


@dataclass(frozen=True)
class TargetCpu:
    arch: str  # "x86_64" or "aarch64" (from the triple)
    cpu: str  # LLVM CPU name, or "host"
    features: frozenset[str]
    known: bool  # the features are known (a named CPU we list, "host", or given explicitly)

    def has(self, features: Sequence[str]) -> bool:
        return set(features) <= self.features

    def describe(self) -> str:
        return f"{self.arch} {self.cpu}"

    def isa_features(self) -> list[str]:
        """The features code compiled for this CPU may use, of those that decide where it runs."""
        return sorted(self.features & ISA_FEATURES)


def from_flags(flags: Sequence[str]) -> TargetCpu:
    """The CPU that llvm-cpu flags compile for (the last of each option wins, as in iree-compile)."""
    values: dict[str, str] = {}
    for f in flags:
        if "=" in f:
            key, value = f.split("=", 1)
            values[key] = value
    triple = values.get("--iree-llvmcpu-target-triple", "")
    arch = triple.split("-", 1)[0] if triple else host_arch()
    cpu = values.get("--iree-llvmcpu-target-cpu", "host" if not triple else "generic")
    if cpu == "host" and arch == host_arch():
        features, known = set(host_features()), True
    else:
        features, known = set(KNOWN_CPUS.get(cpu, ())), cpu in KNOWN_CPUS
    explicit = values.get("--iree-llvmcpu-target-cpu-features", "")
    for item in filter(None, explicit.split(",")):
        (features.add if item[0] != "-" else features.discard)(item.lstrip("+-"))
    return TargetCpu(arch, cpu, frozenset(features), known or bool(explicit))
