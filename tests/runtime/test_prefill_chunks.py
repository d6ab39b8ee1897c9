"""Chunked prefill: a prompt prefilled in several calls (each extending the cached prefix)
gives the logits and greedy tokens of one call over the whole prompt."""

import json
import subprocess
import sys

import numpy as np
import pytest

from iree_glm.errors import run_cli
from iree_glm.cli.run import main as run_main
from iree_glm.runtime import Session
from iree_glm.runtime.session import chunks

PROMPT = [(i * 37) % 200 + 3 for i in range(70)]


@pytest.fixture(scope="module")
def whole(glm4_bundle):
    return Session.load(glm4_bundle, prefill_chunk=0)


def test_chunks_cover_the_prompt_in_order():
    assert chunks(70, 32) == [(0, 32), (32, 64), (64, 70)]
    assert chunks(70, 0) == [(0, 70)] and chunks(70, 100) == [(0, 70)] and chunks(3, 1) == [(0, 1), (1, 2), (2, 3)]


@pytest.mark.parametrize("chunk", [1, 16, 32, 50])
def test_chunked_prefill_matches_one_call(glm4_bundle, whole, chunk):
    chunked = Session.load(glm4_bundle, verify=False, prefill_chunk=chunk)
    calls = []
    call = chunked._prefill_call
    chunked._prefill_call = lambda ids, start, cache, slot: calls.append((start, len(ids))) or call(ids, start, cache, slot)
    want = whole.run_prefill(PROMPT, 0, whole.new_cache())
    got = chunked.run_prefill(PROMPT, 0, chunked.new_cache())
    assert calls == [(a, b - a) for a, b in chunks(len(PROMPT), chunk)]  # really chunked
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert whole.generate(PROMPT, 12, stop_ids=()).generated_ids == chunked.generate(PROMPT, 12, stop_ids=()).generated_ids


def test_chunks_after_a_cached_prefix(glm4_bundle, whole):
    """With the prefix cache, the part after the cached prefix is chunked too: same tokens."""
    cached = Session.load(glm4_bundle, verify=False, prefix_cache=True, prefill_chunk=24)
    first = cached.generate(PROMPT, 8, stop_ids=())
    again = cached.generate(PROMPT[:-3] + [5, 6, 7], 8, stop_ids=())
    assert again.cached_tokens > 0
    assert first.generated_ids == whole.generate(PROMPT, 8, stop_ids=()).generated_ids
    assert again.generated_ids == whole.generate(PROMPT[:-3] + [5, 6, 7], 8, stop_ids=()).generated_ids


def test_run_cli_prefill_chunk(glm4_bundle, capsys):
    ids = ",".join(map(str, PROMPT))
    assert run_cli(run_main, [str(glm4_bundle), "--prompt-ids", ids, "--max-new-tokens", "6", "--json", "--prefill-chunk", "16"]) == 0
    chunked = json.loads(capsys.readouterr().out)["generated_ids"]
    assert run_cli(run_main, [str(glm4_bundle), "--prompt-ids", ids, "--max-new-tokens", "6", "--json", "--prefill-chunk", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["generated_ids"] == chunked
    assert run_cli(run_main, [str(glm4_bundle), "--prompt-ids", ids, "--prefill-chunk", "-4"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: --prefill-chunk: -4 is below the minimum 0"


def test_profile_show_names_the_chunk(tmp_path):
    from ..planner.test_profile_defaults import _write

    path = _write(tmp_path, "prefill_chunk = 128")
    show = subprocess.run([sys.executable, "-m", "iree_glm.profile", "show", str(path)], capture_output=True, text=True)
    assert show.returncode == 0, show.stderr
    assert "prefill chunk 128" in show.stdout
