"""Plans per phase: prefill where compute is, decode where bandwidth and call overhead are."""

from __future__ import annotations

import pytest

from iree_glm.planner.phases import ideal_prefill_ms, plan_phases
from iree_glm.planner.profile import load_profile, parse_profile
from iree_glm.planner.scheduler import plan_partition, quant_dtypes

from .test_scheduler import CFG, _device, _profile


def _two(gpu_gflops: float, gpu_call_us: float, shared: bool = True, gpu_memory_gb: float = 16.0):
    cpu = _device("cpu", "cpu", "local-task", "llvm-cpu", 100.0, 20.0, 6.0, call_overhead_us=20.0, dispatch_overhead_us=0.5)
    gpu = _device("gpu", "gpu", "vulkan", "vulkan-spirv", gpu_gflops, 20.0, 5.0, call_overhead_us=gpu_call_us,
                  dispatch_overhead_us=40.0, memory_gb=gpu_memory_gb)
    link = dict(between=["cpu", "gpu"], bandwidth_gbs=5.0, latency_us=50.0, shared_memory=shared)
    return parse_profile({"format_version": 1, "name": "phases", "devices": [cpu, gpu], "links": [link], "policy": {}}, "phases.toml")


def test_a_fast_but_call_heavy_gpu_prefills_and_the_cpu_decodes():
    pp = plan_phases(CFG, _two(gpu_gflops=4000.0, gpu_call_us=3000.0), "f16", capacity=1024, prompt_tokens=512)
    assert pp.split
    assert {p.device for p in pp.decode.parts} == {"cpu"}
    assert set(pp.prefill_devices) == {"gpu"} or set(pp.prefill_devices[1:-1]) == {"gpu"}
    assert pp.handoff_ms == 0.0 and pp.handoff_bytes == 0.0  # shared memory: nothing moves
    assert pp.ttft_ms * 1.05 <= pp.single_prefill_ms
    assert any("compute-bound" in r for r in pp.reasons)


def test_the_kv_hand_off_is_priced_over_a_link():
    pp = plan_phases(CFG, _two(gpu_gflops=4000.0, gpu_call_us=3000.0, shared=False), "f16", capacity=1024, prompt_tokens=512)
    assert pp.split and pp.handoff_bytes > 0 and pp.handoff_ms > 0
    kv_per_layer = 2 * CFG.num_kv_heads * CFG.head_dim * 4 * 512
    assert pp.handoff_bytes == pytest.approx(kv_per_layer * CFG.num_layers)


def test_equal_devices_get_one_placement():
    pp = plan_phases(CFG, _profile(), "f16")
    assert not pp.split and pp.prefill_devices == [p.device for p in pp.decode.parts]
    assert pp.ttft_ms == pp.single_prefill_ms


def test_weights_that_cannot_live_twice_keep_one_placement():
    pp = plan_phases(CFG, _two(gpu_gflops=4000.0, gpu_call_us=3000.0, shared=False, gpu_memory_gb=0.05), "f16")
    assert not pp.split and any("weights twice" in r or "one placement" in r for r in pp.reasons)


@pytest.mark.parametrize("name", ["snapdragon-8-gen3", "dimensity-9300", "raspberry-pi-5", "host-cpu", "host-cpu-vulkan"])
@pytest.mark.parametrize("mode", ["none", "int8", "int4"])
def test_phase_plans_are_never_worse_by_the_cost_model(name, mode):
    profile = load_profile(name)
    pp = plan_phases(CFG, profile, quant_dtypes(mode), capacity=1024)
    single = plan_partition(CFG, profile, quant_dtypes(mode), capacity=1024)
    assert pp.decode.latency_ms == pytest.approx(single.latency_ms)  # decode keeps its plan
    assert pp.ttft_ms <= pp.single_prefill_ms + 1e-9
    # no placement of the prompt beats the ideal pipeline over all devices
    assert ideal_prefill_ms(CFG, profile, quant_dtypes(mode), capacity=1024) <= pp.prefill_ms + 1e-9


def test_the_ideal_prefill_shares_the_layers_by_speed():
    alone = ideal_prefill_ms(CFG, _profile(), "f16", prompt_tokens=512)
    assert alone == pytest.approx(plan_phases(CFG, _profile(), "f16", prompt_tokens=512).prefill_ms, rel=0.01)
    # two equal devices halve the layers' time; the embeddings and head are not shared
    two = ideal_prefill_ms(CFG, _profile(_device("npu", "npu", "local-task", "llvm-cpu", 100.0, 20.0, 6.0)), "f16", prompt_tokens=512)
    assert 0 <= 2 * two - alone < 0.05 * alone
    # a device without the layers' dtype adds nothing
    lacking = _profile(_device("npu", "npu", "local-task", "llvm-cpu", 100.0, 20.0, 6.0, dtypes=["f32"]))
    assert ideal_prefill_ms(CFG, lacking, "f16", prompt_tokens=512) == pytest.approx(alone)


def _pair(gpu_power: float, gpu_bw: float, **policy):
    cpu = _device("cpu", "cpu", "local-task", "llvm-cpu", 100.0, 20.0, 6.0)
    gpu = _device("gpu", "gpu", "vulkan", "vulkan-spirv", 1000.0, gpu_bw, gpu_power)
    link = dict(between=["cpu", "gpu"], bandwidth_gbs=20.0, latency_us=10.0, shared_memory=True)
    return parse_profile({"format_version": 1, "name": "pair", "devices": [cpu, gpu], "links": [link], "policy": policy}, "p.toml")


def test_a_frugal_gpu_is_a_power_saving_decode_option():
    pp = plan_phases(CFG, _pair(gpu_power=2.0, gpu_bw=10.0), "f16")
    assert {p.device for p in pp.decode.parts} == {"cpu"}
    (option,) = pp.decode_options
    assert option.device == "gpu" and option.decode_ms > pp.decode.latency_ms and "draws less" in option.why
    assert option.power_w == pytest.approx(2.0 + 0.6)  # the gpu active, the cpu idle


def test_a_faster_decode_device_the_budget_excluded_is_an_option():
    pp = plan_phases(CFG, _pair(gpu_power=20.0, gpu_bw=60.0, power_budget_w=8.0), "f16")
    assert {p.device for p in pp.decode.parts} == {"cpu"}  # the budget keeps decode on the cpu
    (option,) = pp.decode_options
    assert option.device == "gpu" and option.decode_ms < pp.decode.latency_ms and "decodes faster" in option.why


def test_a_slower_hungrier_device_is_no_option():
    assert plan_phases(CFG, _pair(gpu_power=20.0, gpu_bw=10.0), "f16").decode_options == []
    assert plan_phases(CFG, _profile(), "f16").decode_options == []
