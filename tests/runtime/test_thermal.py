"""The thermal policy's parsing and reading of Linux thermal zones (a fake sysfs root)."""

from __future__ import annotations

import math

import pytest

from iree_glm.errors import UserError
from iree_glm.runtime.thermal import ThermalPolicy, ThermalStep, parse_steps, read_zones


def test_steps_parse_sorted_and_checked():
    assert parse_steps("75:4,60:8") == [ThermalStep(60.0, 8.0), ThermalStep(75.0, 4.0)]
    for bad, message in (("60", "not CELSIUS:WATTS"), ("60:x", "not CELSIUS:WATTS"), ("60:-1", "watts >= 0"),
                         ("60:4,75:8", "must not allow more watts"), ("nan:3", "finite")):
        with pytest.raises(UserError, match=message):
            parse_steps(bad)


def test_zones_are_read_in_degrees_and_broken_ones_skipped(tmp_path):
    for i, (kind, temp) in enumerate((("x86_pkg_temp", "52000"), ("acpitz", "garbage"), (None, "71500"))):
        zone = tmp_path / f"thermal_zone{i}"
        zone.mkdir()
        (zone / "temp").write_text(temp + "\n")
        if kind:
            (zone / "type").write_text(kind + "\n")
    (tmp_path / "cooling_device0").mkdir()
    assert read_zones(tmp_path) == {"thermal_zone0 (x86_pkg_temp)": 52.0, "thermal_zone2": 71.5}
    policy = ThermalPolicy(parse_steps("60:8,70:4"), tmp_path)
    assert policy.budget({"a": 59.9}) == math.inf and policy.budget({"a": 60.0, "b": 20.0}) == 8.0
    assert policy.budget(read_zones(tmp_path)) == 4.0


def test_no_thermal_zones_is_one_line(tmp_path):
    with pytest.raises(UserError, match=f"{tmp_path}: no readable thermal_zone"):
        ThermalPolicy(parse_steps("60:8"), tmp_path).apply(object())


def test_serve_checks_the_policy_before_loading():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "iree_glm.serve", "no-such-bundle", "--thermal-policy", "60:4,75:8"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "--thermal-policy: a hotter step must not allow more watts" in r.stderr
