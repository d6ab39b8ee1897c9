"""CPU features by their LLVM names, as bundles record what their code needs and the runtime
checks the machine it runs on (a missing feature is one line, never SIGILL)."""

from __future__ import annotations

import platform
from pathlib import Path

# /proc/cpuinfo flag -> LLVM feature, where they differ (x86 "flags" and Arm "Features" lines).
_CPUINFO = {"avx512_vnni": "avx512vnni", "avx512_bf16": "avx512bf16", "avx512vbmi": "avx512vbmi", "avx512_vbmi2": "avx512vbmi2",
            "avx512_bitalg": "avx512bitalg", "avx512_vpopcntdq": "avx512vpopcntdq", "amx_int8": "amx-int8", "amx_bf16": "amx-bf16",
            "asimddp": "dotprod", "asimd": "neon", "fp": "fp-armv8", "asimdhp": "fullfp16", "avx_vnni": "avxvnni"}



def host_features() -> frozenset[str]:
    """This machine's CPU features as LLVM names, from /proc/cpuinfo (empty if unreadable)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((l for l in text.splitlines() if l.startswith(("flags", "Features"))), "")
    raw = line.split(":", 1)[1].split() if ":" in line else []
    return frozenset(_CPUINFO.get(f, f) for f in raw)


def host_arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def missing_features(needed: list[str] | tuple[str, ...]) -> list[str]:
    """Those of `needed` this machine lacks (all of them if /proc/cpuinfo cannot be read)."""
    have = host_features()
    return [f for f in needed if f not in have]
