"""Reusing the KV cache of prompt prefixes seen before (prefix caching).

Phone assistants resend the same system prompt and history on every turn. The KV entries
of a prefix depend only on the prefix's tokens (attention is causal and each position's
rotary angle is fixed), so they can be stored once and put back in front of a new prompt:
`prefill` then runs on the new suffix only, at `start = len(prefix)`.

Storage is paged: KV is cut into blocks of `block_size` tokens, kept on the host as numpy
arrays `[2 (k|v), layers, kv_heads, block_size, head_dim]`. Blocks form a tree keyed by their
tokens (a radix tree whose edges are whole blocks): the path from the root spells a
block-aligned token prefix, so a lookup walks the prompt block by block. Least recently
used leaves are evicted to stay under a byte budget.

With a folder, the blocks are also persisted, in segments: each save writes the blocks it has
not written yet as one `.npy` file (no pickle) `[2, L, Hkv, n * block, D]`, named by its
sha256: a restored prefix is a few files to map, not one per 16 tokens, and since a segment
keeps the cache's position axis, a run of its blocks is one array view (`parts`), so putting a
prefix back costs a copy per layer and segment, not per block. `index.json` lists
the tree (each block: its segment and row there) and each segment's sha256 and block count. The
folder is a subfolder named after the bundle's hash and the format, and `meta.json` repeats the
hash and the block layout, so a cache made by another model, build or format is never read. A
corrupt or foreign segment is refused with one warning naming it (its blocks are skipped); a
corrupt `meta.json` is rewritten (the segments are checked by hash and shape anyway), so it does
not disable the folder for good. Segments are memory-mapped at load (`np.load(mmap_mode="r")`):
writes replace files by rename, never in place, so a mapping stays valid.

Writing is off the request's path: `insert` marks the cache dirty and a writer thread saves
(temp file + rename, so a crash mid-write leaves a stray temp file no index names, never a
listed half-written segment); `flush` (and `close`, and interpreter exit) waits for it.

Several processes may share a folder. Each keeps its own tree in memory; the folder is guarded
by an advisory lock (`lock`, `flock`): loading holds it shared, saving exclusive. A save merges
the index on disk with its own tree (blocks other processes stored stay listed, up to the byte
budget, parents before children), rewrites any of its blocks whose segment another process
deleted, rewrites its blocks out of segments that are less than half listed (evicted blocks
keep no more than as many bytes on disk as the listed ones), and deletes every file no entry
names, so a crashed or concurrent writer leaves no orphans and a reader never meets a listed
block whose file is gone.
"""

from __future__ import annotations

from iree_glm.bundle.kv_layout import DEFAULT_BLOCK_SIZE, DEFAULT_BUDGET_BYTES

import atexit
import fcntl
import hashlib
import io
import json
import os
import tempfile
import threading
import warnings
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

FORMAT = 2  # 1: one file per block (blocks/<key>.npy), in the subfolder without a suffix


def budget_bytes(explicit: int | None, manifest) -> int:
    """The prefix cache's byte budget: an explicit one wins, else the `prefix_cache_mb` of the
    profile the bundle was compiled for (recorded in its manifest), else 512 MiB."""
    if explicit is not None:
        return int(explicit)
    mb = manifest.options.prefix_cache_mb
    return int(mb * 2**20) if mb is not None else DEFAULT_BUDGET_BYTES


def bundle_hash(files: dict[str, str]) -> str:
    """One digest for a bundle: the sha256 of its manifest's file-hash table."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def _prefix_key(parent_key: str, tokens: tuple[int, ...]) -> str:
    """A block's name: a hash chained over every token from the start of the sequence."""
    return hashlib.sha256(f"{parent_key}:{','.join(map(str, tokens))}".encode()).hexdigest()[:32]


@dataclass(eq=False)
class _Block:
    key: str
    tokens: tuple[int, ...]
    kv: np.ndarray | None  # [2, L, Hkv, block, D]; None only for the root
    parent: "_Block | None"
    children: dict[tuple[int, ...], "_Block"] = field(default_factory=dict)
    last_used: int = 0
    segment: str = ""  # the file on disk holding it ("": not written yet)
    row: int = 0  # its index in that file
    # (a segment's array, row) whose block `kv` equals: `parts` joins runs of rows into one view.
    # One attribute, replaced whole, so that the writer thread can set it while a request reads it.
    view: tuple[np.ndarray, int] | None = None


