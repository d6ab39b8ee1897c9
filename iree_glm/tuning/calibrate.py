"""Measure a HAL device present on this machine and write a device profile for it.

Small IREE benchmarks, compiled with `iree.compiler` for the driver's backend, one quantity
each, for what the scheduler's cost model needs (see scheduler.py):
- call overhead: a trivial function (what every module invocation costs);
- dispatch overhead: a chain of 1 vs 33 tiny dependent matrix-vector products (the slope is
  what each extra dispatch inside one call costs: a decode step runs ~30 per layer);
- memory bandwidth: a matrix-vector product over weights larger than the last-level cache
  (decode streams every weight once per token), and over weights that fit in it (small
  models decode from cache);
- matmul throughput per dtype at a prefill shape (M = 128 rows: prompt tokens).
  Weights are parameters (`util.global` from a parameter index), as in a bundle, so the
  host's data tiling packs them once at load time; passed as arguments, they were repacked
  on every call and the benchmarks measured the packing (3-4x under the model's bandwidth);
- attention throughput: the model's own attention op (torch SDPA with an additive cache mask,
  lowered with the device's flags) at a prefill shape; a backend that cannot compile it, or
  cannot compile a tiny model's whole attention part (positions, cache scatter and gather,
  mask), gets no `attention` op class;
- host upload (link bandwidth and latency) for a device other than the host CPU.
Each quantity is the median of `repeats` timed samples after a warm-up; `calibrate` repeats
the whole set `rounds` times and keeps each quantity's median, so a burst of load from other
processes spoils one round's number, not the profile. Power cannot be measured from here: the profile
carries marked estimates. Nothing here is fitted to a whole model: whole models are what
`tools/calibrate_estimate.py` checks the estimates against.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from iree_glm.errors import UserError
from iree_glm.compiler.target import VULKAN_FLAGS, Target, host_cpu_target
from iree_glm.planner.profile import OP_CLASSES

MATMUL_M, MATMUL_K, MATMUL_N = 128, 1024, 1024  # prefill: 128 prompt rows times a 1024x1024 weight
# Bandwidth as a decode step sees it: a chain of square matrix-vector products over distinct
# f32 weights, each its own dispatch. STREAM: 16 x 16 MiB, 8x a 32 MiB cache (a set only 2x the
# cache may still partly hit it); CACHED:
# 8 x 1 MiB, cache-resident (read over and over).
STREAM = (16, 2048)
CACHED = (8, 512)
CHAIN = 33  # dependent dispatches in the dispatch-overhead benchmark
CHAIN_WIDTH = 128  # each a 1x128 @ 128x128 product: small, like most of a decode step's dispatches
FRESH = 2 * 2**20  # f32 elements of a freshly allocated result (8 MiB): page faults and all
ATTN = dict(heads=8, rows=128, context=512, head_dim=64)  # prefill attention benchmark
_NP = {"f32": np.float32, "f16": np.float16}


PARAMETER_SCOPE = "bench"


def _weights(dtype: str) -> dict[str, tuple[int, int]]:
    """Name -> shape [N, K] of the weight parameters the benchmarks of `dtype` read."""
    shapes = {"matmul_w": (MATMUL_N, MATMUL_K)}
    if dtype == "f32":
        shapes.update({f"stream_w{i}": (STREAM[1], STREAM[1]) for i in range(STREAM[0])})
        shapes.update({f"cached_w{i}": (CACHED[1], CACHED[1]) for i in range(CACHED[0])})
    return shapes


def _module(dtype: str) -> str:
    t = dtype
    params = "".join(f'\n  util.global private @{name} = #stream.parameter.named<"{PARAMETER_SCOPE}"::"{name}"> : tensor<{n}x{k}x{t}>'
                     for name, (n, k) in _weights(dtype).items())

    def load(name: str) -> str:
        n, k = _weights(dtype)[name]
        return f"util.global.load @{name} : tensor<{n}x{k}x{t}>"

    def products(name: str, length: int, n: int, stored: bool) -> str:
        # `length` dependent 1xN products, each its own dispatch (matmuls do not fuse): x @ W with
        # one W argument (a chain of small calls), or, `stored`, x -> x @ W0^T -> ... over
        # `length` distinct [n, n] weight parameters (streaming weights from memory).
        body, x = [], "%x"
        transposed = ("indexing_maps = [affine_map<(m, n, k) -> (m, k)>, affine_map<(m, n, k) -> (n, k)>, "
                      "affine_map<(m, n, k) -> (m, n)>] ")
        for i in range(length):
            w = f"%w{i}" if stored else "%w"
            if stored:
                body.append(f"    %w{i} = {load(f'{name}_w{i}')}")
            body.append(f"""    %f{i} = linalg.fill ins(%zero : {t}) outs(%e : tensor<1x{n}x{t}>) -> tensor<1x{n}x{t}>
    %y{i} = linalg.matmul {transposed if stored else ""}ins({x}, {w} : tensor<1x{n}x{t}>, tensor<{n}x{n}x{t}>) outs(%f{i} : tensor<1x{n}x{t}>) -> tensor<1x{n}x{t}>""")
            x = f"%y{i}"
        weight = "" if stored else f", %w: tensor<{n}x{n}x{t}>"
        return f"""
  func.func @{name}(%x: tensor<1x{n}x{t}>{weight}) -> tensor<1x{n}x{t}> {{
    %zero = arith.constant 0.0 : {t}
    %e = tensor.empty() : tensor<1x{n}x{t}>
{chr(10).join(body)}
    return {x} : tensor<1x{n}x{t}>
  }}"""

    def dynamic_mm(name: str, k: int, n: int) -> str:
        # Rows unknown at compile time, as in the exported prefill (any prompt length).
        return f"""
  func.func @{name}(%a: tensor<?x{k}x{t}>) -> tensor<?x{n}x{t}> {{
    %b = {load(f"{name}_w")}
    %zero = arith.constant 0.0 : {t}
    %c0 = arith.constant 0 : index
    %m = tensor.dim %a, %c0 : tensor<?x{k}x{t}>
    %e = tensor.empty(%m) : tensor<?x{n}x{t}>
    %f = linalg.fill ins(%zero : {t}) outs(%e : tensor<?x{n}x{t}>) -> tensor<?x{n}x{t}>
    %r = linalg.matmul indexing_maps = [affine_map<(m, n, k) -> (m, k)>, affine_map<(m, n, k) -> (n, k)>, affine_map<(m, n, k) -> (m, n)>] ins(%a, %b : tensor<?x{k}x{t}>, tensor<{n}x{k}x{t}>) outs(%f : tensor<?x{n}x{t}>) -> tensor<?x{n}x{t}>
    return %r : tensor<?x{n}x{t}>
  }}"""

    funcs = [dynamic_mm("matmul", MATMUL_K, MATMUL_N)]
    if dtype == "f32":
        funcs += [products("stream", *STREAM, stored=True), products("cached", *CACHED, stored=True),
                  products("chain_1", 1, CHAIN_WIDTH, stored=False), products("chain_n", CHAIN, CHAIN_WIDTH, stored=False), f"""
  func.func @fresh(%x: tensor<16x{t}>) -> tensor<{FRESH}x{t}> {{
    %c0 = arith.constant 0 : index
    %v = tensor.extract %x[%c0] : tensor<16x{t}>
    %e = tensor.empty() : tensor<{FRESH}x{t}>
    %r = linalg.fill ins(%v : {t}) outs(%e : tensor<{FRESH}x{t}>) -> tensor<{FRESH}x{t}>
    return %r : tensor<{FRESH}x{t}>
  }}
  func.func @tiny(%x: tensor<16x{t}>) -> tensor<16x{t}> {{
    %r = arith.mulf %x, %x : tensor<16x{t}>
    return %r : tensor<16x{t}>
  }}"""]
    return "module {" + params + "".join(funcs) + "\n}\n"


def _target(driver: str) -> Target:
    if driver in ("local-task", "local-sync"):
        t = host_cpu_target()
        return Target(t.backend, driver, t.flags)
    if driver == "vulkan":
        return Target("vulkan-spirv", "vulkan", VULKAN_FLAGS)
    raise UserError(f"--driver {driver}: calibrate knows local-task, local-sync and vulkan")


SAMPLE_SECONDS = 0.02  # each timed sample repeats the call for at least this long


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds per call. Each sample times a batch of calls lasting >= SAMPLE_SECONDS:
    on a shared machine the OS time-slices long runs, and a sample shorter than a slice would
    see an idle core that a whole-model run never gets."""
    fn()  # warm-up (first call pays for lazy initialisation)
    t = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t, 1e-7)
    batch = max(1, min(10_000, int(SAMPLE_SECONDS / once)))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(batch):
            fn()
        times.append((time.perf_counter() - t) / batch)
    return statistics.median(times)


