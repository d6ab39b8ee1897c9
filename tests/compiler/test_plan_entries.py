"""What a bundle records of its phase plan: the prefill stages and the plans to switch between."""

from __future__ import annotations

from iree_glm.compiler.phases import ONE, SPLIT, phase_power, plan_entries, prefill_specs, why_not_run
from iree_glm.planner.phases import plan_phases

from ..planner.test_phases import _two
from ..planner.test_scheduler import CFG, _profile


def test_a_split_gives_prefill_stages_and_two_plans():
    profile = _two(gpu_gflops=4000.0, gpu_call_us=3000.0)
    pp = plan_phases(CFG, profile, "f16", capacity=1024, prompt_tokens=512)
    specs = prefill_specs(pp)
    assert [p for s in specs for p in s.parts] == [p.part for p in pp.decode.parts]
    assert [d for s in specs for d in [s.device] * len(s.parts)] == pp.prefill_devices
    assert all(a.device != b.device for a, b in zip(specs, specs[1:]))  # runs are maximal
    assert why_not_run(pp, False, "f32", False) is None
    assert "several devices" in why_not_run(pp, True, "f32", False) and "f32 only" in why_not_run(pp, False, "f16", False)
    split, one = plan_entries(pp, profile, prefill_stages=["stand-in for StageEntry"])
    assert (split.name, one.name) == (SPLIT, ONE) and one.prefill_stages is None
    assert one.power_w == phase_power(profile, {"cpu"}) and split.power_w >= one.power_w
    assert split.prefill_ms + split.handoff_ms < one.prefill_ms and split.decode_ms == one.decode_ms


def test_no_split_is_one_plan():
    profile = _profile()  # equal devices: one placement
    pp = plan_phases(CFG, profile, "f16")
    assert not pp.split and why_not_run(pp, True, "f16", True) is None
    assert [p.name for p in plan_entries(pp, profile, None)] == [ONE]


def test_a_decode_option_with_a_module_becomes_a_plan():
    from iree_glm.compiler.phases import why_no_decode_modules

    from ..planner.test_phases import _pair

    profile = _pair(gpu_power=2.0, gpu_bw=10.0)
    pp = plan_phases(CFG, profile, "f16")
    assert [p.name for p in plan_entries(pp, profile, None)] == [ONE]  # no module built: no plan
    one, low = plan_entries(pp, profile, None, {"gpu": "decode-gpu.vmfb"})
    assert (low.name, low.decode_module, low.decode_device) == ("decode-gpu", "decode-gpu.vmfb", "gpu")
    assert low.prefill_stages is None and low.power_w < one.power_w and low.decode_ms > one.decode_ms
    assert why_no_decode_modules(pp, False, "f32", "f32", False) is None
    assert "multi-device" in why_no_decode_modules(pp, True, "f32", "f32", False)
    assert "f32 only" in why_no_decode_modules(pp, False, "f16", "f32", False)
    assert why_no_decode_modules(pp, False, "f32", "f32", False, "int8") is None  # x quantized in the graph as the CPU kernel does
    assert "int4 weights (their Vulkan modules do not compile" in why_no_decode_modules(pp, False, "f32", "f32", False, "int4")


def test_a_decode_module_that_does_not_compile_is_not_carried(glm4_checkpoint, tmp_path, monkeypatch):
    """The decode option's module failing in iree-compile costs the bundle that plan, said in one
    line; the bundle's own plans stand."""
    from iree_glm.compiler import phases
    from iree_glm.compiler.build import BuildOptions, build_bundle
    from iree_glm.compiler.iree_compile import CompileError

    from ..helpers import declared_lavapipe_profile

    def refuse(mlir, out, target, *args, **kwargs):
        raise CompileError(f"iree-compile failed for {mlir.name}: error: refused for {target.backend} (full log: x.log)")

    monkeypatch.setattr(phases, "compile_mlir", refuse)
    profile = declared_lavapipe_profile(tmp_path / "p.toml", "decode-switch-test", 3.0, slow_cpu=False)
    said: list[str] = []
    result = build_bundle(glm4_checkpoint[0], tmp_path / "b", BuildOptions(max_context=64, profile=str(profile)), progress=said.append)
    assert [p.name for p in result.manifest.options.plans] == [ONE]
    assert [m.file for m in result.manifest.modules] == ["model.vmfb"]
    (line,) = [s for s in said if s.startswith("plan decode-lavapipe")]
    assert "not carried, its module does not compile: iree-compile failed" in line and "\n" not in line
