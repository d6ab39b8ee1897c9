"""Property-based robustness (issue #22): hostile-but-realistic mutations of what iree_glm reads
from outside. Every case must end in a `UserError` of one line (the CLI's `error: ...`, exit 2)
or a correct result; never another exception, a signal, or a change to files outside the output.

Categories: config.json, safetensors headers, bundle manifests (read, and loaded + run), device
profiles, command-line numbers. HTTP request bodies are left to the server's owner: add a
category by writing a test that feeds `mutate(...)`d bodies through the handler and calls
`_outcome(CATEGORY, fn)` (HTTP 400 with one line is the analogue of a UserError).

The counts per category (tried / refused in one line / accepted and correct) are printed at the
end with `-s`; docs/robustness.md reports them.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import struct
import tomllib
from collections import Counter
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from iree_glm.errors import UserError  # noqa: E402

from .helpers import write_hf_checkpoint  # noqa: E402

COUNTS: dict[str, Counter] = {}
FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=120,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

HOSTILE = st.one_of(
    st.none(), st.booleans(),
    st.sampled_from([0, -1, 1, 2, 3, 7, 2**31, 2**63, -(2**40)]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 0.0, -0.5, 1e-300, 1e300]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6), st.sampled_from(["", "../x", "/etc/passwd", "\udcff", "64", "nan"]),
    st.lists(st.integers(min_value=-3, max_value=300), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _paths(data, prefix=()):
    yield prefix
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _paths(v, prefix + (i,))


def mutate(draw, data):
    """`data` (JSON-like) with one hostile change: a value replaced, a key deleted or added."""
    data = copy.deepcopy(data)
    paths = [p for p in _paths(data) if p]
    path = draw(st.sampled_from(paths))
    parent = data
    for k in path[:-1]:
        parent = parent[k]
    action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add"]))
    if action == "replace":
        parent[path[-1]] = draw(HOSTILE)
    elif action == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[draw(st.text(min_size=1, max_size=5))] = draw(HOSTILE)
    else:
        parent.append(draw(HOSTILE))
    return data


def _outcome(category: str, fn, check=None):
    """Run `fn`: a one-line UserError counts as refused; a result must pass `check`."""
    counts = COUNTS.setdefault(category, Counter())
    counts["tried"] += 1
    try:
        result = fn()
    except UserError as e:
        assert "\n" not in str(e) and str(e), f"{category}: a UserError of more than one line: {e!r}"
        counts["refused"] += 1
        return None
    if check is not None:
        check(result)
    counts["accepted"] += 1
    return result


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print("\nfuzz cases by category (tried / refused in one line / accepted and correct):")
    for name, c in sorted(COUNTS.items()):
        print(f"  {name:20s} {c['tried']:5d} {c['refused']:5d} {c['accepted']:5d}")
    total = sum(c["tried"] for c in COUNTS.values())
    print(f"  {'total':20s} {total:5d}")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / "ckpt"
    write_hf_checkpoint("glm4_gqa", path, tokenizer=False)
    return path


# -- config.json ---------------------------------------------------------------------------------

def test_fuzz_config_json(ckpt, tmp_path_factory):
    from iree_glm.frontend.hf_config import read_hf_config

    base = json.loads((ckpt / "config.json").read_text())
    folder = tmp_path_factory.mktemp("fuzz-config")

    def valid(cfg):
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim"):
            assert isinstance(getattr(cfg, name), int) and getattr(cfg, name) >= 1, name
        for name in ("rms_norm_eps", "rope_theta", "partial_rotary_factor"):
            assert math.isfinite(getattr(cfg, name)), name
        assert cfg.num_heads % cfg.num_kv_heads == 0 and cfg.rotary_dim > 0

    @FUZZ
    @given(st.data())
    def run(data):
        path = folder / "config.json"
        path.write_text(json.dumps(mutate(data.draw, base)))
        _outcome("config.json", lambda: read_hf_config(path), valid)

    run()


# -- safetensors headers ---------------------------------------------------------------------------

DTYPES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL", "F8_E4M3", "XX"]


def test_fuzz_safetensors_header(ckpt, tmp_path_factory):
    import torch

    from iree_glm.frontend.checkpoint import load_model, open_checkpoint

    folder = tmp_path_factory.mktemp("fuzz-st") / "ckpt"
    shutil.copytree(ckpt, folder)
    raw = (ckpt / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    body = raw[8 + n:]
    names = sorted(k for k in header if k != "__metadata__")
    original = load_model(open_checkpoint(ckpt)).state_dict()

    def correct(model):
        for name, t in model.state_dict().items():
            assert t.dtype == torch.float32 and tuple(t.shape) == tuple(original[name].shape), name

    @FUZZ
    @given(st.data())
    def run(data):
        h = copy.deepcopy(header)
        name = data.draw(st.sampled_from(names))
        kind = data.draw(st.sampled_from(["dtype", "shape", "offsets", "delete", "garbage", "length", "truncate", "any"]))
        length_delta, cut = 0, 0
        if kind == "dtype":
            h[name]["dtype"] = data.draw(st.sampled_from(DTYPES))
        elif kind == "shape":
            h[name]["shape"] = data.draw(st.lists(st.integers(min_value=-1, max_value=300), max_size=3))
        elif kind == "offsets":
            a, b = h[name]["data_offsets"]
            h[name]["data_offsets"] = [a + data.draw(st.integers(-8, 8)), b + data.draw(st.integers(-8, 8))]
        elif kind == "delete":
            del h[name]
        elif kind == "length":
            length_delta = data.draw(st.integers(-16, 16))
        elif kind == "truncate":
            cut = data.draw(st.integers(1, 4096))
        elif kind == "any":
            h = mutate(data.draw, h)
        text = json.dumps(h, separators=(",", ":")).encode()
        if kind == "garbage":
            text = bytes(data.draw(st.binary(min_size=1, max_size=64)))
        blob = struct.pack("<Q", max(0, len(text) + length_delta)) + text + body
        (folder / "model.safetensors").write_bytes(blob[:len(blob) - cut] if cut else blob)
        _outcome("safetensors header", lambda: load_model(open_checkpoint(folder)), correct)

    run()


# -- manifests ------------------------------------------------------------------------------------

def _session_outcome(bundle: Path, expected: list[int]):
    from iree_glm.runtime import Session

    def run():
        return Session.load(bundle).generate([5, 17, 99], max_new_tokens=6).generated_ids

    def correct(ids):  # a manifest edit may change the stop ids: a prefix of the same tokens
        assert ids == expected[:len(ids)], (ids, expected)

    _outcome("manifest (loaded, run)", run, correct)


def test_fuzz_manifest(glm4_bundle, tmp_path_factory):
    from iree_glm.bundle.manifest import read_manifest
    from iree_glm.runtime import Session

    base = json.loads((glm4_bundle / "manifest.json").read_text())
    outside = tmp_path_factory.mktemp("fuzz-outside")
    (outside / "secret.txt").write_text("not yours")
    bundle = outside / "bundle"
    shutil.copytree(glm4_bundle, bundle)
    files_before = {k: v for k, v in _tree(bundle).items() if k != "manifest.json"}
    outside_before = (outside / "secret.txt").read_bytes()
    expected = Session.load(glm4_bundle).generate([5, 17, 99], max_new_tokens=6).generated_ids

    @FUZZ
    @given(st.data())
    def run(data):
        edited = mutate(data.draw, base)
        (bundle / "manifest.json").write_text(json.dumps(edited))
        if _outcome("manifest (read)", lambda: read_manifest(bundle, verify=True)) is not None:
            _session_outcome(bundle, expected)  # every readable one is loaded and run

    run()
    assert {k: v for k, v in _tree(bundle).items() if k != "manifest.json"} == files_before
    assert (outside / "secret.txt").read_bytes() == outside_before


# -- profiles -------------------------------------------------------------------------------------

def test_fuzz_profile():
    from importlib import resources

    from iree_glm.planner.profile import parse_profile

    texts = [(resources.files("iree_glm.planner.profiles") / f"{n}.toml").read_text() for n in ("host-cpu-vulkan", "snapdragon-8-gen3")]
    bases = [tomllib.loads(t) for t in texts]

    def finite(profile):
        for d in profile.devices:
            for name in ("memory_bandwidth_gbs", "memory_gb", "active_power_w", "idle_power_w", "call_overhead_us"):
                assert math.isfinite(getattr(d, name)) and getattr(d, name) >= 0, name
            assert all(math.isfinite(v) and v > 0 for v in d.peak_gflops.values())
        for l in profile.links:
            assert math.isfinite(l.bandwidth_gbs) and l.bandwidth_gbs > 0 and math.isfinite(l.latency_us)

    @FUZZ
    @given(st.data())
    def run(data):
        base = bases[data.draw(st.integers(0, len(bases) - 1))]
        edited = mutate(data.draw, base)
        _outcome("profile", lambda: parse_profile(edited, "fuzz.toml"), finite)

    run()


# -- command-line numbers ---------------------------------------------------------------------------

def test_fuzz_cli_numbers(tmp_path, capsys):
    from iree_glm.cli import run as run_module
    from iree_glm.errors import run_cli

    options = ["--temperature", "--top-p", "--top-k", "--seed", "--max-new-tokens", "--prefix-cache-mb", "--prefill-chunk"]
    values = st.one_of(st.sampled_from(["nan", "inf", "-inf", "-0", "1e999", "0x10", "", " ", "1_000", "NaN"]),
                       st.text(max_size=6).filter(lambda s: not s.startswith("-") or s[1:2].isdigit()),
                       st.floats(allow_nan=True, allow_infinity=True).map(repr))

    @FUZZ
    @given(st.sampled_from(options), values)
    def run(option, value):
        def call():
            code = run_cli(run_module.main, [str(tmp_path / "no-bundle"), "--prompt-ids", "1,2", option, value])
            err = capsys.readouterr().err.strip().splitlines()
            assert code == 2 and len(err) == 1 and err[0].startswith("error: "), (option, value, code, err)
            raise UserError(err[0])  # refused in one line (by the option or, if it was fine, the missing bundle)
        _outcome("command-line numbers", call)

    run()
