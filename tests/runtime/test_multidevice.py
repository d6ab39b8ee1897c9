"""One model across devices: CPU + Vulkan (lavapipe) + an NPU with no driver here (CPU stand-in).

One bundle is built from a test profile whose memory caps force a split: the NPU holds one
layer, lavapipe the last layer (its attention too: the shipped profile says lavapipe compiles
attention, and the build would fail if it did not) and the head, the rest stays on the CPU.
Its greedy tokens must equal the CPU-only bundle's.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from iree_glm.compiler.build import BuildOptions, build_bundle
from iree_glm.bundle.manifest import read_manifest
from iree_glm.frontend.checkpoint import open_checkpoint
from iree_glm.errors import BundleError
from iree_glm.runtime.devices import driver_available
from iree_glm.planner.profile import parse_profile
from iree_glm.planner.scheduler import GB, PartitionPlan, model_parts

from ..helpers import lose_devices
from ..helpers import PROFILES, write_profile

CONTEXT = 128
PROMPT = [5, 17, 99, 3, 42, 7]

pytestmark = pytest.mark.skipif(not driver_available("vulkan"), reason="no Vulkan device (lavapipe) on this machine")


@pytest.fixture(scope="module")
def split_profile(glm4_checkpoint, tmp_path_factory) -> Path:
    """host-cpu-vulkan with a fast (declared) lavapipe and NPU whose memory forces a 3-device split;
    lavapipe keeps the shipped profile's flags and op classes."""
    cfg = open_checkpoint(glm4_checkpoint[0]).config
    parts = {p.name: p.resident_bytes for p in model_parts(cfg, "f32", context=CONTEXT // 2, capacity=CONTEXT)}
    last = cfg.num_layers - 1
    data = tomllib.loads((PROFILES / "host-cpu-vulkan.toml").read_text())
    data["name"] = "split-test"
    # A slow (declared) CPU, so moving the tiny test model's parts pays for the hand-offs.
    data["devices"][0].update(peak_gflops={k: 1.0 for k in data["devices"][0]["peak_gflops"]}, memory_bandwidth_gbs=0.1)
    gpu = data["devices"][1]
    gpu.update(peak_gflops={"f32": 1000.0, "f16": 1000.0}, memory_bandwidth_gbs=100.0, call_overhead_us=5.0,
               dispatch_overhead_us=1.0, fresh_memory_gbs=100.0,
               memory_gb=1.05 * (parts[f"layers.{last}.attn"] + parts[f"layers.{last}.ffn"] + parts["head"]) / GB)
    npu = dict(name="npu", kind="npu", hal_driver="qnn-htp", backend="qnn", flags=[], dtypes=["f32"],
               op_classes=["matmul", "attention", "rope", "norm", "elementwise"], peak_gflops={"f32": 500.0},
               memory_bandwidth_gbs=80.0, memory_gb=1.05 * (parts["layers.0.attn"] + parts["layers.0.ffn"]) / GB,
               active_power_w=1.0, idle_power_w=0.1, call_overhead_us=5.0, allow_stand_in=True)
    data["devices"].append(npu)
    data["links"][0].update(bandwidth_gbs=50.0, latency_us=5.0)
    data["links"].append({"between": ["cpu", "npu"], "bandwidth_gbs": 50.0, "latency_us": 5.0, "shared_memory": True})
    path = tmp_path_factory.mktemp("profiles") / "split.toml"
    write_profile(path, data)
    return path


@pytest.fixture(scope="module")
def split_bundle(glm4_checkpoint, split_profile, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "split"
    build_bundle(glm4_checkpoint[0], out, BuildOptions(max_context=CONTEXT, profile=str(split_profile)))
    return out


def test_plan_splits_across_three_devices(split_bundle, split_profile):
    m = read_manifest(split_bundle)
    plan = PartitionPlan.from_json((split_bundle / "plan.json").read_text())
    assert {"plan.json", "plan.svg"} <= set(m.files)
    assert m.options.plan == "plan.json" and m.profile == "split-test"
    assert set(plan.devices_used) == {"cpu", "lavapipe", "npu"}
    last = plan.parts[-2].layer
    assert [plan.device_of(p) for p in (f"layers.{last}.attn", f"layers.{last}.ffn", "head")] == ["lavapipe"] * 3
    assert "attention" in parse_profile(tomllib.loads(split_profile.read_text()), "split.toml").device("lavapipe").op_classes
    stages = m.options.stages
    assert [s.device for s in stages] == [s.device for s in plan.segments]
    assert len(m.modules) == len(stages) >= 3
    drivers = {mod.partition: mod.driver for mod in m.modules}
    assert drivers["lavapipe"] == "vulkan" and drivers["cpu"] == "local-task"
    npu = next(s for s in stages if s.device == "npu")
    assert npu.stand_in and drivers["npu"] == "local-task"  # no NPU compiler or driver: CPU stand-in
    assert npu.cache_layers, "the NPU stage keeps the KV cache of its own layers"
    assert "npu (npu) stand-in" in (split_bundle / "plan.svg").read_text()


def test_missing_npu_driver_stops_in_one_line(split_bundle):
    from iree_glm.runtime.pipeline import PipelineSession

    with pytest.raises(BundleError, match="device 'npu' needs HAL driver 'qnn-htp'.*--allow-stand-in"):
        PipelineSession.load(split_bundle)
    r = subprocess.run([sys.executable, "-m", "iree_glm.run", str(split_bundle), "--prompt-ids", "1,2,3"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "--allow-stand-in" in r.stderr


def test_split_gives_the_cpu_bundles_greedy_tokens(split_bundle, glm4_bundle):
    from iree_glm.runtime import Session
    from iree_glm.runtime.pipeline import PipelineSession

    reference = Session.load(glm4_bundle).generate(PROMPT, max_new_tokens=12).generated_ids
    split = PipelineSession.load(split_bundle, allow_stand_in=True)
    assert split.stand_ins == {"npu": "local-task"}
    result = split.generate(PROMPT, max_new_tokens=12)
    assert result.generated_ids == reference
    assert split.stats.stage_seconds["lavapipe"] > 0 and split.stats.stage_seconds["npu"] > 0


def test_run_cli_marks_the_stand_in(split_bundle):
    r = subprocess.run([sys.executable, "-m", "iree_glm.run", str(split_bundle), "--prompt-ids", ",".join(map(str, PROMPT)),
                        "--max-new-tokens", "4", "--allow-stand-in"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    # Every line but lavapipe losing its device while loading (retried, tests/test_device_lost.py) is marked.
    lines = [l for l in r.stderr.splitlines() if l.strip() and "vulkan device was lost while loading" not in l]
    assert lines and all("[STAND-IN: npu runs on local-task]" in l for l in lines)


def test_lavapipe_lost_while_loading_is_loaded_again(split_bundle, glm4_bundle, monkeypatch):
    """The whole pipeline is loaded again (earlier stages on the lost device would hold it)."""
    from iree_glm.runtime import Session
    from iree_glm.runtime.devices import DeviceLostWarning, hal_device
    from iree_glm.runtime.pipeline import PipelineSession

    reference = Session.load(glm4_bundle).generate(PROMPT, max_new_tokens=6).generated_ids
    stages = read_manifest(split_bundle).options.stages
    lavapipe_at = [s.device for s in stages].index("lavapipe")
    lost = hal_device("vulkan")
    calls = lose_devices(monkeypatch, {lavapipe_at + 1}, "queue.c:2867: DATA_LOSS; [vkSignalSemaphore] VK_ERROR_DEVICE_LOST")
    with pytest.warns(DeviceLostWarning, match="the vulkan device was lost while loading") as seen:
        split = PipelineSession.load(split_bundle, allow_stand_in=True)
    # The stages before it, then all of them again; a loss lavapipe adds by itself (it does under
    # load) starts one more pass and says so too.
    assert calls[:lavapipe_at + 1] == ["ok"] * lavapipe_at + ["injected"]
    assert set(calls) <= {"ok", "injected", "lost"} and calls[-len(stages):] == ["ok"] * len(stages)
    assert len(seen) == len(calls) - calls.count("ok")
    passes = "".join("x" if c != "ok" else "." for c in calls).split("x")
    assert all(len(p) < len(stages) for p in passes[:-1]) and len(passes[-1]) == len(stages)
    stage = next(s for s in split._stages if s.device == "lavapipe")
    assert stage.device_handle is not lost and stage.device_handle is hal_device("vulkan")
    assert split.generate(PROMPT, max_new_tokens=6).generated_ids == reference


def test_a_device_failing_mid_run_stops_with_one_line(split_bundle):
    from iree_glm.runtime.pipeline import DeviceFailure, PipelineSession

    split = PipelineSession.load(split_bundle, allow_stand_in=True)
    stage = next(s for s in split._stages if s.device == "lavapipe")

    def broken(*args):
        raise RuntimeError("VK_ERROR_DEVICE_LOST: simulated\nmore detail")

    stage.fns["decode"] = broken
    with pytest.raises(DeviceFailure, match=r"device 'lavapipe' \(vulkan\) failed in decode: VK_ERROR_DEVICE_LOST: simulated$"):
        split.generate(PROMPT, max_new_tokens=4)
