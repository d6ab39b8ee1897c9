"""The manifest is typed and checked before anything of it is used: an edited field is one line
naming the key, and a bundle built by this code reads back to the same manifest."""

from __future__ import annotations

import json
import shutil

import pytest

from iree_glm.bundle.manifest import Manifest, read_manifest
from iree_glm.errors import BundleError


def test_manifest_round_trips(glm4_bundle):
    m = read_manifest(glm4_bundle)
    assert Manifest.from_json(m.to_json()) == m
    assert m.entry_points[0].name == "prefill" and m.entry_points[0].seq_len is None
    assert m.options.kv_cache_slots == m.max_context == 128 and m.model.family == "glm4"


@pytest.mark.parametrize("path, value, message", [
    (("max_context",), "4096", "max_context: expected an integer, got '4096'"),
    (("options", "kv_cache_slots"), 1.5, "options.kv_cache_slots: expected an integer, got 1.5"),
    (("options", "prefix_cache_mb"), float("nan"), "options.prefix_cache_mb: expected a finite number, got nan"),
    (("model", "num_heads"), 0, "model.num_heads: 0 is below the minimum 1"),
    (("model", "family"), "bert", "model.family: 'bert' is not one of glm4, glm, llama"),
    (("entry_points",), [{"name": "prefill", "batch": 1, "seq_len": None}], "entry_points[0].capacity: missing"),
    (("options", "attention_kernel", "color"), "red", "options.attention_kernel.color: unknown key"),
    (("options", "plans", 0, "power_w"), -1.0, "options.plans[0].power_w: -1.0 is below the minimum 0.0"),
    (("options", "plans", 0, "prefill_stages"),
     [{"index": 0, "device": "gpu", "parts": ["embed"], "file": "model.vmfb.bak", "device_driver": "vulkan", "stand_in": False,
       "allow_stand_in": False, "cache_layers": []}],
     "options.plans[0].prefill_stages[0].file: 'model.vmfb.bak' is not one of the bundle's modules"),
    (("options", "plans", 0, "decode_module"), "../model.vmfb", "options.plans[0].decode_module: '../model.vmfb' is not one of the bundle's modules"),
])
def test_an_edited_manifest_is_refused_naming_the_key(glm4_bundle, tmp_path, path, value, message):
    out = tmp_path / "b"
    shutil.copytree(glm4_bundle, out)
    data = json.loads((out / "manifest.json").read_text())
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    (out / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError) as e:
        read_manifest(out, verify=False)
    assert message in str(e.value) and "manifest.json" in str(e.value) and "\n" not in str(e.value)


def test_a_bundle_of_another_format_says_to_recompile(glm4_bundle, tmp_path):
    out = tmp_path / "b"
    shutil.copytree(glm4_bundle, out)
    data = json.loads((out / "manifest.json").read_text())
    data["format_version"] = 1
    (out / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="bundle format 1, this runtime reads 3; recompile it"):
        read_manifest(out)