class _Bench:
    """One compiled benchmark module loaded on a device, with its weight parameters if any."""

    def __init__(self, driver: str, vmfb: bytes, parameters: dict[str, np.ndarray] | None = None):
        import iree.runtime as rt

        self.driver = driver
        self.config = rt.Config(driver)
        self.ctx = rt.SystemContext(config=self.config)
        if parameters:
            self.parameters = parameters  # the index refers to these arrays
            index = rt.ParameterIndex()
            for name, array in parameters.items():
                index.add_buffer(name, array)
            self.ctx.add_vm_module(rt.create_io_parameters_module(self.ctx.instance, index.create_provider(scope=PARAMETER_SCOPE)))
        self.ctx.add_vm_module(rt.VmModule.copy_buffer(self.ctx.instance, vmfb))
        self.fns = self.ctx.modules.module

    def upload(self, arr: np.ndarray):
        """Host -> device as the multi-device runtime hands activations over (pipeline.py)."""
        import iree.runtime as rt

        from iree_glm.runtime.stages import host_visible_upload

        if self.driver.startswith("local-"):
            return rt.asdevicearray(self.config.device, arr)
        return host_visible_upload(self.config.device)(arr)


def _compile_mlir(text: str, target: Target, work: Path, name: str) -> bytes:
    import iree.compiler as ic

    src = work / f"{name}.mlir"
    src.write_text(text)
    return ic.compile_file(str(src), extra_args=target.compile_args())


