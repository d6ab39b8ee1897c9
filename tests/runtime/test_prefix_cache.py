"""Prefix cache: exact reuse, block alignment, LRU eviction, persistence and bad cache folders."""

import json
import subprocess
import sys

import numpy as np
import pytest

from iree_glm.runtime import Session
from iree_glm.runtime.prefix_cache import PrefixCache

L, H, D, BS = 2, 2, 4, 4


@pytest.fixture(scope="module")
def plain(glm4_bundle):
    return Session.load(glm4_bundle)


def _prompts(n: int, prefix_len: int = 50, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    base = [int(t) for t in rng.integers(0, 256, prefix_len)]
    return [base + [int(t) for t in rng.integers(0, 256, int(rng.integers(1, 20)))] for _ in range(n)]


def _caches(ids, seed=0):
    """Fake [L,1,H,C,D] caches whose value at a position encodes the token there."""
    c = len(ids) + 8
    k = np.zeros((L, 1, H, c, D), np.float32)
    k[:, 0, :, : len(ids)] = np.asarray(ids, np.float32)[None, None, :, None] + seed
    return k, -k


# -- the data structure, without a device ------------------------------------------------------


def test_match_is_block_aligned_and_leaves_a_token_to_prefill():
    pc = PrefixCache((L, H, D), "b" * 64, block_size=BS)
    ids = list(range(10))
    assert pc.insert(ids, *_caches(ids)) == 2  # two full blocks of 4; the last 2 tokens are not stored
    assert len(pc.match(list(range(9)) + [99])) == 2
    assert len(pc.match(list(range(8)))) == 1  # 8 tokens: reusing both blocks would leave nothing to prefill
    assert len(pc.match([0, 1, 2, 7, 4, 5, 6, 7, 8])) == 0
    blocks = pc.match(list(range(12)))
    k, v = np.zeros((L, 1, H, 16, D), np.float32), np.zeros((L, 1, H, 16, D), np.float32)
    pc.fill(blocks, k, v)
    assert np.array_equal(k[0, 0, 0, :8, 0], np.arange(8)) and np.array_equal(v, -k)
    assert pc.insert(ids, *_caches(ids)) == 0  # already there


def test_lru_eviction_keeps_the_budget_and_the_recent_prefixes():
    block_bytes = 2 * L * H * BS * D * 4
    pc = PrefixCache((L, H, D), "b" * 64, block_size=BS, budget_bytes=3 * block_bytes)
    a, b, c = [1] * 8, [2] * 8, [3] * 4 + [5] * 4
    pc.insert(a, *_caches(a))
    pc.insert(b, *_caches(b))
    assert len(pc) == 3 and pc.nbytes <= pc.budget_bytes  # b's second block evicted a's leaf (oldest)
    assert len(pc.match(a + [0])) == 1
    pc.match(b + [0])  # b is now the most recent
    pc.insert(c, *_caches(c))
    assert pc.nbytes <= pc.budget_bytes
    assert len(pc.match(c + [0])) == 2 and len(pc.match(b + [0])) >= 1 and len(pc.match(a + [0])) == 0


def test_insert_takes_only_the_kv_of_the_missing_blocks():
    """A warm prompt reads back only its new blocks' KV: `start` is where they begin."""
    pc = PrefixCache((L, H, D), "b" * 64, block_size=BS)
    ids = list(range(13))
    pc.insert(ids[:8], *_caches(ids[:8]))
    first = pc.first_missing(ids)
    assert first == 8 and pc.missing_blocks(ids) == 1
    k, v = _caches(ids)
    assert pc.insert(ids, k[:, :, :, first:], v[:, :, :, first:], start=first) == 1
    got = np.zeros((L, 1, H, 16, D), np.float32)
    pc.fill(pc.match(ids), got, np.zeros_like(got))
    assert np.array_equal(got[0, 0, 0, :12, 0], np.arange(12))
    assert pc.first_missing(ids) is None
    # A block before `start` gone meanwhile: its KV was not given, so nothing past it is stored.
    fresh = PrefixCache((L, H, D), "b" * 64, block_size=BS)
    assert fresh.insert(ids, k[:, :, :, 8:], v[:, :, :, 8:], start=8) == 0 and len(fresh) == 0


# -- through the session -----------------------------------------------------------------------


def test_greedy_output_is_identical_with_and_without_the_cache(plain, glm4_bundle):
    cached = Session.load(glm4_bundle, prefix_cache=True)
    for i, p in enumerate(_prompts(5)):
        a = plain.generate(p, 24, stop_ids=())
        b = cached.generate(p, 24, stop_ids=())
        assert a.generated_ids == b.generated_ids
        assert b.cached_tokens == (0 if i == 0 else 48)  # 50-token shared prefix, blocks of 16
    assert cached.prefix_cache.stats.hits == 4


def test_warm_prefill_logits_match_cold(plain, glm4_bundle):
    cached = Session.load(glm4_bundle, prefix_cache=True)
    p = _prompts(1, prefix_len=70, seed=3)[0]
    cold = plain.prefill(plain.new_request(p), plain.new_cache())
    cached.prefill(cached.new_request(p), cached.new_cache())
    state = cached.new_request(p)
    warm = cached.prefill(state, cached.new_cache())
    assert state.cached_tokens == (len(p) - 1) // 16 * 16 >= 64
    np.testing.assert_allclose(warm, cold, atol=1e-5)


def test_cache_persists_across_sessions(plain, glm4_bundle, tmp_path):
    prompts = _prompts(2, seed=1)
    first = Session.load(glm4_bundle, prefix_cache_dir=tmp_path)
    assert first.generate(prompts[0], 8).cached_tokens == 0
    first.close()  # waits for the writer thread
    second = Session.load(glm4_bundle, prefix_cache_dir=tmp_path)
    assert len(second.prefix_cache) == len(first.prefix_cache) > 0
    r = second.generate(prompts[1], 16, stop_ids=())
    assert r.cached_tokens == 48
    assert r.generated_ids == plain.generate(prompts[1], 16, stop_ids=()).generated_ids
    assert not any(p.suffix == ".pkl" for p in tmp_path.rglob("*"))


def _persist(bundle, folder, prompt):
    s = Session.load(bundle, prefix_cache_dir=folder)
    s.generate(prompt, 4)
    s.close()


def _only_folder(root):
    (folder,) = [p for p in root.iterdir() if p.is_dir()]
    return folder


def test_foreign_cache_folder_is_ignored_with_a_warning(plain, glm4_bundle, tmp_path):
    p = _prompts(2, seed=2)
    _persist(glm4_bundle, tmp_path, p[0])
    meta = _only_folder(tmp_path) / "meta.json"
    m = json.loads(meta.read_text())
    m["bundle"] = "0" * 64  # as if written for another model or build
    meta.write_text(json.dumps(m))
    with pytest.warns(UserWarning, match="another bundle"):
        s = Session.load(glm4_bundle, prefix_cache_dir=tmp_path)
    r = s.generate(p[1], 12, stop_ids=())
    assert r.cached_tokens == 0
    assert r.generated_ids == plain.generate(p[1], 12, stop_ids=()).generated_ids
    # A cache made for another bundle lives in another subfolder and is never read.
    other = PrefixCache((L, H, D), "f" * 64, folder=tmp_path)
    assert len(other) == 0


def test_corrupt_blocks_and_index_are_ignored_with_a_warning(plain, glm4_bundle, tmp_path):
    p = _prompts(2, seed=4)
    _persist(glm4_bundle, tmp_path, p[0])
    folder = _only_folder(tmp_path)
    (segment,) = (folder / "segments").iterdir()  # the prompt's blocks, in one file
    data = bytearray(segment.read_bytes())
    data[-5] ^= 0xFF  # flip bits in the data: the header still parses
    segment.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=f"corrupt prefix-cache block .*{segment.name}: sha256 mismatch"):
        s = Session.load(glm4_bundle, prefix_cache_dir=tmp_path)
    assert len(s.prefix_cache) == 0
    r = s.generate(p[1], 12, stop_ids=())
    assert r.generated_ids == plain.generate(p[1], 12, stop_ids=()).generated_ids
    (folder / "index.json").write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable"):
        s = Session.load(glm4_bundle, prefix_cache_dir=tmp_path)
    assert len(s.prefix_cache) == 0
    assert s.generate(p[1], 12, stop_ids=()).generated_ids == r.generated_ids