@dataclass
class PrefixCacheStats:
    lookups: int = 0
    hits: int = 0
    reused_tokens: int = 0
    stored_blocks: int = 0
    evicted_blocks: int = 0


class PrefixCache:
    """Host-side store of KV blocks for token prefixes, with LRU eviction and optional persistence."""

    def __init__(
        self,
        block_shape: tuple[int, int, int],  # (layers, kv_heads, head_dim)
        bundle_id: str,
        block_size: int = DEFAULT_BLOCK_SIZE,
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
        folder: Path | None = None,
    ):
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1 (got {block_size})")
        layers, kv_heads, head_dim = block_shape
        self.block_size = block_size
        self.kv_shape = (2, layers, kv_heads, block_size, head_dim)
        self.block_bytes = int(np.prod(self.kv_shape)) * 4
        self.budget_bytes = budget_bytes
        self.bundle_id = bundle_id
        self.stats = PrefixCacheStats()
        self._root = _Block("root", (), None, None)
        self._count = 0
        self._tick = 0
        self._lock = threading.Lock()
        self._dirty = False  # the tree changed since the last save
        self._evicted: set[str] = set()  # keys evicted since the last save
        self._writer: threading.Thread | None = None  # the writer thread, while it runs
        self._write_lock = threading.Lock()  # one save at a time
        self.folder: Path | None = None
        if folder is not None:
            self.folder = self._open_folder(Path(folder))
        if self.folder is not None:
            ref = weakref.ref(self)
            atexit.register(lambda: (c := ref()) is not None and c.flush())

    # -- lookup -----------------------------------------------------------------------------

    @property
    def nbytes(self) -> int:
        return self._count * self.block_bytes

    def __len__(self) -> int:
        return self._count

    def match(self, ids: list[int]) -> list[_Block]:
        """The blocks of the longest cached block-aligned prefix of `ids` that leaves at least one
        token to prefill (the last prompt token's logits are needed)."""
        bs = self.block_size
        with self._lock:
            self.stats.lookups += 1
            self._tick += 1
            node, path = self._root, []
            for i in range(0, len(ids) - 1 - bs + 1, bs):
                child = node.children.get(tuple(ids[i : i + bs]))
                if child is None:
                    break
                child.last_used = self._tick
                path.append(child)
                node = child
            if path:
                self.stats.hits += 1
                self.stats.reused_tokens += len(path) * bs
            return path

    def fill(self, blocks: list[_Block], k_cache: np.ndarray, v_cache: np.ndarray) -> None:
        """Copy `blocks` into the first positions of caches shaped [L, 1, Hkv, C, D]."""
        bs = self.block_size
        for i, b in enumerate(blocks):
            k_cache[:, 0, :, i * bs : (i + 1) * bs] = b.kv[0]
            v_cache[:, 0, :, i * bs : (i + 1) * bs] = b.kv[1]

    def parts(self, blocks: list[_Block]) -> list[np.ndarray]:
        """The KV of consecutive `blocks` as few arrays [2, L, Hkv, n, D]: a run of consecutive
        rows of one segment is one view of it."""
        views = [b.view for b in blocks]  # read once each: the writer thread may replace them
        out: list[np.ndarray] = []
        i = 0
        while i < len(blocks):
            j, v = i + 1, views[i]
            while v is not None and j < len(blocks) and views[j] is not None and views[j][0] is v[0] \
                    and views[j][1] == v[1] + j - i:
                j += 1
            out.append(blocks[i].kv if j == i + 1 else self._rows(v[0], v[1], v[1] + j - i))
            i = j
        return out

    def _rows(self, segment: np.ndarray, first: int, end: int) -> np.ndarray:
        """Blocks first..end-1 of a segment array [2, L, Hkv, n * block, D], as a view."""
        return segment[:, :, :, first * self.block_size : end * self.block_size]

    def first_missing(self, ids: list[int]) -> int | None:
        """The position where the first full block of `ids` not stored yet starts (None: all stored)."""
        missing = self.missing_blocks(ids)
        return (len(ids) // self.block_size - missing) * self.block_size if missing else None

    def missing_blocks(self, ids: list[int]) -> int:
        """How many full blocks of `ids` are not stored yet (0: nothing to insert)."""
        bs = self.block_size
        with self._lock:
            node, have = self._root, 0
            for i in range(0, len(ids) - bs + 1, bs):
                node = node.children.get(tuple(ids[i : i + bs]))
                if node is None:
                    break
                have += 1
            return len(ids) // bs - have

    # -- insertion and eviction -------------------------------------------------------------

    def insert(self, ids: list[int], k_cache: np.ndarray, v_cache: np.ndarray, start: int = 0) -> int:
        """Store the full blocks of `ids`, whose KV from position `start` on sits at positions 0..
        of caches [L, 1, Hkv, C, D] (blocks before `start` must be stored already: a missing one
        ends the insertion). Returns the number of new blocks."""
        bs = self.block_size
        new: list[_Block] = []
        with self._lock:
            self._tick += 1
            node = self._root
            for i in range(0, len(ids) - bs + 1, bs):
                tokens = tuple(int(t) for t in ids[i : i + bs])
                child = node.children.get(tokens)
                if child is None:
                    if i < start:  # evicted since the caller counted what was missing: its KV was not read
                        break
                    j = i - start
                    kv = np.stack([k_cache[:, 0, :, j : j + bs], v_cache[:, 0, :, j : j + bs]]).astype(np.float32)
                    child = _Block(_prefix_key(node.key, tokens), tokens, kv, node)
                    node.children[tokens] = child
                    self._count += 1
                    new.append(child)
                child.last_used = self._tick
                node = child
            self.stats.stored_blocks += len(new)
            evicted = self._evict(protect=node)
            if self.folder is not None and (new or evicted):
                self._evicted.update(b.key for b in evicted)
                self._dirty = True
                if self._writer is None:  # else the running writer sees _dirty before it stops
                    self._writer = threading.Thread(target=self._write_loop, name="prefix-cache-writer", daemon=True)
                    self._writer.start()
        return len(new)

    def flush(self) -> None:
        """Wait until what `insert` stored is on disk (a no-op without a folder)."""
        self._drain(writer=False)

    close = flush  # nothing else to release: the writer thread ends when it runs out of work

    def _write_loop(self) -> None:
        try:
            self._drain(writer=True)
        finally:  # after an unexpected error too, so that the next insert starts a writer again
            with self._lock:
                if self._writer is threading.current_thread():
                    self._writer = None

    def _drain(self, writer: bool) -> None:
        """Save until nothing is dirty; the writer thread (`writer`) clears itself under the lock
        that `insert` checks, so a change made as it stops starts a new one."""
        with self._write_lock:
            while True:
                with self._lock:
                    if not self._dirty or self.folder is None:
                        if writer:
                            self._writer = None
                        return
                    self._dirty = False
                    ours, evicted, self._evicted = self._tree(), self._evicted, set()
                self._save(ours, evicted)

    def _evict(self, protect: _Block) -> list[_Block]:
        """Drop least recently used leaves until under budget; never the path to `protect`."""
        keep = set()
        n = protect
        while n is not None:
            keep.add(id(n))
            n = n.parent
        evicted = []
        while self.nbytes > self.budget_bytes:
            leaves = [b for b in self._walk() if not b.children and id(b) not in keep]
            if not leaves:
                break
            victim = min(leaves, key=lambda b: b.last_used)
            del victim.parent.children[victim.tokens]
            self._count -= 1
            evicted.append(victim)
        self.stats.evicted_blocks += len(evicted)
        return evicted

    def _walk(self):
        """Every block, parents before children."""
        stack = list(self._root.children.values())
        while stack:
            b = stack.pop()
            yield b
            stack.extend(b.children.values())

    def _tree(self) -> list[tuple[_Block, str]]:
        """The blocks with their parents' keys, parents first: what a save writes (a block's KV
        values never change once stored, so the writer may read them unlocked)."""
        return [(b, b.parent.key) for b in self._walk()]

    # -- persistence ------------------------------------------------------------------------

    def _meta(self) -> dict:
        return {"format": FORMAT, "bundle": self.bundle_id, "block_size": self.block_size,
                "kv_shape": list(self.kv_shape), "dtype": "float32"}

    def _open_folder(self, root: Path) -> Path | None:
        """Open (or create) this bundle's subfolder and load what it holds; None if unusable."""
        folder = root / f"{self.bundle_id[:16]}.v{FORMAT}"
        old = root / self.bundle_id[:16]
        if (old / "index.json").exists():
            warnings.warn(f"{old}: a prefix cache in format 1 (one file per block), which this version does not read; "
                          f"it uses {folder.name} beside it: delete {old} to free its space", stacklevel=3)
        try:
            (folder / "segments").mkdir(parents=True, exist_ok=True)
            with _folder_lock(folder, exclusive=True):
                usable = self._check_meta(folder)
            if usable:
                with _folder_lock(folder, exclusive=False):
                    self._load(folder)
        except OSError as e:
            warnings.warn(f"prefix cache folder {root}: cannot be used ({e.strerror}); caching in memory only", stacklevel=3)
            return None
        return folder if usable else None

    def _check_meta(self, folder: Path) -> bool:
        """Whether the folder holds this bundle's layout (under the exclusive lock). A missing or
        unreadable meta.json is (re)written: what the segments hold is checked when they load."""
        meta_path = folder / "meta.json"
        try:
            meta = json.loads(meta_path.read_bytes())
        except FileNotFoundError:
            meta = None
        except (ValueError, RecursionError) as e:
            warnings.warn(f"{meta_path}: unreadable ({type(e).__name__}); rewritten", stacklevel=4)
            meta = None
        if meta is None:
            _write_atomic(meta_path, json.dumps(self._meta()).encode())
            return True
        if meta != self._meta():
            warnings.warn(
                f"{meta_path}: made for another bundle or block layout; prefix cache folder ignored, "
                "caching in memory only", stacklevel=4)
            return False
        return True

    def _load(self, folder: Path) -> None:
        index_path = folder / "index.json"
        if not index_path.exists():
            return
        try:
            segments, entries = _parse_index(json.loads(index_path.read_bytes()))
        except (OSError, ValueError, RecursionError) as e:
            warnings.warn(f"{index_path}: unreadable ({e}); starting with an empty prefix cache", stacklevel=4)
            return
        loaded: dict[str, np.ndarray | str] = {}  # segment -> its mapped array, or why it was refused
        by_key = {"root": self._root}
        bad = 0
        for e in entries:
            try:
                parent = by_key.get(e["parent"])
                tokens = tuple(int(t) for t in e["tokens"])
                key, name, row = e["key"], e["segment"], e["row"]
                if parent is None or len(tokens) != self.block_size or key != _prefix_key(parent.key, tokens):
                    raise ValueError("does not fit the tree")
                if name not in loaded:
                    loaded[name] = self._map_segment(folder / "segments" / name, segments.get(name))
                seg = loaded[name]
                if isinstance(seg, str):
                    raise ValueError(seg)
                if not (isinstance(row, int) and 0 <= row < seg.shape[3] // self.block_size):
                    raise ValueError(f"row {row!r} not in {name}")
            except (ValueError, KeyError, TypeError) as err:
                bad += 1
                if bad == 1:
                    warnings.warn(f"{folder}: skipping a corrupt prefix-cache block ({err})", stacklevel=4)
                continue
            if self.nbytes + self.block_bytes > self.budget_bytes:
                break
            block = _Block(key, tokens, self._rows(seg, row, row + 1), parent, segment=name, row=row, view=(seg, row))
            parent.children[tokens] = block
            by_key[key] = block
            self._count += 1
        if bad:
            warnings.warn(f"{folder}: {bad} prefix-cache block(s) were corrupt or orphaned and are ignored", stacklevel=4)

    def _map_segment(self, path: Path, listed) -> np.ndarray | str:
        """A segment's blocks, memory-mapped after its sha256 and shape are checked; else why not."""
        try:
            with open(path, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            if not isinstance(listed, dict) or digest != listed.get("sha256"):
                return f"{path}: sha256 mismatch"
            seg = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            return f"{path}: unreadable ({e})"
        two, layers, heads, bs, dim = self.kv_shape
        expected = (two, layers, heads, listed.get("blocks", 0) * bs, dim)
        if seg.dtype != np.float32 or seg.shape != expected:
            return f"{path}: shape {seg.shape} {seg.dtype}, expected {expected} float32"
        return seg

    def _save(self, ours: list[tuple[_Block, str]], evicted: set[str]) -> None:
        """Write new segments and the merged index, delete what no entry names (see the module doc)."""
        folder = self.folder
        try:
            with _folder_lock(folder, exclusive=True):
                self._save_locked(folder, ours, evicted)
        except OSError as e:
            warnings.warn(f"prefix cache folder {folder}: write failed ({e.strerror}); caching in memory only", stacklevel=2)
            self.folder = None

    def _save_locked(self, folder: Path, ours: list[tuple[_Block, str]], evicted: set[str]) -> None:
        seg_dir = folder / "segments"
        try:
            segments, disk = _parse_index(json.loads((folder / "index.json").read_bytes()))
        except (OSError, ValueError, RecursionError):
            segments, disk = {}, []  # missing or unreadable: its segments become orphans
        listed = {e.get("key"): e for e in disk}
        present = {p.name for p in seg_dir.iterdir()} & set(segments)  # on disk and listed with a hash
        for b, _ in ours:
            other = listed.get(b.key)
            if b.segment in present:
                continue
            # Another process stored this prefix first: its copy (equal up to rounding) is the one listed.
            b.segment, b.row = (other["segment"], other["row"]) if other and other.get("segment") in present else ("", 0)
        order = [{"key": b.key, "parent": parent, "tokens": list(b.tokens), "segment": b.segment, "row": b.row}
                 for b, parent in ours]
        kept = {"root"} | {b.key for b, _ in ours}
        room = max(0, self.budget_bytes // self.block_bytes - len(ours))
        for e in disk:
            key, parent = e.get("key"), e.get("parent")
            if room and isinstance(key, str) and key not in kept and key not in evicted and parent in kept \
                    and e.get("segment") in present:
                order.append(e)  # another process's block: its parent is listed before it
                kept.add(key)
                room -= 1
        users: dict[str, list[dict]] = {}
        for e in order:
            users.setdefault(e["segment"], []).append(e)
        mine = {b.key: b for b, _ in ours}
        fresh = [b for b, _ in ours if not b.segment]
        for name, es in users.items():  # mostly evicted and only ours: move our blocks to the new file
            if name and 2 * len(es) < segments.get(name, {}).get("blocks", 0) and all(e["key"] in mine for e in es):
                fresh += [mine[e["key"]] for e in es]
        if fresh:
            buf = io.BytesIO()
            data = np.concatenate([b.kv for b in fresh], axis=3).astype(np.float32, copy=False)
            np.save(buf, data, allow_pickle=False)
            digest = hashlib.sha256(buf.getvalue()).hexdigest()
            name = f"{digest[:32]}.npy"
            _write_atomic(seg_dir / name, buf.getvalue())
            segments[name] = {"sha256": digest, "blocks": len(fresh)}
            for i, b in enumerate(fresh):  # equal values, now views of one array: `parts` joins runs
                b.kv, b.segment, b.row = self._rows(data, i, i + 1), name, i
                b.view = (data, i)
            rows = {b.key: (name, i) for i, b in enumerate(fresh)}
            for e in order:
                if e["key"] in rows:
                    e["segment"], e["row"] = rows[e["key"]]
        used = {e["segment"] for e in order}
        index = {"format": FORMAT, "segments": {n: segments[n] for n in sorted(used)}, "blocks": order}
        _write_atomic(folder / "index.json", json.dumps(index).encode())
        for path in seg_dir.iterdir():  # evicted, over budget, orphaned or left half-written by a crash
            if path.name not in used:
                path.unlink(missing_ok=True)
        for pattern in (".index.json.*", ".meta.json.*"):
            for path in folder.glob(pattern):
                path.unlink(missing_ok=True)


def _parse_index(index) -> tuple[dict, list[dict]]:
    """An index's segment table and block entries (ValueError if it is not a format-2 index)."""
    if not (isinstance(index, dict) and index.get("format") == FORMAT and isinstance(index.get("segments"), dict)
            and isinstance(index.get("blocks"), list)):
        raise ValueError(f"not a format-{FORMAT} index")
    segments = {n: v for n, v in index["segments"].items() if isinstance(v, dict)}
    return segments, [e for e in index["blocks"] if isinstance(e, dict)]


@contextmanager
def _folder_lock(folder: Path, exclusive: bool) -> Iterator[None]:
    """The folder's advisory lock (`flock` on `folder/lock`), held for the block."""
    fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
