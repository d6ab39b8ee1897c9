"""A bundle whose code this CPU cannot run is refused in one line when it loads, never SIGILL."""

from __future__ import annotations

import json
import shutil

import pytest

from iree_glm.bundle import cpu_features
from iree_glm.bundle.manifest import read_manifest
from iree_glm.errors import BundleError
from iree_glm.runtime import Session


def test_a_host_bundle_records_its_target_cpu(glm4_bundle):
    target = read_manifest(glm4_bundle).options.target_cpu
    assert target.arch == cpu_features.host_arch() and target.cpu == "host"
    assert not cpu_features.missing_features(target.features)  # this machine built it: it runs it
    if "avx2" in cpu_features.host_features():
        assert "avx2" in target.features


def test_a_missing_feature_is_named(glm4_bundle, monkeypatch):
    needed = read_manifest(glm4_bundle).options.target_cpu.features
    if not needed:
        pytest.skip("the host bundle uses no instruction-set extension")
    dropped = needed[-1]
    real = cpu_features.host_features()
    monkeypatch.setattr(cpu_features, "host_features", lambda: real - {dropped})
    with pytest.raises(BundleError) as e:
        Session.load(glm4_bundle)
    assert f"uses {dropped}: this CPU lacks it" in str(e.value) and "\n" not in str(e.value)


def test_another_architecture_is_refused(glm4_bundle, tmp_path):
    out = tmp_path / "b"
    shutil.copytree(glm4_bundle, out)
    data = json.loads((out / "manifest.json").read_text())
    data["options"]["target_cpu"] = {"arch": "aarch64", "cpu": "cortex-a76", "features": ["neon", "dotprod"]}
    (out / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"compiled for aarch64 \(cortex-a76\); this machine is x86_64$"):
        Session.load(out, verify=False)


def test_a_host_bundle_on_an_avx512_cpu_says_so(glm4_bundle):
    """IREE's own code compiled for `host` on an AVX-512 machine uses AVX-512: the manifest's
    target features must say so, or a copy of the bundle would die of SIGILL elsewhere."""
    have = cpu_features.host_features()
    wanted = {"avx512f", "avx512bw", "avx512vl", "avx512vnni", "avx512bf16"} & have
    if "avx512f" not in have:
        pytest.skip("this CPU has no AVX-512")
    assert wanted <= set(read_manifest(glm4_bundle).options.target_cpu.features)


def test_an_avx512_bundle_on_an_avx2_cpu_names_what_is_missing(glm4_bundle, tmp_path, monkeypatch):
    """A bundle built for an AVX-512 VNNI CPU (IREE's code for znver4 and our x86_64_avx512
    kernels) loaded on a CPU with AVX2 only stops in one line naming the missing features."""
    out = tmp_path / "b"
    shutil.copytree(glm4_bundle, out)
    data = json.loads((out / "manifest.json").read_text())
    data["options"]["target_cpu"] = {"arch": cpu_features.host_arch(), "cpu": "znver4", "features": ["avx2", "f16c", "fma"]}
    data["options"]["int8_kernel"] = {"kernel": "avx512", "kernel_set": "x86_64_avx512", "decode": "matvec", "prefill": "matmul",
                                      "features": ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512vnni"]}
    (out / "manifest.json").write_text(json.dumps(data))
    monkeypatch.setattr(cpu_features, "host_features", lambda: frozenset({"avx", "avx2", "fma", "f16c", "bmi2"}))
    with pytest.raises(BundleError) as e:
        Session.load(out, verify=False)
    message = str(e.value)
    assert "compiled for znver4, whose code uses avx512f, avx512bw, avx512vl, avx512vnni: this CPU lacks them" in message
    assert "\n" not in message


def test_amx_permission_is_granted_on_an_amx_cpu():
    """Linux grants the tile state to a process on a CPU with AMX (the kernels would die of
    SIGILL without it); elsewhere request_amx says why not in one line."""
    reason = cpu_features.request_amx()
    if {"amx-tile", "amx-int8"} <= cpu_features.host_features():
        assert reason is None
    else:
        assert reason and "\n" not in reason


def test_a_refused_amx_permission_is_one_line(glm4_bundle, tmp_path, monkeypatch):
    """A bundle whose int8 kernels use AMX tiles, in a process Linux refuses the tile state,
    stops in one line before any tile instruction runs."""
    from iree_glm.kernels import toolchain
    from iree_glm.runtime import devices

    out = tmp_path / "b"
    shutil.copytree(glm4_bundle, out)
    data = json.loads((out / "manifest.json").read_text())
    amx = toolchain.X86_64_AMX
    data["options"]["target_cpu"] = {"arch": cpu_features.host_arch(), "cpu": "sapphirerapids", "features": list(amx.features)}
    data["options"]["int8_kernel"] = {"kernel": amx.short, "kernel_set": amx.name, "decode": "matvec", "prefill": "matmul",
                                      "features": list(amx.features)}
    (out / "manifest.json").write_text(json.dumps(data))
    monkeypatch.setattr(cpu_features, "host_features", lambda: frozenset(amx.features))
    monkeypatch.setattr(devices, "request_amx", lambda: "Linux refused the AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM: Invalid argument)")
    with pytest.raises(BundleError) as e:
        Session.load(out, verify=False)
    assert str(e.value).endswith("its kernels use AMX tiles, but Linux refused the AMX tile state "
                                 "(arch_prctl ARCH_REQ_XCOMP_PERM: Invalid argument)")
    assert "\n" not in str(e.value)