def test_cache_dir_that_is_a_file_is_ignored_with_a_warning(glm4_bundle, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.warns(UserWarning, match="cannot be used"):
        s = Session.load(glm4_bundle, prefix_cache_dir=f)
    assert s.prefix_cache.folder is None and s.generate([1, 2, 3], 2).stop_reason == "max_new_tokens"


def test_run_cli_reuses_the_cache_across_processes(glm4_bundle, tmp_path):
    ids = ",".join(str(i % 250 + 1) for i in range(40))
    cmd = [sys.executable, "-m", "iree_glm.run", str(glm4_bundle), "--prompt-ids", ids, "--json",
           "--max-new-tokens", "6", "--prefix-cache-dir", str(tmp_path / "pc"), "--no-verify"]
    runs = [json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout) for _ in range(2)]
    assert runs[0]["cached_tokens"] == 0 and runs[1]["cached_tokens"] == 32
    assert runs[0]["generated_ids"] == runs[1]["generated_ids"]


def test_stop_strings_cut_the_text(plain):
    full = plain.generate("Hello there", 30, stop_ids=())
    cut_at = next(full.text[i : i + 2] for i in range(3, len(full.text)) if full.text[i : i + 2].isprintable() and "\ufffd" not in full.text[i : i + 2])
    r = plain.generate("Hello there", 30, stop_ids=(), stop=(cut_at,))
    assert r.stop_reason == "stop"
    assert r.text == full.text[: full.text.find(cut_at)]
