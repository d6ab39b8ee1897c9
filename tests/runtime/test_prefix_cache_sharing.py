"""Two processes sharing a prefix-cache folder: no orphaned files, no false "corrupt block"
warnings, and a corrupt meta.json does not disable the folder for good (issue #22 item 8)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from iree_glm.runtime.prefix_cache import PrefixCache

ROOT = Path(__file__).resolve().parents[2]
L, H, D, BS = 2, 2, 4, 4
BUNDLE = "c" * 64
BUDGET_BLOCKS = 12


def _cache(folder: Path) -> PrefixCache:
    return PrefixCache((L, H, D), BUNDLE, block_size=BS, budget_bytes=BUDGET_BLOCKS * 2 * L * H * BS * D * 4, folder=folder)


def _kv(ids):
    k = np.zeros((L, 1, H, len(ids) + 4, D), np.float32)
    k[:, 0, :, : len(ids)] = np.asarray(ids, np.float32)[None, None, :, None]
    return k, -k


def _worker(folder: str, seed: int, rounds: int) -> None:
    """One process's rounds: each opens the folder as a new process would, stores four prompts
    that share a prefix, and closes (which waits for the background writer)."""
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning (a "corrupt" block) fails the worker
        for _ in range(rounds):
            pc = _cache(Path(folder))  # a new process's view: loads what the other wrote
            shared = [1, 2, 3, 4, 5, 6, 7, 8]  # both store this prefix
            for _ in range(4):
                ids = shared + [int(t) for t in rng.integers(0, 50, int(rng.integers(4, 17)))]
                pc.insert(ids, *_kv(ids))
            pc.close()
            assert pc.folder is not None


def _start_worker(folder: Path, seed: int, rounds: int) -> subprocess.Popen:
    """A fresh interpreter, not a fork: a fork of a test worker that has threads (IREE's task
    pool, an earlier cache's writer) can inherit a held lock and hang."""
    code = f"from tests.runtime.test_prefix_cache_sharing import _worker; _worker({str(folder)!r}, {seed}, {rounds})"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _listed_and_present(folder: Path) -> tuple[set[str], set[str], set[str]]:
    """The blocks listed, the segment files they name, the files present."""
    sub = next(p for p in folder.iterdir() if p.is_dir())
    index = json.loads((sub / "index.json").read_text())
    listed = {e["key"] for e in index["blocks"]}
    named = {e["segment"] for e in index["blocks"]}
    assert named == set(index["segments"])
    return listed, named, {p.name for p in (sub / "segments").iterdir()}


def test_two_processes_share_a_folder_without_orphans_or_false_warnings(tmp_path):
    procs = [_start_worker(tmp_path, seed, 15) for seed in (1, 2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    listed, named, present = _listed_and_present(tmp_path)
    assert present == named  # no orphaned or half-written file, none missing
    assert 0 < len(listed) <= BUDGET_BLOCKS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pc = _cache(tmp_path)
    assert len(pc) == len(listed)  # every listed block loads (hash and shape checked)


def test_a_corrupt_meta_json_is_rewritten_not_fatal(tmp_path):
    ids = list(range(1, 13))
    pc = _cache(tmp_path)
    pc.insert(ids, *_kv(ids))
    pc.flush()
    meta = next(p for p in tmp_path.iterdir() if p.is_dir()) / "meta.json"
    meta.write_bytes(b"{\x00garbage")
    with pytest.warns(UserWarning, match="meta.json: unreadable"):
        pc = _cache(tmp_path)
    assert pc.folder is not None and len(pc) == 3  # still used, and the checked blocks still load
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(_cache(tmp_path)) == 3  # repaired: no warning the next time


def test_a_crashed_writers_leftovers_are_removed_on_the_next_save(tmp_path):
    ids = list(range(1, 9))
    pc = _cache(tmp_path)
    pc.insert(ids, *_kv(ids))
    pc.flush()
    segments = pc.folder / "segments"
    (segments / ".deadbeef.npy.tmp123").write_bytes(b"half")
    (segments / ("0" * 32 + ".npy")).write_bytes(b"orphan")
    more = ids + [20, 21, 22, 23]
    pc.insert(more, *_kv(more))
    pc.flush()
    listed, named, present = _listed_and_present(tmp_path)
    assert present == named and len(named) == 2 and len(listed) == 3  # a segment per save
