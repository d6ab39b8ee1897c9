"""Two builds of one checkpoint write the same module, byte for byte: nothing of a build's
temporary folders (the dumped configurations that compiler/exact_rows.py reads) is compiled in."""

import json

from iree_glm.compiler.build import BuildOptions, build_bundle
from iree_glm.transforms.quantize import QuantSpec


def test_two_int8_builds_write_the_same_module(glm4_checkpoint, tmp_path):
    opts = BuildOptions(max_context=16, embeddings=False, quant=QuantSpec("int8"), export_cache=tmp_path / "cache")
    for name in ("a", "b"):
        build_bundle(glm4_checkpoint[0], tmp_path / name, opts)
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    verify = next(ep for ep in manifest["entry_points"] if ep["name"] == "verify")
    assert verify["exact_rows"] > 0  # the build dumped and read the configurations
    a, b = ((tmp_path / name / "model.vmfb").read_bytes() for name in ("a", "b"))
    assert b"/iree_glm-" not in a  # no temporary folder's path (their prefix)
    assert a == b