def _attention_vmfb(target: Target, work: Path) -> bytes:
    """The model's attention as it is exported (SDPA with an additive cache mask), compiled."""
    import iree.compiler as ic
    import torch
    import torch.nn.functional as F
    from iree.compiler import ir
    from iree.compiler.extras.fx_importer import FxImporter

    class Attention(torch.nn.Module):
        def forward(self, q, k, v, mask):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    h, s, c, d = ATTN["heads"], ATTN["rows"], ATTN["context"], ATTN["head_dim"]
    args = (torch.zeros(1, h, s, d), torch.zeros(1, h, c, d), torch.zeros(1, h, c, d), torch.zeros(1, 1, s, c))
    rows = torch.export.Dim("rows", min=2, max=c)  # dynamic, as in the exported prefill
    with torch.no_grad():
        prog = torch.export.export(Attention(), args, dynamic_shapes=({2: rows}, None, None, {2: rows}), strict=False)
        table = torch.export.default_decompositions()
        table.pop(torch.ops.aten.scaled_dot_product_attention.default, None)
        prog = prog.run_decompositions(table)
    importer = FxImporter(context=ir.Context())
    importer.import_frozen_program(prog, func_name="attention")
    src = work / "attention.mlir"
    src.write_text(str(importer.module))
    return ic.compile_file(str(src), input_type="torch", extra_args=target.compile_args())


def _attention_part_error(target: Target, work: Path) -> str | None:
    """Why a tiny model's attention part (as a plan stage exports it: positions, rotary, the
    in-place cache scatter and gather, the mask, attention) does not compile for `target`,
    or None when it does: whether the device gets the `attention` op class."""
    from iree_glm.frontend.checkpoint import random_model
    from iree_glm.bundle.model_config import ModelConfig
    from iree_glm.export.program import EntryPoint
    from iree_glm.compiler.iree_compile import compile_mlir
    from iree_glm.export.stages import Stage, StageSpec, export_stage_mlir

    cfg = ModelConfig(family="glm4", vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=1, num_heads=4,
                      num_kv_heads=2, head_dim=8, attention_bias=True, partial_rotary_factor=0.5, max_position_embeddings=64)
    stage = Stage(random_model(cfg, seed=0), StageSpec(0, "probe", ("layers.0.attn",)))
    module, _ctx = export_stage_mlir(stage, [EntryPoint("prefill", 1, None, 64), EntryPoint("decode", 1, 1, 64)])
    src = work / "attention_part.mlir"
    src.write_text(str(module))
    try:
        compile_mlir(src, work / "attention_part.vmfb", target)
    except RuntimeError as e:
        return _first_line(e)
    return None


def _first_line(e: Exception) -> str:
    lines = [l for l in str(e).splitlines() if "error:" in l] or str(e).splitlines() or [type(e).__name__]
    return lines[0].strip()[:160]


