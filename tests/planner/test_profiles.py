"""Device profiles: the shipped files load, broken ones fail with the key named, the CLI's exit codes."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from iree_glm.planner.profile import ProfileError, load_profile, parse_profile, shipped_profiles
from iree_glm.errors import UserError
from iree_glm.compiler.target import device_target
from ..helpers import PROFILES

SHIPPED = ["host-cpu", "host-cpu-vulkan", "snapdragon-8-gen3", "dimensity-9300", "raspberry-pi-5"]


def test_shipped_profiles_load():
    assert set(SHIPPED) <= set(shipped_profiles())
    for name in SHIPPED:
        p = load_profile(name)
        assert p.name == name
        assert p.host.kind == "cpu"
    sd = load_profile("snapdragon-8-gen3")
    assert [d.kind for d in sd.devices] == ["cpu", "gpu", "npu"]
    assert sd.device("hexagon").allow_stand_in
    assert "int4" not in sd.device("adreno750").dtypes


def test_path_and_name_give_the_same_profile():
    by_path = load_profile(PROFILES / "host-cpu.toml")
    assert by_path.devices == load_profile("host-cpu").devices


def test_host_cpu_target_matches_the_measured_host_flags():
    from iree_glm.compiler.target import host_cpu_target

    assert device_target(load_profile("host-cpu").host) == host_cpu_target()


def _base() -> dict:
    return tomllib.loads((PROFILES / "host-cpu-vulkan.toml").read_text())


def _broken(edit) -> str:
    data = _base()
    edit(data)
    with pytest.raises(ProfileError) as e:
        parse_profile(data, "profiles/x.toml")
    return str(e.value)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["devices"][1].update(hal_driver="foo"), "profiles/x.toml: devices[1].hal_driver: 'foo' is not one of"),
        (lambda d: d["devices"][0].update(colour="red"), "devices[0].colour: unknown key"),
        (lambda d: d["links"][0].update(between=["cpu", "tpu"]), "links[0].between[1]: unknown device 'tpu'"),
        (lambda d: d["links"][0].update(bandwidth_gbs=-1.0), "links[0].bandwidth_gbs: -1.0 is below the minimum 0.0"),
        (lambda d: d["devices"][1].update(kind="fpga"), "devices[1].kind: 'fpga' is not one of cpu, gpu, npu"),
        (lambda d: d["devices"][1].pop("memory_gb"), "devices[1].memory_gb: missing"),
        (lambda d: d["devices"][1].update(dtypes=["f32", "int8"]), "devices[1].peak_gflops: no throughput for supported dtype 'int8'"),
        (lambda d: d["devices"][1].update(op_classes=["matmul", "warp"]), "devices[1].op_classes[1]: 'warp' is not one of"),
        (lambda d: d["devices"][1].update(memory_bandwidth_gbs="fast"), "devices[1].memory_bandwidth_gbs: expected a number, got 'fast'"),
        (lambda d: d["devices"][1].update(allow_stand_in=True), "devices[1].allow_stand_in: only NPUs"),
        (lambda d: d["devices"][1].update(name="cpu"), "devices[1].name: duplicate device name 'cpu'"),
        (lambda d: d.update(format_version=2), "format_version: this iree_glm reads version 1"),
        (lambda d: d["policy"].update(objective="speed"), "policy.objective: 'speed' is not one of latency, energy, balanced"),
        (lambda d: d.pop("links"), "devices[1]: no link between 'lavapipe' and the host cpu 'cpu'"),
        (lambda d: d["devices"].pop(0), "a profile needs a cpu device"),
        (lambda d: d["devices"][0].update(dispatch_overhead_us=-2.0), "devices[0].dispatch_overhead_us: -2.0 is below the minimum 0.0"),
        (lambda d: d["devices"][0].update(cache_mb=32.0) or d["devices"][0].pop("cache_bandwidth_gbs", None),
         "devices[0].cache_mb: needs cache_bandwidth_gbs too"),
        (lambda d: d["devices"][0].update(attention_gflops=0.0), "devices[0].attention_gflops: must be positive"),
        (lambda d: d["devices"][0].update(memory_gb=float("nan")), "devices[0].memory_gb: expected a finite number, got nan"),
        (lambda d: d["devices"][0]["peak_gflops"].update(f32=float("inf")), "devices[0].peak_gflops.f32: expected a finite number, got inf"),
        (lambda d: d["links"][0].update(latency_us=float("nan")), "links[0].latency_us: expected a finite number, got nan"),
        (lambda d: d["policy"].update(power_budget_w=float("-inf")), "policy.power_budget_w: expected a finite number"),
        (lambda d: d["policy"].update(context_tokens=0), "policy.context_tokens: 0 is below the minimum 1"),
        (lambda d: d["policy"].update(decode_batch_sizes=[1, "2"]), "policy.decode_batch_sizes[1]: expected an integer"),
        (lambda d: d["devices"][0].update(flags="--x"), "devices[0].flags: expected a list"),
    ],
)
def test_broken_profiles_name_the_key(edit, message):
    assert message in _broken(edit)


def test_a_profile_with_nan_does_not_validate(tmp_path):
    """A NaN in a profile validated "ok" and its bundle crashed the server at start (issue #22)."""
    text = (PROFILES / "host-cpu-vulkan.toml").read_text()
    bad = tmp_path / "nan.toml"
    bad.write_text(text.replace("[policy]", "[policy]\npower_budget_w = nan", 1))
    r = _cli("validate", str(bad))
    assert r.returncode == 2 and "ok:" not in r.stdout
    assert r.stderr.strip().splitlines() == [f"error: {bad}: policy.power_budget_w: expected a finite number, got nan"]


def test_profile_error_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("format_version = 1\nname = [")
    with pytest.raises(UserError, match="bad.toml: not valid TOML"):
        load_profile(bad)
    with pytest.raises(ProfileError, match="unknown profile 'nope'.*host-cpu"):
        load_profile("nope")
    with pytest.raises(ProfileError, match="no such profile file"):
        load_profile(tmp_path / "missing.toml")


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iree_glm.profile", *args], capture_output=True, text=True, timeout=timeout)


def test_cli_validate_show_and_exit_codes(tmp_path):
    ok = _cli("validate", str(PROFILES / "snapdragon-8-gen3.toml"))
    assert ok.returncode == 0, ok.stderr
    assert "ok: profile 'snapdragon-8-gen3'" in ok.stdout
    # The NPU driver does not exist here: a warning, not an error.
    assert "warning:" in ok.stderr and "'qnn-htp' is not available on this machine" in ok.stderr

    data = (PROFILES / "host-cpu-vulkan.toml").read_text().replace('hal_driver = "vulkan"', 'hal_driver = "foo"')
    bad = tmp_path / "x.toml"
    bad.write_text(data)
    r = _cli("validate", str(bad))
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: ") and "devices[1].hal_driver: 'foo' is not one of" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1

    show = _cli("show", "raspberry-pi-5")
    assert show.returncode == 0, show.stderr
    assert "partition plan for profile 'raspberry-pi-5'" in show.stdout and "ms/token" in show.stdout
    assert "phases (512-token prompt, estimates):" in show.stdout and "decode:" in show.stdout
    assert _cli("show", "nope").returncode == 2


def test_calibrate_writes_a_valid_profile(tmp_path):
    out = tmp_path / "measured.toml"
    r = _cli("calibrate", "--driver", "local-task", "-o", str(out), "--repeats", "2", timeout=900)  # compiles 3 modules
    assert r.returncode == 0, r.stderr
    p = load_profile(out)
    cpu = p.host
    assert cpu.hal_driver == "local-task" and "f32" in cpu.dtypes
    assert cpu.peak_gflops["f32"] > 0.1 and cpu.memory_bandwidth_gbs > 0.01 and cpu.call_overhead_us > 0
    # Every number the cost model uses was measured (the host compiles attention).
    assert cpu.dispatch_overhead_us >= 0 and cpu.fresh_memory_gbs > 0 and cpu.attention_gflops > 0
    assert "attention" in cpu.op_classes and cpu.cache_bandwidth_gbs > 0
    assert "AMD" in out.read_text() or "cores, load average" in out.read_text()  # says where it was measured
    assert _cli("calibrate", "--driver", "qnn-htp", "-o", str(tmp_path / "npu.toml")).returncode == 2


def test_compile_rejects_a_bad_profile_before_building(tmp_path, capsys):
    from iree_glm.errors import run_cli
    from iree_glm.cli.compile import main

    bad = tmp_path / "x.toml"
    bad.write_text((PROFILES / "host-cpu.toml").read_text().replace('kind = "cpu"', 'kind = "tpu"'))
    for profile, message in (("nope", "unknown profile 'nope'"), (str(bad), "devices[0].kind: 'tpu' is not one of cpu, gpu, npu")):
        assert run_cli(main, ["-o", str(tmp_path / "b"), "--profile", profile]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "b").exists()


def test_calibrate_warns_when_other_work_shares_the_cores(monkeypatch):
    """Calibrations taken under load were 5-12x slow: `load_warning` is what calibrate prints
    and writes into the profile's header then."""
    from iree_glm.tuning import calibrate

    cores = calibrate.os.cpu_count() or 1
    monkeypatch.setattr(calibrate.os, "getloadavg", lambda: (0.4 * cores, 0.0, 0.0))
    assert calibrate.load_warning() is None
    monkeypatch.setattr(calibrate.os, "getloadavg", lambda: (3.0 * cores, 0.0, 0.0))
    assert calibrate.load_warning().startswith(f"load average {3.0 * cores:.1f} on {cores} cores before measuring")
