"""Phase-split plans run: prefill on lavapipe (declared fast but call-heavy), decode on the CPU.

One bundle is built from a test profile whose CPU is declared slow at matmuls and whose lavapipe
is declared fast at them but with a high call overhead: the planner prefills the layers on
lavapipe and decodes on the CPU. Its greedy tokens must equal the CPU-only bundle's, for a
prompt shorter and one longer than a prefill chunk, with the prefix cache warm, in the batching
engine, and when the plan is switched mid-generation. lavapipe is slow and flaky under load, so
one session is loaded for all of them.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from iree_glm.bundle.manifest import read_manifest
from iree_glm.errors import RequestError
from iree_glm.planner.report import plans_report
from iree_glm.runtime.devices import driver_available
from iree_glm.runtime.plans import PlanFallbackWarning
from iree_glm.runtime.thermal import ThermalPolicy, parse_steps

from ..helpers import declared_lavapipe_bundle, greedy_reference

CHUNK = 32
SHORT = [5, 17, 99, 3, 42, 7]
LONG = [11, 200, 3, 57, 91, 4, 8, 150] * 9  # 72 tokens: three chunks
OTHER = LONG[:-1] + [9]  # shares LONG's cached prefix
NEW = 10

pytestmark = pytest.mark.skipif(not driver_available("vulkan"), reason="no Vulkan device (lavapipe) on this machine")


@pytest.fixture(scope="module")
def phase_bundle(glm4_checkpoint, tmp_path_factory) -> Path:
    return declared_lavapipe_bundle(glm4_checkpoint[0], tmp_path_factory, "phase-split-test", 15.0, slow_cpu=True)


@pytest.fixture(scope="module")
def reference(glm4_bundle) -> dict:
    return greedy_reference(glm4_bundle, (SHORT, LONG, OTHER), NEW)


@pytest.fixture(scope="module")
def session(phase_bundle):
    from iree_glm.runtime import Session

    s = Session.load(phase_bundle, prefix_cache=True, prefill_chunk=CHUNK)
    yield s
    s.close()


def test_the_bundle_carries_both_phases(phase_bundle):
    m = read_manifest(phase_bundle)
    assert m.options.stages is None and m.modules[0].file == "model.vmfb"  # decode: the CPU module
    split, one = m.options.plans
    assert (split.name, one.name) == ("phase-split", "one-placement") and one.prefill_stages is None
    assert [s.device for s in split.prefill_stages] == ["cpu", "lavapipe", "cpu"]  # embed, the layers, the head
    lavapipe = split.prefill_stages[1]
    assert lavapipe.cache_layers == [0, 1] and lavapipe.device_driver == "vulkan"
    assert {mod.file: mod.driver for mod in m.modules}[lavapipe.file] == "vulkan"
    assert split.prefill_ms + split.handoff_ms < one.prefill_ms and split.decode_ms == one.decode_ms
    assert split.power_w > one.power_w
    text = plans_report(m.options.plans)
    assert "phase-split: prefill on cpu, lavapipe" in text and "one-placement: prefill on the decode placement" in text


def test_prefill_on_lavapipe_gives_the_cpu_bundles_tokens(session, reference):
    assert session.plan == "phase-split"
    placement = session.plans.placement()
    for prompt in (SHORT, LONG):  # one call, then three chunks
        before = placement.stats.handoff_bytes
        r = session.generate(prompt, max_new_tokens=NEW)
        assert r.generated_ids == reference[tuple(prompt)] and r.cached_tokens == 0
        assert placement.stats.handoff_bytes > before
    assert placement.runner.stats.stage_seconds["lavapipe"] > 0
    warm = session.generate(LONG, max_new_tokens=NEW)  # the prefix cache restores most of it
    assert warm.cached_tokens >= 64 and warm.generated_ids == reference[tuple(LONG)]
    assert placement.stats.prefix_upload_seconds > 0


def test_batching_engine_and_a_switch_mid_generation(session, reference):
    """A runs on the phase split; after its first tokens the plan switches, B is prefilled on
    the one placement while A keeps decoding: both keep the CPU bundle's tokens."""
    placement = session.plans.placement()

    async def run() -> tuple[list[int], list[int]]:
        a_ids, b_task = [], None
        async for event in session.stream_async(OTHER, max_new_tokens=NEW):
            a_ids.append(event.token_id)
            if len(a_ids) == 2:
                session.use_plan("one-placement")
                b_task = asyncio.ensure_future(_collect(session.stream_async(SHORT, max_new_tokens=NEW)))
        return a_ids, await b_task

    calls = placement.stats.prefill_seconds
    session.use_plan("phase-split")
    try:
        a, b = asyncio.run(run())
    finally:
        session.use_plan("phase-split")
    assert a == reference[tuple(OTHER)]
    assert b == reference[tuple(SHORT)]
    assert placement.stats.prefill_seconds > calls  # A was prefilled on the split


