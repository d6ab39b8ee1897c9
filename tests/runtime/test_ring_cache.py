"""Sliding-window KV cache (`--sparse-attention ...,ring`): a bundle keeps the G globals plus a
ring of the last W + B positions, and a conversation runs past the cache size.

The reference is the same model with a cache indexed by position and dense attention under
the pattern's mask (torch); the ring bundle must give its greedy tokens and logits.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iree_glm.frontend import sparse_attention as sa
from iree_glm.compiler.build import BuildOptions, build_bundle
from iree_glm.bundle.manifest import read_manifest
from iree_glm.frontend.checkpoint import load_model, open_checkpoint
from iree_glm.errors import run_cli
from iree_glm.errors import BundleError, RequestError

from ..helpers import run_in_threads

RING = sa.parse_pattern("local=16,global=4,block=8,ring")  # 4 globals + a ring of 24: 28 slots
CONTEXT = 96  # longest conversation; the cache holds 28 positions whatever it is
PROMPT, NEW = 45, 40  # a prompt longer than the ring (not a multiple of B), 85 positions in all


@pytest.fixture(scope="module")
def ring_bundle(glm4_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("ring_bundle") / "glm4-ring"
    build_bundle(glm4_checkpoint[0], out, BuildOptions(max_context=CONTEXT, sparse_attention=RING, decode_batch_sizes=(1, 2)))
    return out


@pytest.fixture(scope="module")
def session(ring_bundle):
    from iree_glm.runtime import Session

    s = Session.load(ring_bundle)
    yield s
    s.close()


def _prompt(seed: int, n: int = PROMPT) -> list[int]:
    return torch.randint(0, 257, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def _reference_logits(checkpoint, ids: list[int]) -> torch.Tensor:
    """Logits at every position of `ids`: cache indexed by position, dense masked attention."""
    model = load_model(open_checkpoint(checkpoint))
    pattern = sa.SparsePattern(RING.local, RING.global_, RING.block)
    sa.enable(model, pattern)
    dense = lambda q, k, v, positions, p: sa.dense_reference(q, k, v, positions, p.local, p.global_, p.block)  # noqa: E731
    k, v = model.empty_cache(1, len(ids))
    original, sa.attend = sa.attend, dense
    try:
        with torch.no_grad():
            return model.all_logits(torch.tensor([ids]), torch.zeros(1, dtype=torch.int64), k, v)[0][0]
    finally:
        sa.attend = original


def test_manifest_and_cache_have_globals_plus_ring(session, ring_bundle):
    m = read_manifest(ring_bundle)
    assert m.options.sparse_attention == "local=16,global=4,block=8,ring=24"
    assert m.options.kv_cache_slots == 28 and m.max_context == CONTEXT
    cache = session.new_cache(2)
    assert [tuple(b.shape) for b in cache.buffers][0] == (2, 2, 28, session.config.head_dim)


def test_greedy_tokens_and_logits_match_dense_cache_reference(session, glm4_checkpoint):
    """Prompt of 45 (> 28 slots) prefilled in chunks, then 40 greedy steps to position 84."""
    ids = _prompt(1)
    cache = session.new_cache()
    steps = [session.run_prefill(ids, 0, cache)]
    tokens = [int(steps[-1].argmax())]
    for i in range(NEW - 1):
        steps.append(session.decode([tokens[-1]], [PROMPT + i], cache)[0])
        tokens.append(int(steps[-1].argmax()))
    ref = _reference_logits(glm4_checkpoint[0], ids + tokens[:-1])[PROMPT - 1 :]
    assert tokens == ref.argmax(-1).tolist()
    np.testing.assert_allclose(np.stack(steps), ref.numpy(), atol=1e-4, rtol=0)
    # The high-level loop gives the same tokens.
    assert session.generate(ids, NEW, stop_ids=()).generated_ids == tokens


def test_batching_engine_serves_the_ring(session):
    """Two concurrent requests share decode_b2 steps over their own rows and match one-at-a-time."""

    from iree_glm.runtime.batching import BatchEngine

    prompts = [_prompt(2, 33), _prompt(3, 50)]
    alone = [session.generate(p, 30, stop_ids=()).generated_ids for p in prompts]
    engine = BatchEngine(session, gather_ms=50)
    got = run_in_threads(lambda i: [e.token_id for e in engine.run(session.new_request(prompts[i], 30, stop_ids=()))], 2)
    engine.close()
    assert got == alone
    assert max(engine.stats.batch_sizes) == 2


def test_context_limit_is_the_conversation_not_the_cache(session):
    result = session.generate(_prompt(4, 80), 50, stop_ids=())
    assert result.stop_reason == "context_full" and len(result.generated_ids) == CONTEXT - 80 + 1
    with pytest.raises(RequestError, match="context holds 96"):
        session.new_request(_prompt(5, CONTEXT), 1)


def test_prefix_cache_is_refused_in_one_line(ring_bundle, tmp_path, capsys):
    from iree_glm.cli.run import main
    from iree_glm.runtime import Session

    with pytest.raises(BundleError, match="prefix cache needs a KV cache indexed by position"):
        Session.load(ring_bundle, prefix_cache=True)
    assert run_cli(main, [str(ring_bundle), "--prompt-ids", "1,2,3", "--prefix-cache-dir", str(tmp_path / "pc")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "sliding window (local=16,global=4,block=8,ring=24)" in err[0]


def test_serve_runs_a_ring_bundle_without_its_default_prefix_cache(ring_bundle):
    """serve's default prefix cache would be refused (above): for a ring bundle it is left off, and said."""
    import re
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "iree_glm.serve", str(ring_bundle), "--port", "0", "--no-verify"],
                            stderr=subprocess.PIPE, text=True)
    try:
        ready = next((line for line in proc.stderr if re.search(r"http://127\.0\.0\.1:\d+", line) or line.startswith("error:")), "")
        assert "no prefix cache, sliding-window KV cache of 28 slots" in ready, ready
    finally:
        proc.terminate()
        proc.wait(10)
