"""The runtime trusts no manifest number the compiled code depends on: an edited manifest is
refused at load in one line (issue #22 item 4: a raised max_context aborted the process)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from iree_glm.bundle.signature import parse_signature
from iree_glm.errors import BundleError
from iree_glm.runtime.session import Session


def _edited(bundle: Path, folder: Path, edit) -> Path:
    out = folder / "edited"
    shutil.copytree(bundle, out)
    data = json.loads((out / "manifest.json").read_text())
    edit(data)
    (out / "manifest.json").write_text(json.dumps(data))
    return out


def _context(d, n=4096):
    d["max_context"] = n
    d["options"]["max_context"] = n


def _slots(d, n=4096):
    _context(d, n)
    d["options"]["kv_cache_slots"] = n
    for ep in d["entry_points"]:
        ep["capacity"] = n


EDITS = {
    "max_context": (_context, "max_context 4096 exceeds the 128 KV positions"),
    "kv_cache_slots": (_slots, "compiled for 128 KV positions per row"),
    "vocab_size": (lambda d: d["model"].update(vocab_size=100000), "model.vocab_size is 100000"),
    "num_kv_heads": (lambda d: d["model"].update(num_kv_heads=4), "model.num_kv_heads 4"),
    "num_layers": (lambda d: d["model"].update(num_layers=3), "model.num_layers says 3"),
    "decode_batch": (lambda d: d["entry_points"][1].update(batch=2), "entry point 'decode' says batch 2"),
    "activation_dtype": (lambda d: d["options"].update(activation_dtype="f16"), "activation_dtype is f16"),
    "unknown_entry": (lambda d: d["entry_points"].append(dict(d["entry_points"][1], name="decode_b8", batch=8)),
                      "lists function 'decode_b8'"),
}


@pytest.mark.parametrize("field", sorted(EDITS))
def test_an_edited_manifest_is_refused_at_load(glm4_bundle, tmp_path, field):
    edit, expected = EDITS[field]
    bundle = _edited(glm4_bundle, tmp_path, edit)
    with pytest.raises(BundleError) as info:
        Session.load(bundle)
    message = str(info.value)
    assert expected in message and "\n" not in message and "recompile" in message


def test_the_reproduction_exits_2_instead_of_aborting(glm4_bundle, tmp_path):
    """Raise max_context, send a prompt longer than the compiled cache: one line, exit 2, no signal."""
    bundle = _edited(glm4_bundle, tmp_path, _context)
    ids = ",".join(str(i % 200 + 1) for i in range(600))
    r = subprocess.run([sys.executable, "-m", "iree_glm.run", str(bundle), "--prompt-ids", ids, "--max-new-tokens", "4"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "max_context 4096" in lines[0]


def test_the_unedited_bundle_loads_and_its_signature_is_the_modules(glm4_bundle):
    session = Session.load(glm4_bundle)
    assert session.generate([5, 17, 99], 3).generated_ids  # loads and runs


def test_signature_parsing():
    sig = parse_signature("(!torch.vtensor<[1,?],si64>, !torch.vtensor<[?,2,128,24],bf16>) -> !torch.vtensor<[1,257],f32>")
    assert sig.args[0].dims == (1, None) and sig.args[1].dims == (None, 2, 128, 24) and sig.args[1].dtype == "bf16"
    assert sig.results[0].dims == (1, 257)
    assert parse_signature("not a signature") is None


@pytest.mark.parametrize("index, name", [(0, "prefill"), (1, "decode")])
def test_a_manifest_without_an_entry_point_the_runtime_calls_is_refused(glm4_bundle, tmp_path, index, name):
    bundle = _edited(glm4_bundle, tmp_path, lambda d: d["entry_points"].pop(index))
    with pytest.raises(BundleError, match=f"entry_points: no '{name}' entry point"):
        Session.load(bundle)
