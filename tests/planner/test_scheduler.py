"""The scheduler's partition outcomes (not only its outputs): fallback, memory caps, power budget."""

from __future__ import annotations

import itertools
import json
import xml.etree.ElementTree as ET

import pytest

from iree_glm.bundle.model_config import ModelConfig
from iree_glm.planner.report import svg_picture, text_report
from iree_glm.planner.profile import OP_CLASSES, load_profile, parse_profile
from iree_glm.planner.scheduler import DISPATCHES, GB, PartitionPlan, ScheduleError, _Problem, estimate_placement, model_parts, plan_partition

CFG = ModelConfig(family="glm4", vocab_size=4096, hidden_size=1024, intermediate_size=4096,
                  num_layers=4, num_heads=8, num_kv_heads=2, head_dim=128)


def _device(name: str, kind: str, driver: str, backend: str, gflops: float, bw: float, power: float, **kw) -> dict:
    d = dict(name=name, kind=kind, hal_driver=driver, backend=backend, flags=[],
             dtypes=["f32", "f16", "int8", "int4"], op_classes=list(OP_CLASSES),
             peak_gflops={"f32": gflops, "f16": gflops, "int8": gflops, "int4": gflops},
             memory_bandwidth_gbs=bw, memory_gb=16.0, active_power_w=power, idle_power_w=0.1 * power,
             call_overhead_us=20.0)
    d.update(kw)
    return d


def _profile(*devices: dict, **policy):
    cpu = _device("cpu", "cpu", "local-task", "llvm-cpu", 100.0, 20.0, 6.0)
    devs = [cpu, *devices]
    links = [dict(between=["cpu", d["name"]], bandwidth_gbs=20.0, latency_us=10.0, shared_memory=True) for d in devices]
    return parse_profile({"format_version": 1, "name": "test", "devices": devs, "links": links, "policy": policy}, "test.toml")


def _gpu(**kw) -> dict:
    return _device("gpu", "gpu", "vulkan", "vulkan-spirv", 1000.0, 60.0, 5.0, **kw)


def _npu(**kw) -> dict:
    return _device("npu", "npu", "qnn-htp", "qnn", 800.0, 40.0, 1.0, allow_stand_in=True, **kw)


def _devices(plan: PartitionPlan, kind: str) -> set[str]:
    return {p.device for p in plan.parts if p.kind == kind}


def test_fast_gpu_takes_the_layers():
    plan = plan_partition(CFG, _profile(_gpu()), "f16")
    assert _devices(plan, "attn") == _devices(plan, "ffn") == {"gpu"}
    assert all(p.reason == "cost" for p in plan.parts)


def test_gpu_without_int4_leaves_int4_layers_on_the_cpu():
    gpu = _gpu(dtypes=["f32", "f16"], peak_gflops={"f32": 1000.0, "f16": 1000.0})
    dtypes = {"default": "f16", **{f"layers.{i}.{k}": "int4" for i in (2, 3) for k in ("attn", "ffn")}}
    plan = plan_partition(CFG, _profile(gpu), dtypes)
    placed = {p.part: p for p in plan.parts}
    for i in (0, 1):
        assert placed[f"layers.{i}.ffn"].device == "gpu"
    for i in (2, 3):
        for k in ("attn", "ffn"):
            p = placed[f"layers.{i}.{k}"]
            assert (p.device, p.reason, p.dtype) == ("cpu", "fallback", "int4")
            assert "gpu has no int4" in p.detail
    report = text_report(plan)
    assert "fallback" in report and "gpu has no int4" in report


def test_memory_cap_splits_the_model():
    parts = model_parts(CFG, "f32", context=1024, capacity=1024)
    layer = sum(p.resident_bytes for p in parts if p.layer == 0)
    cap_gb = 2.5 * layer / GB  # two layers fit, not three
    plan = plan_partition(CFG, _profile(_gpu(memory_gb=cap_gb)), "f32")
    on_gpu = [p for p in plan.parts if p.device == "gpu" and p.layer is not None]
    assert 4 <= len(on_gpu) < 2 * CFG.num_layers  # at least two layers' parts, not all
    assert 2 * layer / GB <= plan.memory_gb["gpu"] <= cap_gb
    assert any(p.reason == "constraint" and "memory" in p.detail and p.device == "cpu" for p in plan.parts)
    assert len(plan.segments) >= 2
    # Without the cap everything goes to the GPU.
    free = plan_partition(CFG, _profile(_gpu()), "f32")
    assert {p.layer for p in free.parts if p.device == "gpu" and p.layer is not None} == {0, 1, 2, 3}


def test_model_that_fits_nowhere_is_a_clear_error():
    prof = _profile(_gpu(memory_gb=0.01))
    tiny_host = parse_profile({**_raw(prof), "devices": [dict(_raw(prof)["devices"][0], memory_gb=0.05), _raw(prof)["devices"][1]]}, "test.toml")
    with pytest.raises(ScheduleError, match="the model needs .* GB"):
        plan_partition(CFG, tiny_host, "f32")


