"""CPU features by their LLVM names, as bundles record what their code needs and the runtime
checks the machine it runs on (a missing feature is one line, never SIGILL)."""

from __future__ import annotations

import ctypes
import functools
import os
import platform
from pathlib import Path

# /proc/cpuinfo flag -> LLVM feature, where they differ (x86 "flags" and Arm "Features" lines).
_CPUINFO = {"avx512_vnni": "avx512vnni", "avx512_bf16": "avx512bf16", "avx512vbmi": "avx512vbmi", "avx512_vbmi2": "avx512vbmi2",
            "avx512_bitalg": "avx512bitalg", "avx512_vpopcntdq": "avx512vpopcntdq", "amx_tile": "amx-tile",
            "amx_int8": "amx-int8", "amx_bf16": "amx-bf16", 
            "asimddp": "dotprod", "asimd": "neon", "fp": "fp-armv8", "asimdhp": "fullfp16", "avx_vnni": "avxvnni"}
# Linux aarch64 hardware capabilities (asm/hwcap.h): (auxv entry, bit) -> LLVM feature. The
# kernel's word on what user code may run; qemu-user sets them from its `-cpu` model, where its
# /proc/cpuinfo is the host's.
_AT_HWCAP, _AT_HWCAP2 = 16, 26
_ARM_HWCAPS = {(_AT_HWCAP, 0): "fp-armv8", (_AT_HWCAP, 1): "neon", (_AT_HWCAP, 10): "fullfp16", (_AT_HWCAP, 20): "dotprod",
               (_AT_HWCAP, 22): "sve", (_AT_HWCAP2, 1): "sve2", (_AT_HWCAP2, 13): "i8mm", (_AT_HWCAP2, 14): "bf16"}


def _arm_hwcaps() -> frozenset[str] | None:
    """The aarch64 features from the auxiliary vector (None where it cannot be read)."""
    try:
        getauxval = ctypes.CDLL(None).getauxval
    except (OSError, AttributeError):
        return None
    getauxval.restype, getauxval.argtypes = ctypes.c_ulong, [ctypes.c_ulong]
    words = {key: getauxval(key) for key in (_AT_HWCAP, _AT_HWCAP2)}
    if not words[_AT_HWCAP]:
        return None
    return frozenset(name for (key, bit), name in _ARM_HWCAPS.items() if words[key] >> bit & 1)


def host_features() -> frozenset[str]:
    """This machine's CPU features as LLVM names: on aarch64 Linux from the auxiliary vector,
    elsewhere from /proc/cpuinfo (empty if unreadable)."""
    if host_arch() == "aarch64":
        hwcaps = _arm_hwcaps()
        if hwcaps is not None:
            return hwcaps
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


# Linux x86-64 (asm/prctl.h, uapi/asm/unistd_64.h): a process must ask for the AMX tile data
# state before its first tile instruction, which otherwise raises SIGILL.
_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA = 158, 0x1023, 18


def needs_amx(features: list[str] | tuple[str, ...]) -> bool:
    """Whether code using `features` runs tile instructions (and so needs request_amx first)."""
    return any(f.startswith("amx-") for f in features)


@functools.cache
def request_amx() -> str | None:
    """Ask Linux once per process for the AMX tile state; None when granted, else why not (one line)."""
    if host_arch() != "x86_64" or platform.system() != "Linux":
        return f"AMX tiles need Linux on x86-64 (this is {platform.system()} on {platform.machine()})"
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    rc = libc.syscall(ctypes.c_long(_SYS_ARCH_PRCTL), ctypes.c_long(_ARCH_REQ_XCOMP_PERM), ctypes.c_ulong(_XFEATURE_XTILEDATA))
    if rc != 0:
        return f"Linux refused the AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM: {os.strerror(ctypes.get_errno())})"
    return None
