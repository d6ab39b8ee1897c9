"""Prefix cache on disk: the background writer (insert does not wait for the disk; flush, close
and exit do), crash safety (a half-written file is never loaded), one file per save, and
truncated, foreign or old-format files refused with a line naming them (issue #19 item 2)."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from iree_glm.runtime import prefix_cache
from iree_glm.runtime.prefix_cache import PrefixCache

L, H, D, BS = 2, 2, 4, 4
BUNDLE = "d" * 64
BLOCK_BYTES = 2 * L * H * BS * D * 4


def _cache(folder: Path, blocks: int = 64) -> PrefixCache:
    return PrefixCache((L, H, D), BUNDLE, block_size=BS, budget_bytes=blocks * BLOCK_BYTES, folder=folder)


def _kv(ids, start: int = 0):
    """Fake caches [L, 1, H, C, D] whose positions 0.. hold ids[start:] (as `insert(start=)` takes)."""
    k = np.zeros((L, 1, H, len(ids) + 4, D), np.float32)
    k[:, 0, :, : len(ids) - start] = np.asarray(ids[start:], np.float32)[None, None, :, None]
    return k, -k


def _index(pc: PrefixCache) -> dict:
    return json.loads((pc.folder / "index.json").read_text())


def _segment_files(pc: PrefixCache) -> list[Path]:
    return sorted((pc.folder / "segments").iterdir())


def _quiet_load(folder: Path, blocks: int = 64) -> PrefixCache:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return _cache(folder, blocks)


@contextmanager
def _held(pc: PrefixCache) -> Iterator[None]:
    """The folder's lock, held as another process saving would: the writer thread waits."""
    fd = os.open(pc.folder / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def test_insert_does_not_wait_for_the_disk_and_flush_does(tmp_path):
    pc = _cache(tmp_path)
    with _held(pc):
        ids = list(range(1, 13))
        assert pc.insert(ids, *_kv(ids)) == 3  # returns although nothing can be written yet
        assert not (pc.folder / "index.json").exists()
    pc.flush()
    assert [e["row"] for e in _index(pc)["blocks"]] == [0, 1, 2]
    again = _quiet_load(tmp_path)
    assert len(again) == 3
    np.testing.assert_array_equal(again.match(ids + [99])[2].kv[0, 0, 0, :, 0], [9, 10, 11, 12])


def test_close_and_interpreter_exit_flush(tmp_path):
    pc = _cache(tmp_path)
    ids = list(range(1, 9))
    pc.insert(ids, *_kv(ids))
    pc.close()
    assert len(_quiet_load(tmp_path)) == 2
    # A process that never calls flush: what it stored is on disk when it exits.
    code = ("import sys, numpy as np; sys.path.insert(0, sys.argv[2]); "
            "from tests.runtime.test_prefix_cache_files import _cache, _kv; from pathlib import Path; "
            "pc = _cache(Path(sys.argv[1])); ids = list(range(1, 25)); pc.insert(ids, *_kv(ids))")
    subprocess.run([sys.executable, "-c", code, str(tmp_path), str(Path(__file__).parents[2])], check=True)
    assert len(_quiet_load(tmp_path)) == 6


def test_a_save_writes_its_new_blocks_as_one_file(tmp_path):
    pc = _cache(tmp_path)
    ids = list(range(1, 21))
    pc.insert(ids, *_kv(ids))
    pc.flush()
    (first,) = _segment_files(pc)
    assert np.load(first, allow_pickle=False).shape == (2, L, H, 5 * BS, D)  # the cache's position axis
    more = ids + list(range(50, 58))  # two more blocks: a second file holds only them
    pc.insert(more, *_kv(more, 20), start=20)
    pc.flush()
    files = _segment_files(pc)
    assert len(files) == 2 and first in files
    index = _index(pc)
    assert {n: s["blocks"] for n, s in index["segments"].items()} == {f.name: np.load(f).shape[3] // BS for f in files}
    assert len(_quiet_load(tmp_path)) == 7


def test_a_restore_copies_a_run_of_a_segment_at_once(tmp_path):
    pc = _cache(tmp_path)
    a = list(range(1, 21))
    with _held(pc):
        pc.insert(a, *_kv(a))
        assert len(pc.parts(pc.match(a + [0]))) == 5  # not written yet: a part per block
    pc.flush()
    more = a + list(range(60, 68))
    pc.insert(more, *_kv(more, 20), start=20)
    pc.flush()
    for cache in (pc, _quiet_load(tmp_path)):  # once written, and as a new process maps it
        blocks = cache.match(more + [0])
        parts = cache.parts(blocks)
        assert [p.shape[3] for p in parts] == [5 * BS, 2 * BS]  # one view per file
        joined = np.concatenate(parts, axis=3)
        np.testing.assert_array_equal(joined, np.concatenate([b.kv for b in blocks], axis=3))
        np.testing.assert_array_equal(joined[0, :, :, :, 0], np.broadcast_to(np.asarray(more, np.float32), (L, H, 28)))


def test_evicted_blocks_do_not_keep_a_mostly_unused_file(tmp_path):
    pc = _cache(tmp_path, blocks=6)
    a = list(range(1, 25))  # 6 blocks: one file
    pc.insert(a, *_kv(a))
    pc.flush()
    b = list(range(100, 116))  # 4 more evict 4 of a's: its file would be 2/6 listed
    pc.insert(b, *_kv(b))
    pc.flush()
    index = _index(pc)
    assert len(index["blocks"]) == 6
    assert sum(s["blocks"] for s in index["segments"].values()) == 6  # a's 2 blocks moved into the new file
    assert {f.name for f in _segment_files(pc)} == set(index["segments"])
    again = _quiet_load(tmp_path, blocks=6)
    assert len(again.match(a)) == 2 and len(again.match(b + [1])) == 4


def _crash_mid_write(folder: Path, ids: list[int]) -> None:
    """A process that dies while writing a segment: half of it in the temp file, no rename."""
    code = f"""
import os, sys, tempfile
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from iree_glm.runtime import prefix_cache
from tests.runtime.test_prefix_cache_files import _cache, _kv

def half_then_die(path, data):
    fd, _ = tempfile.mkstemp(prefix=f".{{path.name}}.", dir=path.parent)
    os.write(fd, data[: len(data) // 2])
    os._exit(9)

prefix_cache._write_atomic = half_then_die
pc = _cache(Path(sys.argv[1]))
ids = {ids!r}
pc.insert(ids, *_kv(ids))
pc.flush()
"""
    r = subprocess.run([sys.executable, "-c", code, str(folder), str(Path(__file__).parents[2])])
    assert r.returncode == 9


def test_a_crash_mid_write_leaves_nothing_a_later_process_loads(tmp_path):
    pc = _cache(tmp_path)
    ids = list(range(1, 9))
    pc.insert(ids, *_kv(ids))
    pc.close()
    before = (pc.folder / "index.json").read_bytes()
    _crash_mid_write(tmp_path, ids + list(range(30, 42)))
    (leftover,) = [f for f in _segment_files(pc) if f.name.startswith(".")]
    assert (pc.folder / "index.json").read_bytes() == before
    again = _quiet_load(tmp_path)  # no warning: the temp file is named by no index
    assert len(again) == 2
    more = ids + [7, 7, 7, 7]
    again.insert(more, *_kv(more, 8), start=8)
    again.flush()
    assert not leftover.exists()  # the next save removes it
    assert len(_quiet_load(tmp_path)) == 3


def _listed_segment(tmp_path: Path) -> tuple[PrefixCache, Path]:
    pc = _cache(tmp_path)
    ids = list(range(1, 13))
    pc.insert(ids, *_kv(ids))
    pc.close()
    (segment,) = _segment_files(pc)
    return pc, segment


def _relist(pc: PrefixCache, segment: Path, data: bytes, blocks: int) -> None:
    """Put `data` in the segment's place and make the index vouch for it (hash and count)."""
    import hashlib

    segment.write_bytes(data)
    index = _index(pc)
    index["segments"][segment.name] = {"sha256": hashlib.sha256(data).hexdigest(), "blocks": blocks}
    (pc.folder / "index.json").write_text(json.dumps(index))


def _refused(tmp_path: Path, match: str) -> None:
    with pytest.warns(UserWarning) as record:
        pc = _cache(tmp_path)
    lines = [str(w.message) for w in record]
    assert len(pc) == 0
    assert any(len(m.splitlines()) == 1 and match in m for m in lines), lines


def test_a_truncated_segment_is_refused_naming_it(tmp_path):
    pc, segment = _listed_segment(tmp_path)
    data = segment.read_bytes()
    segment.write_bytes(data[: len(data) // 2])
    _refused(tmp_path, f"{segment}: sha256 mismatch")
    _relist(pc, segment, data[: len(data) // 2], 3)  # even when the index agrees with it
    _refused(tmp_path, f"{segment}: unreadable")


def test_a_foreign_or_pickled_segment_is_refused_never_unpickled(tmp_path):
    import io

    pc, segment = _listed_segment(tmp_path)
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, L, H, 3 * BS, D + 1), np.float32))  # another model's layout
    _relist(pc, segment, buf.getvalue(), 3)
    _refused(tmp_path, f"{segment}: shape (2, {L}, {H}, {3 * BS}, {D + 1}) float32, expected (2, {L}, {H}, {3 * BS}, {D})")
    buf = io.BytesIO()
    np.save(buf, np.array([{"x": 1}] * 3, dtype=object), allow_pickle=True)
    _relist(pc, segment, buf.getvalue(), 3)
    _refused(tmp_path, f"{segment}: unreadable (Array can't be memory-mapped: Python objects in dtype")


def test_an_old_format_folder_is_named_and_left_alone(tmp_path):
    old = tmp_path / BUNDLE[:16]
    (old / "blocks").mkdir(parents=True)
    (old / "index.json").write_text("[]")
    with pytest.warns(UserWarning, match=f"{old}: a prefix cache in format 1") as record:
        pc = _cache(tmp_path)
    assert len(record) == 1
    assert pc.folder == tmp_path / f"{BUNDLE[:16]}.v{prefix_cache.FORMAT}"
    ids = list(range(1, 9))
    pc.insert(ids, *_kv(ids))
    pc.flush()
    assert (old / "index.json").read_text() == "[]" and len(_quiet_load_new(tmp_path)) == 2


def _quiet_load_new(tmp_path: Path) -> PrefixCache:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the old folder's notice
        return _cache(tmp_path)