class Benchmarks:
    """The benchmark modules of one driver, compiled once and loaded; `run()` measures them
    (callable repeatedly, so a validation can interleave them with whole-model runs)."""

    def __init__(self, driver: str, progress: Callable[[str], None] = lambda m: None):
        from iree_glm.runtime.devices import driver_available

        if not driver_available(driver):
            raise UserError(f"--driver {driver}: this HAL driver has no device on this machine")
        self.driver = driver
        target = _target(driver)
        self.benches: dict[str, _Bench] = {}
        self.attention_error: str | None = None
        rng = np.random.default_rng(0)
        with tempfile.TemporaryDirectory(prefix="iree_glm-calibrate-") as tmp:
            work = Path(tmp)
            for dtype in ("f32", "f16"):
                progress(f"{driver}: compiling {dtype} benchmarks")
                weights = {name: rng.standard_normal(shape).astype(_NP[dtype]) for name, shape in _weights(dtype).items()}
                try:
                    self.benches[dtype] = _Bench(driver, _compile_mlir(_module(dtype), target, work, f"bench_{dtype}"), weights)
                except Exception as e:  # a dtype the target cannot compile: not in the profile
                    progress(f"{driver}: {dtype} not supported ({_first_line(e)})")
            if "f32" not in self.benches:
                raise UserError(f"--driver {driver}: the f32 benchmarks do not compile for it")
            progress(f"{driver}: compiling the attention benchmark and a model's attention part")
            try:
                self.attention = _Bench(driver, _attention_vmfb(target, work))
                self.attention_error = _attention_part_error(target, work)
            except Exception as e:  # the backend cannot lower the model's attention
                self.attention, self.attention_error = None, _first_line(e)
            if self.attention_error:
                progress(f"{driver}: attention does not compile ({self.attention_error})")
        self.inputs: dict[str, tuple] = {}
        for dtype, b in self.benches.items():
            self.inputs[f"matmul_{dtype}"] = (b.upload(rng.standard_normal((MATMUL_M, MATMUL_K)).astype(_NP[dtype])),)
        b = self.benches["f32"]
        up = lambda *shape: b.upload(rng.standard_normal(shape).astype(np.float32))
        self.inputs.update(tiny=(b.upload(np.ones(16, np.float32)),), chain=(up(1, CHAIN_WIDTH), up(CHAIN_WIDTH, CHAIN_WIDTH)),
                           stream=(up(1, STREAM[1]),), cached=(up(1, CACHED[1]),))
        if self.attention is not None:
            h, s, c, d = ATTN["heads"], ATTN["rows"], ATTN["context"], ATTN["head_dim"]
            self.inputs["attention"] = (*(self.attention.upload(rng.standard_normal((1, h, n, d)).astype(np.float32)) for n in (s, c, c)),
                                        self.attention.upload(np.zeros((1, 1, s, c), np.float32)))

    def run(self, repeats: int = 5) -> dict:
        """One measurement of every quantity (medians of `repeats` calls each)."""
        b, inp = self.benches["f32"], self.inputs
        out: dict = {"peak_gflops": {}, "dtypes": list(self.benches), "op_classes": list(OP_CLASSES), "notes": {}}
        if self.driver in ("local-task", "local-sync") and last_level_cache_mb():
            out["cache_mb"] = last_level_cache_mb()
        call = _median_seconds(lambda: b.fns.tiny(*inp["tiny"]), repeats)
        out["call_overhead_us"] = _sig(call * 1e6)
        one = _median_seconds(lambda: b.fns.chain_1(*inp["chain"]), repeats)
        many = _median_seconds(lambda: b.fns.chain_n(*inp["chain"]), repeats)
        out["dispatch_overhead_us"] = _sig(max(many - one, 0.0) / (CHAIN - 1) * 1e6)
        t = _median_seconds(lambda: b.fns.fresh(*inp["tiny"]), repeats)
        out["fresh_memory_gbs"] = _sig(FRESH * 4 / max(t - call, 1e-9) / 1e9)
        disp = out["dispatch_overhead_us"] * 1e-6
        for key, (count, n), fn in (("memory_bandwidth_gbs", STREAM, "stream"), ("cache_bandwidth_gbs", CACHED, "cached")):
            t = _median_seconds(lambda: getattr(b.fns, fn)(*inp[fn]), repeats)
            # The call and dispatch costs come from other samples: on contended cores they can
            # exceed this one's whole time (a cache bandwidth of 8e6 GB/s was printed that way).
            # Never credit them with more than half of it.
            out[key] = _sig(count * n * n * 4 / max(t - call - count * disp, t / 2) / 1e9)
        for dtype, bench in self.benches.items():
            t = _median_seconds(lambda: bench.fns.matmul(*inp[f"matmul_{dtype}"]), repeats) - call
            out["peak_gflops"][dtype] = _sig(2 * MATMUL_M * MATMUL_K * MATMUL_N / max(t, 1e-9) / 1e9)
        if self.attention_error:
            out["op_classes"].remove("attention")
            out["notes"]["attention"] = self.attention_error
        else:
            h, s, c, d = ATTN["heads"], ATTN["rows"], ATTN["context"], ATTN["head_dim"]
            t = _median_seconds(lambda: self.attention.fns.attention(*inp["attention"]), repeats) - call
            out["attention_gflops"] = _sig(4 * h * s * c * d / max(t, 1e-9) / 1e9)
        small, host = np.ones(16, np.float32), np.ones((2048, 1024), np.float32)  # 64 B, 8 MiB
        lat = _median_seconds(lambda: b.upload(small), repeats)
        t = _median_seconds(lambda: b.upload(host), repeats)
        out["link_latency_us"] = _sig(lat * 1e6)
        out["link_bandwidth_gbs"] = _sig(host.nbytes / max(t - lat, 1e-9) / 1e9)
        return out


