"""Our transform-dialect tuning spec (passes/tuning/cpu_mmt4d_wide.mlir): a profile names it,
the compiled prefill matmul carries the workgroup tiles it sets with the target's own inner tile
(or keeps IREE's configuration where the spec does not know the target's tile), and the product
stays right. Checked for several x86-64 CPU kinds on any build machine: a tile mismatch is a
compile-time difference, visible without running the code."""

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from iree_glm.compiler.target import host_cpu_target
from iree_glm.planner.profile import ProfileError, load_profile

from ..helpers import HOST
from iree_glm.compiler.target import device_target

MATMUL = """
func.func @mm(%a: tensor<?x64xf32>, %w: tensor<96x64xf32>) -> tensor<?x96xf32> {
  %c0 = arith.constant 0 : index
  %m = tensor.dim %a, %c0 : tensor<?x64xf32>
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty(%m) : tensor<?x96xf32>
  %f = linalg.fill ins(%zero : f32) outs(%e : tensor<?x96xf32>) -> tensor<?x96xf32>
  %r = linalg.matmul indexing_maps = [affine_map<(m, n, k) -> (m, k)>, affine_map<(m, n, k) -> (n, k)>, affine_map<(m, n, k) -> (m, n)>] ins(%a, %w : tensor<?x64xf32>, tensor<96x64xf32>) outs(%f : tensor<?x96xf32>) -> tensor<?x96xf32>
  return %r : tensor<?x96xf32>
}
"""
CONFIG = re.compile(r"linalg\.mmt4d \{lowering_config = #iree_cpu\.lowering_config<distribution = \[([\d, ]+)\], "
                    r"vector_common_parallel = \[([\d, ]+)\]")
# LLVM CPU name -> (the /proc/cpuinfo flag needed to run its code, the mmt4d inner tile IREE picks for f32).
CPUS = {"haswell": ("avx2", (8, 8)), "skylake-avx512": ("avx512f", (16, 16)), "x86-64": ("sse2", (8, 4))}
SPEC_TILES = {(8, 8), (16, 16)}


def _profile(tmp_path, flags: str):
    path = tmp_path / "p.toml"
    path.write_text(HOST.replace('flags = ["@defaults"]', f"flags = {flags}"))
    return load_profile(path)


COMPILE_SECONDS = 300  # a matmul compiles in seconds; once, under heavy load, iree-compile sat idle for minutes


def _compile(tmp_path: Path, flags, name):
    """iree-compile as a child process with a deadline, tried twice (a stuck compiler fails the
    test instead of hanging the suite)."""
    from iree.compiler.tools.binaries import find_tool

    source, vmfb, dump = tmp_path / f"{name}.mlir", tmp_path / f"{name}.vmfb", tmp_path / f"configs-{name}"
    source.write_text(MATMUL)
    cmd = [find_tool("iree-compile"), str(source), "-o", str(vmfb), "--iree-hal-target-device=local",
           "--iree-hal-local-target-device-backends=llvm-cpu", *flags, f"--iree-hal-dump-executable-configurations-to={dump}"]
    for attempt in (1, 2):
        shutil.rmtree(dump, ignore_errors=True)
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=COMPILE_SECONDS)
            break
        except subprocess.TimeoutExpired:
            if attempt == 2:
                raise
    configs = "".join(p.read_text() for p in dump.iterdir())
    return vmfb.read_bytes(), CONFIG.findall(configs)


def _host_flags() -> set[str]:
    line = next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags"))
    return set(line.split(":", 1)[1].split())


def _for_cpu(flags, cpu: str):
    return [f for f in flags if not f.startswith("--iree-llvmcpu-target-cpu=")] + [f"--iree-llvmcpu-target-cpu={cpu}"]


@pytest.mark.parametrize("cpu", ["host", *sorted(CPUS)])
def test_the_spec_follows_the_targets_inner_tile(tmp_path, cpu):
    """Compiled for `cpu` (run too where this machine can run its code)."""
    import iree.runtime as rt

    tuned = device_target(_profile(tmp_path, '["@defaults", "@tuning-spec:cpu_mmt4d_wide"]').host)
    assert any(f.startswith("--iree-codegen-tuning-spec-path=") and f.endswith("cpu_mmt4d_wide.mlir") for f in tuned.flags)
    flags, default_flags = tuned.flags, host_cpu_target().flags
    if cpu != "host":
        flags, default_flags = _for_cpu(flags, cpu), _for_cpu(default_flags, cpu)
    vmfb, tiles = _compile(tmp_path, flags, "tuned")
    _, default_tiles = _compile(tmp_path, default_flags, "default")
    assert len(tiles) == 1 and len(default_tiles) == 1
    (distribution, vector), (default_distribution, default_vector) = tiles[0], default_tiles[0]
    # The vector tile is always the target's inner tile, whoever configured the op.
    assert vector == default_vector
    inner = tuple(int(v) for v in vector.split(", ")[3:5])
    if cpu != "host":
        assert inner == CPUS[cpu][1]
    if inner in SPEC_TILES:
        assert distribution == "8, 8, 0, 0, 0, 0" != default_distribution
    else:  # a tile the spec was not written for: IREE's own configuration stays
        assert distribution == default_distribution
    if cpu == "host" or CPUS[cpu][0] in _host_flags():
        a, w = np.random.default_rng(0).standard_normal((40, 64), np.float32), np.random.default_rng(1).standard_normal((96, 64), np.float32)
        module = rt.load_vm_flatbuffer(vmfb, driver="local-task")
        np.testing.assert_allclose(module.mm(a, w).to_host(), a @ w.T, rtol=1e-4, atol=1e-4)


def test_unknown_spec_names_the_key(tmp_path):
    with pytest.raises(ProfileError, match=r"devices\[0\]\.flags\[1\]: unknown tuning spec 'nope' \(shipped: cpu_mmt4d_wide\)"):
        _profile(tmp_path, '["@defaults", "@tuning-spec:nope"]')
