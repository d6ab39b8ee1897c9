"""Measure a HAL device present on this machine and write a device profile for it.

Small IREE benchmarks, compiled with `iree.compiler` for the driver's backend: a square
matmul per dtype (throughput, GFLOP/s), a matrix-vector product over a large weight (memory
bandwidth, what decode is bound by), a trivial call (per-invocation overhead) and a host
upload (link bandwidth and latency to the host CPU). Medians of `repeats` runs after a
warm-up. Power cannot be measured from here: the profile carries marked estimates.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import UserError
from .lowering import Target, host_cpu_target
from .profiles import OP_CLASSES

MATMUL = 512  # M = N = K of the throughput benchmark
MATVEC_K, MATVEC_N = 2048, 4096  # 32 MiB of f32 weights: larger than the caches
_NP = {"f32": np.float32, "f16": np.float16}
_MLIR = {"f32": "f32", "f16": "f16"}


def _module(dtype: str) -> str:
    t = _MLIR[dtype]
    m, kv, nv = MATMUL, MATVEC_K, MATVEC_N

    def mm(name: str, rows: int, k: int, n: int) -> str:
        # Weights [N, K] as in torch's Linear (what the exported model multiplies by).
        return f"""
  func.func @{name}(%a: tensor<{rows}x{k}x{t}>, %b: tensor<{n}x{k}x{t}>) -> tensor<{rows}x{n}x{t}> {{
    %zero = arith.constant 0.0 : {t}
    %e = tensor.empty() : tensor<{rows}x{n}x{t}>
    %f = linalg.fill ins(%zero : {t}) outs(%e : tensor<{rows}x{n}x{t}>) -> tensor<{rows}x{n}x{t}>
    %r = linalg.matmul indexing_maps = [affine_map<(m, n, k) -> (m, k)>, affine_map<(m, n, k) -> (n, k)>, affine_map<(m, n, k) -> (m, n)>] ins(%a, %b : tensor<{rows}x{k}x{t}>, tensor<{n}x{k}x{t}>) outs(%f : tensor<{rows}x{n}x{t}>) -> tensor<{rows}x{n}x{t}>
    return %r : tensor<{rows}x{n}x{t}>
  }}"""

    return f"""module {{{mm("matmul", m, m, m)}{mm("matvec", 1, kv, nv)}
  func.func @tiny(%x: tensor<16x{t}>) -> tensor<16x{t}> {{
    %r = arith.mulf %x, %x : tensor<16x{t}>
    return %r : tensor<16x{t}>
  }}
}}
"""


def _target(driver: str) -> Target:
    if driver in ("local-task", "local-sync"):
        t = host_cpu_target()
        return Target(t.backend, driver, t.flags)
    if driver == "vulkan":
        return Target("vulkan-spirv", "vulkan", ())
    raise UserError(f"--driver {driver}: calibrate knows local-task, local-sync and vulkan")


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (first call pays for lazy initialisation)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


class _Bench:
    """One compiled benchmark module loaded on a device."""

    def __init__(self, driver: str, dtype: str, work: Path):
        import iree.compiler as ic
        import iree.runtime as rt

        target = _target(driver)
        src = work / f"bench_{dtype}.mlir"
        src.write_text(_module(dtype))
        vmfb = ic.compile_file(str(src), extra_args=target.compile_args())
        self.config = rt.Config(driver)
        self.ctx = rt.SystemContext(config=self.config)
        self.ctx.add_vm_module(rt.VmModule.copy_buffer(self.ctx.instance, vmfb))
        self.fns = self.ctx.modules.module
        self.np = _NP[dtype]

    def upload(self, arr: np.ndarray):
        import iree.runtime as rt

        return rt.asdevicearray(self.config.device, arr)


def measure(driver: str, repeats: int = 5, progress: Callable[[str], None] = lambda m: None) -> dict:
    """Benchmark one driver; returns the numbers a profile needs."""
    from .profiles import driver_available

    if not driver_available(driver):
        raise UserError(f"--driver {driver}: this HAL driver has no device on this machine")
    rng = np.random.default_rng(0)
    out: dict = {"peak_gflops": {}, "dtypes": []}
    with tempfile.TemporaryDirectory(prefix="iree_glm-calibrate-") as work:
        for dtype in ("f32", "f16"):
            progress(f"{driver}: {dtype} matmul {MATMUL}^3 and matvec {MATVEC_K}x{MATVEC_N}")
            try:
                b = _Bench(driver, dtype, Path(work))
            except Exception as e:  # a dtype the target cannot compile: not in the profile
                progress(f"{driver}: {dtype} not supported ({str(e).splitlines()[0][:120]})")
                continue
            a = b.upload(rng.standard_normal((MATMUL, MATMUL)).astype(b.np))
            w = b.upload(rng.standard_normal((MATMUL, MATMUL)).astype(b.np))
            t = _median_seconds(lambda: b.fns.matmul(a, w), repeats)
            out["peak_gflops"][dtype] = round(2 * MATMUL**3 / t / 1e9, 1)
            out["dtypes"].append(dtype)
            if dtype == "f32":
                x = b.upload(rng.standard_normal((1, MATVEC_K)).astype(b.np))
                big = rng.standard_normal((MATVEC_N, MATVEC_K)).astype(b.np)
                wv = b.upload(big)
                t = _median_seconds(lambda: b.fns.matvec(x, wv), repeats)
                out["memory_bandwidth_gbs"] = round(big.nbytes / t / 1e9, 2)
                tiny = b.upload(np.ones(16, b.np))
                out["call_overhead_us"] = round(_median_seconds(lambda: b.fns.tiny(tiny), repeats * 4) * 1e6, 1)
                small = np.ones(16, b.np)
                host = np.ones((MATVEC_K, MATVEC_N // 4), b.np)  # 8 MiB
                lat = _median_seconds(lambda: b.upload(small), repeats * 4)
                t = _median_seconds(lambda: b.upload(host), repeats)
                out["link_latency_us"] = round(lat * 1e6, 1)
                out["link_bandwidth_gbs"] = round(host.nbytes / max(t - lat, 1e-9) / 1e9, 2)
    if not out["dtypes"]:
        raise UserError(f"--driver {driver}: no benchmark compiled for it")
    return out


def _toml_list(items) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def _device_toml(name: str, kind: str, driver: str, backend: str, m: dict, memory_gb: float) -> str:
    peaks = ", ".join(f"{k} = {v}" for k, v in m["peak_gflops"].items())
    flags = '["@defaults"]' if backend == "llvm-cpu" else "[]"
    return f"""