def median_of_rounds(rounds: list[dict]) -> dict:
    """Each number's median over rounds of `Benchmarks.run` results."""
    out = dict(rounds[0])
    for key, value in rounds[0].items():
        if isinstance(value, (int, float)):
            out[key] = _sig(statistics.median(r[key] for r in rounds))
        elif key == "peak_gflops":
            out[key] = {dt: _sig(statistics.median(r[key][dt] for r in rounds)) for dt in value}
    return out


def measure(driver: str, repeats: int = 5, rounds: int = 3, progress: Callable[[str], None] = lambda m: None) -> dict:
    """Benchmark one driver `rounds` times; returns the numbers a profile needs (medians)."""
    benches = Benchmarks(driver, progress)
    results = []
    for r in range(rounds):
        progress(f"{driver}: measuring (round {r + 1} of {rounds})")
        results.append(benches.run(repeats))
    return median_of_rounds(results)


def _sig(x: float, digits: int = 3) -> float:
    """`x` to `digits` significant digits (a slow device's 0.04 GB/s keeps its precision)."""
    return float(f"{x:.{digits}g}")


def _toml_list(items) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def _device_toml(name: str, kind: str, driver: str, backend: str, m: dict, memory_gb: float, cache_mb: float | None,
                 lowering=None) -> str:
    peaks = ", ".join(f"{k} = {v}" for k, v in m["peak_gflops"].items())
    flags = _toml_list(["@defaults", *(lowering.flags if lowering else ())])
    lines = ["", "[[devices]]", f'name = "{name}"', f'kind = "{kind}"', f'hal_driver = "{driver}"', f'backend = "{backend}"']
    if lowering:
        lines.append(f"# flags measured (calibrate --lowering): {lowering.variant} won; {lowering.summary()}")
    lines += [
        f"flags = {flags}", f"dtypes = {_toml_list(m['dtypes'])}", f"op_classes = {_toml_list(m['op_classes'])}",
    ]
    if lowering and lowering.kernel_set_ms:
        lines += ["# kernel set measured (calibrate --lowering): int8 + int4 prefill medians "
                  + ", ".join(f"{k} {v:.0f} ms" for k, v in lowering.kernel_set_ms.items()),
                  f'kernel_set = "{lowering.kernel_set}"']
    if "attention" in m["notes"]:
        lines.append(f"# no attention: {m['notes']['attention']}")
    lines += [
        f"peak_gflops = {{ {peaks} }}   # measured: {MATMUL_M}x{MATMUL_K} @ {MATMUL_K}x{MATMUL_N} matmul, median",
        f"memory_bandwidth_gbs = {m['memory_bandwidth_gbs']}   # measured: {STREAM[0]} matvecs over {STREAM[0] * STREAM[1] ** 2 * 4 >> 20} MiB of f32 weights",
    ]
    if cache_mb:
        lines += [f"cache_mb = {cache_mb}   # last-level cache (from the OS)",
                  f"cache_bandwidth_gbs = {m['cache_bandwidth_gbs']}   # measured: {CACHED[0]} matvecs over {CACHED[0] * CACHED[1] ** 2 * 4 >> 20} MiB (cache-resident)"]
    if "attention_gflops" in m:
        lines.append(f"attention_gflops = {m['attention_gflops']}   # measured: SDPA {ATTN['heads']} heads, {ATTN['rows']} rows x {ATTN['context']} cached, d {ATTN['head_dim']}")
    lines += [
        f"memory_gb = {memory_gb}",
        "active_power_w = 10.0        # NOT measured (no power counters here): edit",
        "idle_power_w = 2.0           # NOT measured: edit",
        f"call_overhead_us = {m['call_overhead_us']}   # measured: trivial function",
        f"fresh_memory_gbs = {m['fresh_memory_gbs']}   # measured: a function returning {FRESH * 4 >> 20} MiB it allocates",
        f"dispatch_overhead_us = {m['dispatch_overhead_us']}   # measured: 1 vs {CHAIN} dependent tiny matvecs in one call",
    ]
    return "\n".join(lines) + "\n"


