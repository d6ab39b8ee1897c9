"""Our transform-dialect tuning spec (passes/tuning/cpu_mmt4d_wide.mlir): a profile names it,
and the compiled prefill matmul carries the tile sizes it sets (and still computes the product)."""

import re

import numpy as np
import pytest

from iree_glm.lowering import host_cpu_target
from iree_glm.profiles import ProfileError, load_profile

from .test_profile_defaults import HOST

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


def _profile(tmp_path, flags: str):
    path = tmp_path / "p.toml"
    path.write_text(HOST.replace('flags = ["@defaults"]', f"flags = {flags}"))
    return load_profile(path)


def _compile(tmp_path, flags, name):
    import iree.compiler as ic

    dump = tmp_path / f"configs-{name}"
    vmfb = ic.compile_str(MATMUL, extra_args=["--iree-hal-target-device=local", "--iree-hal-local-target-device-backends=llvm-cpu",
                                              *flags, f"--iree-hal-dump-executable-configurations-to={dump}"])
    configs = "".join(p.read_text() for p in dump.iterdir())
    return vmfb, re.findall(r"linalg\.mmt4d \{lowering_config = #iree_cpu\.lowering_config<distribution = \[([\d, ]+)\]", configs)


def test_the_spec_sets_the_mmt4d_workgroup_tiles(tmp_path):
    import iree.runtime as rt

    tuned = _profile(tmp_path, '["@defaults", "@tuning-spec:cpu_mmt4d_wide"]').host.target()
    assert any(f.startswith("--iree-codegen-tuning-spec-path=") and f.endswith("cpu_mmt4d_wide.mlir") for f in tuned.flags)
    vmfb, tiles = _compile(tmp_path, tuned.flags, "tuned")
    _, default_tiles = _compile(tmp_path, host_cpu_target().flags, "default")
    assert tiles == ["8, 8, 0, 0, 0, 0"] and default_tiles and default_tiles != tiles
    a, w = np.random.default_rng(0).standard_normal((40, 64), np.float32), np.random.default_rng(1).standard_normal((96, 64), np.float32)
    module = rt.load_vm_flatbuffer(vmfb, driver="local-task")
    np.testing.assert_allclose(module.mm(a, w).to_host(), a @ w.T, rtol=1e-4, atol=1e-4)


def test_unknown_spec_names_the_key(tmp_path):
    with pytest.raises(ProfileError, match=r"devices\[0\]\.flags\[1\]: unknown tuning spec 'nope' \(shipped: cpu_mmt4d_wide\)"):
        _profile(tmp_path, '["@defaults", "@tuning-spec:nope"]')