[[devices]]
name = "{name}"
kind = "{kind}"
hal_driver = "{driver}"
backend = "{backend}"
flags = {flags}
dtypes = {_toml_list(m["dtypes"])}
op_classes = {_toml_list(OP_CLASSES)}
peak_gflops = {{ {peaks} }}   # measured: {MATMUL}^3 matmul, median
memory_bandwidth_gbs = {m["memory_bandwidth_gbs"]}   # measured: matvec over {MATVEC_K * MATVEC_N * 4 >> 20} MiB of weights
memory_gb = {memory_gb}
active_power_w = 10.0        # NOT measured (no power counters here): edit
idle_power_w = 2.0           # NOT measured: edit
call_overhead_us = {m["call_overhead_us"]}   # measured: trivial function
"""


def _memory_gb() -> float:
    try:
        import os

        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    except (ValueError, OSError, AttributeError):
        return 8.0


def calibrate(driver: str, name: str, repeats: int = 5, progress: Callable[[str], None] = lambda m: None) -> str:
    """Measure `driver` (and the host CPU when it is another device) and return profile TOML."""
    target = _target(driver)
    mem = _memory_gb()
    main = measure(driver, repeats, progress)
    text = [f"# Written by `python -m iree_glm.profile calibrate --driver {driver}`; numbers measured here",
            "# except power. Re-run on the target machine rather than editing throughput by hand.",
            "format_version = 1", f'name = "{name}"', f'description = "calibrated: {driver} on this machine"',
            "", "[policy]", 'objective = "latency"', "memory_reserve_gb = 1.0"]
    if target.backend == "llvm-cpu":
        text.append(_device_toml("cpu", "cpu", driver, "llvm-cpu", main, mem))
    else:
        host = measure("local-task", repeats, progress)
        text.append(_device_toml("cpu", "cpu", "local-task", "llvm-cpu", host, mem))
        text.append(_device_toml("gpu", "gpu", driver, target.backend, main, mem))
        text.append(f"""
[[links]]
between = ["cpu", "gpu"]
bandwidth_gbs = {main["link_bandwidth_gbs"]}   # measured: host -> device upload of 8 MiB
latency_us = {main["link_latency_us"]}   # measured: upload of 64 bytes
shared_memory = false
""")
    return "\n".join(text)