def _raw(profile) -> dict:
    """A profile back to the dict form parse_profile reads."""
    devs = []
    for d in profile.devices:
        devs.append(dict(name=d.name, kind=d.kind, hal_driver=d.hal_driver, backend=d.backend, flags=list(d.flags),
                         dtypes=list(d.dtypes), op_classes=list(d.op_classes), peak_gflops=dict(d.peak_gflops),
                         memory_bandwidth_gbs=d.memory_bandwidth_gbs, memory_gb=d.memory_gb,
                         active_power_w=d.active_power_w, idle_power_w=d.idle_power_w))
    links = [dict(between=[l.a, l.b], bandwidth_gbs=l.bandwidth_gbs, latency_us=l.latency_us) for l in profile.links]
    return {"format_version": 1, "name": profile.name, "devices": devs, "links": links}


def test_power_budget_moves_work_to_the_npu():
    fast = plan_partition(CFG, _profile(_gpu(), _npu()), "int8")
    assert _devices(fast, "ffn") == {"gpu"}
    assert fast.avg_power_w > 2.5
    budget = plan_partition(CFG, _profile(_gpu(), _npu(), power_budget_w=2.5), "int8")
    assert "npu" in _devices(budget, "ffn")
    assert budget.avg_power_w <= 2.5 + 1e-9
    assert budget.latency_ms >= fast.latency_ms
    moved = [p for p in budget.parts if p.device == "npu"]
    assert moved and all(p.reason == "constraint" and "power budget" in p.detail for p in moved)
    assert not budget.warnings


def test_unreachable_power_budget_is_reported():
    plan = plan_partition(CFG, _profile(_gpu(), _npu(), power_budget_w=0.05), "int8")
    assert plan.warnings and "power budget 0.05 W not met" in plan.warnings[0]
    assert "warning: power budget" in text_report(plan)


def test_unsupported_op_class_falls_back_to_the_cpu():
    npu = _npu(op_classes=["matmul", "norm", "elementwise", "rope"])  # no attention, no gather
    plan = plan_partition(CFG, _profile(npu, objective="energy"), "int8")
    assert _devices(plan, "ffn") == {"npu"}
    assert _devices(plan, "attn") == {"cpu"}
    attn = [p for p in plan.parts if p.kind == "attn"]
    assert all(p.reason == "fallback" and "npu has no attention" in p.detail for p in attn)
    report = text_report(plan)
    assert "fallback" in report and "npu has no attention" in report


def test_dynamic_programming_finds_the_best_assignment():
    """Against brute force over every assignment of a small model to three devices."""
    cfg = ModelConfig(family="llama", vocab_size=512, hidden_size=256, intermediate_size=1024,
                      num_layers=2, num_heads=4, num_kv_heads=4, head_dim=64)
    prof = _profile(_gpu(call_overhead_us=200.0), _npu(op_classes=["matmul", "norm", "elementwise"]))
    plan = plan_partition(cfg, prof, "int8")
    pb = _Problem(prof, model_parts(cfg, "int8", context=1024, capacity=1024), cfg.hidden_size, cfg.vocab_size)
    names = [d.name for d in prof.devices]
    best = min(
        pb.evaluate(list(a))[0]
        for a in itertools.product(names, repeat=len(pb.parts))
        if all(pb.can_run(p, prof.device(n)) for p, n in zip(pb.parts, a))
    )
    assert plan.latency_ms == pytest.approx(best * 1e3, rel=1e-9)


def test_plan_round_trips_through_json_and_draws():
    plan = plan_partition(CFG, _profile(_gpu(memory_gb=0.1)), "f32")
    again = PartitionPlan.from_json(plan.to_json())
    assert again == plan
    assert json.loads(plan.to_json())["parts"][0]["part"] == "embed"
    svg = ET.fromstring(svg_picture(plan))
    rects = [e for e in svg.iter("{http://www.w3.org/2000/svg}rect") if e.find("{http://www.w3.org/2000/svg}title") is not None]
    assert len(rects) == len(plan.parts)


def test_phone_profiles_plan_a_1_5b_model():
    """A GLM-edge-1.5B-class shape, int4 layers: each phone uses its accelerators."""
    cfg = ModelConfig(family="glm4", vocab_size=59264, hidden_size=2048, intermediate_size=6144,
                      num_layers=28, num_heads=16, num_kv_heads=4, head_dim=128)
    for name in ("snapdragon-8-gen3", "dimensity-9300"):
        plan = plan_partition(cfg, load_profile(name), "int4", capacity=2048)
        assert set(plan.devices_used) - {load_profile(name).host.name}, name
        assert 1.0 < plan.latency_ms < 1000.0