def _memory_gb() -> float:
    try:
        return _sig(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9)
    except (ValueError, OSError, AttributeError):
        return 8.0


def last_level_cache_mb() -> float | None:
    """Size of the largest CPU cache the OS reports (None if it does not say)."""
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip()
        except OSError:
            continue
        scale = {"K": 1 / 1024, "M": 1.0, "G": 1024.0}.get(text[-1:], None)
        if scale is not None and text[:-1].isdigit():
            sizes.append(int(text[:-1]) * scale)
    return max(sizes) if sizes else None


def machine_summary() -> str:
    """CPU model, cores and load: what a calibrated profile says about where it was measured."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return f"{model}, {os.cpu_count()} cores, load average {load}"


BUSY_LOAD_PER_CORE = 0.5  # load average per core above which other work shares the cores


def load_warning() -> str | None:
    """A warning if other work is running: every calibration of this project's host taken under
    load (average 6-9 on 2 cores) came out 5-12x slower than a quiet one."""
    if not hasattr(os, "getloadavg"):
        return None
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load <= BUSY_LOAD_PER_CORE * cores:
        return None
    return (f"load average {load:.1f} on {cores} cores before measuring: other work shares the cores, "
            "so every number will be too slow; calibrate on an idle machine")


def calibrate(driver: str, name: str, repeats: int = 5, progress: Callable[[str], None] = lambda m: None,
              lowering: dict | None = None, rounds: int = 3) -> str:
    """Measure `driver` (and the host CPU when it is another device) and return profile TOML.

    `lowering` (keyword arguments of `lowering_choice.choose`) also chooses the host's flags and
    prefill chunk size by timing prefill (llvm-cpu only)."""
    target = _target(driver)
    if lowering is not None and target.backend != "llvm-cpu":
        raise UserError(f"--lowering chooses llvm-cpu flags; driver '{driver}' compiles for {target.backend}")
    choice = None
    if lowering is not None:
        from iree_glm.tuning.lowering_choice import choose

        choice = choose(**lowering, progress=progress)
    mem, llc = _memory_gb(), last_level_cache_mb()
    busy = load_warning()
    if busy:
        progress(f"warning: {busy}")
    before = machine_summary()
    main = measure(driver, repeats, rounds, progress)
    host = measure("local-task", repeats, rounds, progress) if target.backend != "llvm-cpu" else None
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = [f"# Written by `python -m iree_glm.profile calibrate --driver {driver}` on {when}",
            f"# ({before}; at the end: {machine_summary().rsplit('load average ', 1)[-1]}); medians of {rounds} rounds",
            "# of every benchmark; numbers measured there except power.",
            "# Re-run on the target machine rather than editing throughput by hand.",
            *([f"# WARNING: {busy}."] if busy else []),
            "format_version = 1", f'name = "{name}"', f'description = "calibrated: {driver} on this machine"',
            "", "[policy]", 'objective = "latency"', "memory_reserve_gb = 1.0"]
    if choice is not None:
        text += [f"# measured (calibrate --lowering): {choice.summary()}", f"prefill_chunk = {choice.prefill_chunk}"]
    if target.backend == "llvm-cpu":
        text.append(_device_toml("cpu", "cpu", driver, "llvm-cpu", main, mem, llc, choice))
    else:
        text.append(_device_toml("cpu", "cpu", "local-task", "llvm-cpu", host, mem, llc))
        text.append(_device_toml("gpu", "gpu", driver, target.backend, main, mem, None))
        text.append(f"""
[[links]]
between = ["cpu", "gpu"]
bandwidth_gbs = {main["link_bandwidth_gbs"]}   # measured: 8 MiB written to host-visible device memory (as the runtime hands over)
latency_us = {main["link_latency_us"]}   # measured: 64 bytes the same way
shared_memory = false
""")
    return "\n".join(text)