async def _collect(gen) -> list[int]:
    return [event.token_id async for event in gen]


def test_power_budget_and_thermal_policy(session, tmp_path):
    assert session.set_power_budget(100.0) == "phase-split"
    assert session.set_power_budget(12.0) == "one-placement"
    with pytest.warns(PlanFallbackWarning, match="no plan of .* meets a 1 W budget: using plan 'one-placement'"):
        assert session.set_power_budget(1.0) == "one-placement"
    zone = tmp_path / "thermal_zone0"
    zone.mkdir()
    (zone / "type").write_text("x86_pkg_temp\n")
    (tmp_path / "thermal_zone1").mkdir()
    (tmp_path / "thermal_zone1" / "temp").write_text("not a number\n")  # a sensor that is off: skipped
    policy = ThermalPolicy(parse_steps("80:12,60:30"), tmp_path)
    for millis, plan in (("45000", "phase-split"), ("85000", "one-placement"), ("61000", "phase-split")):
        (zone / "temp").write_text(millis + "\n")
        assert policy.apply(session) == plan == session.plan
    with pytest.raises(RequestError, match="unknown plan 'fast'.*phase-split, one-placement"):
        session.use_plan("fast")


def test_missing_vulkan_falls_back_to_one_placement_in_one_line(phase_bundle, reference, monkeypatch):
    from iree_glm.runtime import Session
    from iree_glm.runtime import plans

    monkeypatch.setattr(plans, "driver_available", lambda driver: driver != "vulkan")
    with pytest.warns(PlanFallbackWarning, match=r"plan 'phase-split' cannot run: .*HAL driver 'vulkan' is not "
                                                 r"available here; using plan 'one-placement' \(prefill on the decode devices\)"):
        s = Session.load(phase_bundle)
    assert s.plan == "one-placement"
    assert s.generate(SHORT, max_new_tokens=NEW).generated_ids == reference[tuple(SHORT)]
    with pytest.raises(RequestError, match="plan 'phase-split' cannot run here"):
        s.use_plan("phase-split")


def test_run_cli_without_vulkan_says_one_line(phase_bundle, reference):
    env = dict(os.environ, VK_ICD_FILENAMES="/nonexistent-icd.json")  # the Vulkan loader finds no device
    r = subprocess.run([sys.executable, "-m", "iree_glm.run", str(phase_bundle), "--prompt-ids", ",".join(map(str, SHORT)),
                        "--max-new-tokens", str(NEW), "--json"], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert [line for line in r.stderr.splitlines() if line.strip()] == [
        line for line in r.stderr.splitlines() if line.startswith("warning: plan 'phase-split' cannot run")]
    assert len(r.stderr.strip().splitlines()) == 1
    import json

    out = json.loads(r.stdout)
    assert out["plan"] == "one-placement" and out["generated_ids"] == reference[tuple(SHORT)]


def test_serve_admin_endpoint_switches_plans(session):
    import http.client
    import json

    from iree_glm.server.http import BackgroundServer

    server = BackgroundServer(session)
    try:
        def call(method, body=None):
            c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            c.request(method, "/admin/plans" if body is None else "/admin/plan", json.dumps(body) if body is not None else None,
                      {"Content-Type": "application/json"})
            r = c.getresponse()
            data = json.loads(r.read())
            c.close()
            return r.status, data

        status, listing = call("GET")
        assert status == 200 and [p["name"] for p in listing["plans"]] == ["phase-split", "one-placement"]
        assert call("POST", {"plan": "one-placement"}) == (200, {"plan": "one-placement"}) and session.plan == "one-placement"
        assert call("POST", {"power_budget_w": 100}) == (200, {"plan": "phase-split"})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            status, data = call("POST", {"power_budget_w": 1})
        assert status == 200 and data["plan"] == "one-placement" and "meets a 1 W budget" in data["warning"]
        for bad in ({}, {"plan": "x", "power_budget_w": 1}, {"plan": 3}, {"power_budget_w": -1}, {"plan": "fast"}):
            status, data = call("POST", bad)
            assert status == 400 and "\n" not in data["error"]["message"]
    finally:
        server.close()
        session.use_plan("phase-split")