def _cpu_only(**kw):
    return parse_profile({"format_version": 1, "name": "cpu", "policy": {},
                          "devices": [_device("cpu", "cpu", "local-task", "llvm-cpu", 100.0, 20.0, 6.0, **kw)]}, "cpu.toml")


def test_cost_model_counts_call_and_dispatch_overheads():
    base = plan_partition(CFG, _cpu_only(call_overhead_us=0.0), "f32", capacity=256)
    slow = plan_partition(CFG, _cpu_only(call_overhead_us=100.0, dispatch_overhead_us=10.0), "f32", capacity=256)
    d = DISPATCHES["llvm-cpu"]["decode"]
    per_token = d["embed"] + CFG.num_layers * (d["attn"] + d["ffn"]) + d["head"]
    assert slow.latency_ms - base.latency_ms == pytest.approx((100.0 + 10.0 * per_token) / 1e3)
    p = DISPATCHES["llvm-cpu"]["prefill"]
    per_prompt = p["embed"] + CFG.num_layers * (p["attn"] + p["ffn"]) + p["head"]
    assert slow.prefill_ms - base.prefill_ms == pytest.approx((100.0 + 10.0 * per_prompt) / 1e3)


def test_decode_is_bandwidth_bound_and_prefill_compute_bound():
    base = plan_partition(CFG, _cpu_only(), "f32", capacity=256)
    more_bw = plan_partition(CFG, _cpu_only(memory_bandwidth_gbs=40.0), "f32", capacity=256)
    more_flops = plan_partition(CFG, _cpu_only(peak_gflops={k: 200.0 for k in ("f32", "f16", "int8", "int4")}), "f32", capacity=256)
    assert more_bw.latency_ms < 0.6 * base.latency_ms and more_bw.prefill_ms > 0.9 * base.prefill_ms
    assert more_flops.latency_ms == pytest.approx(base.latency_ms) and more_flops.prefill_ms < 0.6 * base.prefill_ms
    # int8 weights read a quarter of the bytes: decode gets faster, by less than 4x (KV cache, head).
    int8 = plan_partition(CFG, _cpu_only(), "int8", capacity=256)
    assert 0.25 * base.latency_ms < int8.latency_ms < 0.5 * base.latency_ms


def test_a_model_that_fits_the_cache_streams_at_cache_bandwidth():
    streamed = sum(p.read_bytes for p in model_parts(CFG, "f32", context=256, capacity=256)) / 2**20
    fits = plan_partition(CFG, _cpu_only(cache_mb=2 * streamed, cache_bandwidth_gbs=80.0), "f32", capacity=256)
    too_small = plan_partition(CFG, _cpu_only(cache_mb=streamed / 2, cache_bandwidth_gbs=80.0), "f32", capacity=256)
    base = plan_partition(CFG, _cpu_only(), "f32", capacity=256)
    assert too_small.latency_ms == pytest.approx(base.latency_ms)
    assert fits.latency_ms < 0.4 * base.latency_ms


def test_estimate_of_a_placement_is_the_plans_own():
    plan = plan_partition(CFG, _profile(_gpu(memory_gb=0.1)), "f32", capacity=512)
    est = estimate_placement(CFG, _profile(_gpu(memory_gb=0.1)), [p.device for p in plan.parts], "f32", 512)
    assert est["decode_ms"] == pytest.approx(plan.latency_ms) and est["prefill_ms"] == pytest.approx(plan.prefill_ms)
    assert est["transfer_ms"] == pytest.approx(plan.transfer_ms) and plan.transfer_ms > 0


def test_report_marks_a_stand_in_npu_on_its_lines():
    plan = plan_partition(CFG, _profile(_npu(), objective="energy"), "int8")
    npu_rows = [l for l in text_report(plan, {"npu": "local-task"}).splitlines()[1:] if l.split()[1] == "npu"]
    assert npu_rows and all("[STAND-IN on local-task]" in l for l in npu_rows)
    assert "npu (npu) stand-in" in svg_picture(plan, {"npu": "local-task"})
    assert "STAND-IN" not in text_report(plan)


def test_decode_and_prefill_cost_the_positions_in_use_not_the_capacity():
    """The KV cache is updated in place and attention reads the positions in use (rounded up
    as the runtime does), so the capacity costs memory, not time."""
    small = plan_partition(CFG, _cpu_only(), "f32", capacity=256, context=100)
    big = plan_partition(CFG, _cpu_only(), "f32", capacity=4096, context=100)
    assert small.context_tokens == big.context_tokens == 128
    assert big.latency_ms == pytest.approx(small.latency_ms) and big.prefill_ms == pytest.approx(small.prefill_ms)
    assert big.memory_gb["cpu"] > small.memory_gb["cpu"]
    full = plan_partition(CFG, _cpu_only(), "f32", capacity=4096)  # default: a full cache
    assert full.context_tokens == 4096 and full.latency_ms > small.latency_ms
