"""The device KV cache: written in place, rows independent, attention over the positions in use only."""

import re

import numpy as np
import pytest
import torch

from iree_glm.runtime import Session
from iree_glm.bundle.kv_layout import KEY_GRANULARITY, attended_keys
from iree_glm.runtime.kv_cache import key_positions


@pytest.fixture(scope="module")
def session(batched_bundle):
    return Session.load(batched_bundle)


def _eager_cache(model, ids):
    k, v = model.empty_cache(1, 128)
    with torch.no_grad():
        model.all_logits(torch.tensor([ids]), torch.zeros(1, dtype=torch.long), k, v)
    return k.numpy(), v.numpy()


def test_attended_keys_cover_the_positions_in_use():
    assert attended_keys(0, 128) == KEY_GRANULARITY
    assert attended_keys(KEY_GRANULARITY - 1, 128) == KEY_GRANULARITY
    assert attended_keys(KEY_GRANULARITY, 128) == 2 * KEY_GRANULARITY
    assert attended_keys(127, 128) == 128 and attended_keys(120, 100) == 100


def test_prefill_writes_its_row_in_place_and_nothing_else(session, glm4_checkpoint):
    from iree_glm.frontend.checkpoint import load_model, open_checkpoint

    model = load_model(open_checkpoint(glm4_checkpoint[0]))
    ids = list(range(5, 45))
    cache = session.new_cache(3)
    session.run_prefill(ids, 0, cache, slot=1)
    k, v = cache.read(1, 128)
    want_k, want_v = _eager_cache(model, ids)
    np.testing.assert_allclose(k, want_k, atol=1e-5)
    np.testing.assert_allclose(v, want_v, atol=1e-5)
    for slot in (0, 2):  # other rows untouched
        k, v = cache.read(slot, 128)
        assert not k.any() and not v.any()


def test_decode_sees_what_earlier_calls_wrote(session):
    """The same device buffers go back in on every call: a step reads the entries of the earlier
    calls (if IREE copied the cache instead of writing it in place, these logits would differ)."""
    ids = list(range(7, 30))
    whole = session.run_prefill(ids, 0, session.new_cache())
    cache = session.new_cache()
    session.run_prefill(ids[:-3], 0, cache)
    for i, token in enumerate(ids[-3:-1]):
        session.decode([token], [len(ids) - 3 + i], cache)
    last = session.decode([ids[-1]], [len(ids) - 1], cache)[0]
    np.testing.assert_allclose(last, whole, atol=1e-4)


def test_store_kv_puts_prefix_entries_back(session):
    ids = list(range(9, 50))
    src = session.new_cache()
    session.run_prefill(ids, 0, src)
    k, v = src.read(0, 32)
    dst = session.new_cache(2)
    session._fns["store_kv"](np.asarray([1], np.int64), np.zeros(1, np.int64), np.stack([k[:, 0], v[:, 0]]), *dst.buffers)
    got_k, got_v = dst.read(1, 128)
    np.testing.assert_array_equal(got_k[:, :, :, :32], k)
    np.testing.assert_array_equal(got_v[:, :, :, :32], v)
    assert not got_k[:, :, :, 32:].any() and not dst.read(0, 128)[0].any()
    # and a prefill continuing after it gives the logits of a prefill of the whole prompt
    tail = session.run_prefill(ids[32:], 32, dst, slot=1)
    np.testing.assert_allclose(tail, session.run_prefill(ids, 0, session.new_cache()), atol=1e-4)


def test_attending_more_keys_than_needed_changes_nothing(session):
    """The attended length is only a bound: the same step over the whole capacity agrees."""
    ids = list(range(11, 40))
    cache = session.new_cache()
    session.run_prefill(ids, 0, cache)
    pos = len(ids)
    args = (np.asarray([[3]], np.int64), np.asarray([pos], np.int64), np.zeros(1, np.int64))
    short = np.array(session._fns["decode"](*args, key_positions(attended_keys(pos, 128)), *cache.buffers).to_host())
    full = np.array(session._fns["decode"](*args, key_positions(128), *cache.buffers).to_host())
    np.testing.assert_allclose(short, full, atol=1e-5)


def test_compiled_step_copies_no_cache(glm4_checkpoint, tmp_path):
    """In the compiled decode step no copy or fill is as large as a cache row (it would mean IREE
    copies the cache instead of writing the new entry in place)."""
    import iree.compiler as ic

    from iree_glm.frontend.checkpoint import load_model, open_checkpoint
    from iree_glm.export.program import EntryPoint, export_mlir
    from iree_glm.compiler.target import host_cpu_target

    model = load_model(open_checkpoint(glm4_checkpoint[0]))
    cfg = model.cfg
    capacity = 80  # no other dimension of the tiny model is 80
    module, _ctx = export_mlir(model, [EntryPoint("decode_b2", 2, 1, capacity)])
    src, out = tmp_path / "m.mlir", tmp_path / "m.stream.mlir"
    src.write_text(str(module))
    ic.compile_file(str(src), output_file=str(out), input_type="torch",
                    extra_args=[*host_cpu_target().compile_args(), "--compile-to=stream"])
    text = out.read_text()
    body = re.search(r"util\.func public @decode_b2\$async\(.*?\n  \}", text, re.S).group(0)
    assert "_scatter_" in body  # the new entries are scattered into the cache
    row_bytes = cfg.num_kv_heads * capacity * cfg.head_dim * 4
    copies = re.findall(r"stream\.cmd\.(?:copy|fill) [^\n]*, (%\w+) :", body)
    assert all(re.fullmatch(r"%c\d+", n) and int(n[2:]) < row_bytes for n in copies), copies
    # only the scatters (which iterate over the new entries) name the capacity: the attention
    # and its key gather work on the dynamic key count
    row = cfg.num_kv_heads * capacity * cfg.head_dim
    dispatches = re.findall(r"stream\.cmd\.dispatch @\S+", body)
    assert not [d for d in dispatches if re.search(rf"[_x]({capacity}|{row})[x_]", d) and "_scatter_" not in d]


def test_decode_reads_the_cache_without_packing_it(glm4_checkpoint, tmp_path):
    """Decode steps (one row, and a batch of rows) attend with reductions that read the cache
    where it lies: no dispatch over the dynamic key count packs it or runs a data-tiled
    (mmt4d) matmul, which would copy every attended key and value at every step."""
    import iree.compiler as ic

    from iree_glm.frontend.checkpoint import load_model, open_checkpoint
    from iree_glm.export.program import EntryPoint, export_mlir
    from iree_glm.compiler.target import host_cpu_target

    model = load_model(open_checkpoint(glm4_checkpoint[0])).fuse_qkv()
    module, _ctx = export_mlir(model, [EntryPoint("decode", 1, 1, 80), EntryPoint("decode_b2", 2, 1, 80)])
    src, out = tmp_path / "m.mlir", tmp_path / "m.stream.mlir"
    src.write_text(str(module))
    ic.compile_file(str(src), output_file=str(out), input_type="torch",
                    extra_args=[*host_cpu_target().compile_args(), "--compile-to=stream"])
    text = out.read_text()
    for fn in ("decode", "decode_b2"):
        body = re.search(rf"util\.func public @{fn}\$async\(.*?\n  \}}", text, re.S).group(0)
        over_keys = [d for d in re.findall(r"stream\.cmd\.dispatch @(\S+)", body) if re.search(r"[_x]D[x_]", d)]
        assert len(over_keys) >= 2 * model.cfg.num_layers, (fn, over_keys)  # scores and output per layer
        assert not [d for d in over_keys if "pack" in d or "mmt4d" in d], (fn, over_keys)


def test_mapped_kv_write_matches_store_kv_and_touches_only_its_row(session):
    """Restoring KV by host copies into the mapped buffers (CPU devices) equals the bundle's
    store_kv: same buffers, same logits after it; other rows stay as they were."""
    cfg = session.config
    kv = np.random.default_rng(0).standard_normal((2, cfg.num_layers, cfg.num_kv_heads, 40, cfg.head_dim)).astype(np.float32)
    mapped, stored = session.new_cache(3), session.new_cache(3)
    stored._views = []  # as on a device whose memory the host cannot map: store_kv runs
    assert mapped.host_views() is not None and stored.host_views() is None
    session._store_kv(mapped, 1, [kv[:, :, :, :16], kv[:, :, :, 16:]])  # as prefix-cache blocks come
    session._store_kv(stored, 1, [kv[:, :, :, :16], kv[:, :, :, 16:]])
    for a, b in zip(mapped.buffers, stored.buffers):
        assert np.array_equal(np.array(a.to_host()), np.array(b.to_host()))
    k, v = mapped.read(1, 40)
    assert np.array_equal(k[:, 0], kv[0]) and np.array_equal(v[:, 0], kv[1])
    assert not np.array(mapped.buffers[0].to_host())[[0, 2]].any()
    ids = list(range(7, 19))
    np.testing.assert_array_equal(session.run_prefill(ids, 40, mapped, 1), session.run_prefill(ids, 40, stored, 1))
    other = session.new_cache(1)
    other.dtype = np.dtype(np.float16)  # buffers that do not map to the cache's numpy type: no host write
    assert not other.write(0, [kv]) and not np.array(other.buffers[0].to_host()).any()


def test_a_move_copies_the_written_positions_and_zeroes_the_rest_before_they_are_read(session):
    """A plan switch between decode devices moves only what the rows in use have written
    (O(positions) bytes, not the buffers); the new allocation's other positions are zeroed
    just before a call reads them (masked positions must be finite)."""
    from iree_glm.runtime.devices import hal_device
    from iree_glm.runtime.kv_cache import mappable_memory

    cfg = session.config
    cache = session.new_cache(3)
    rng = np.random.default_rng(1)
    kv = rng.standard_normal((2, cfg.num_layers, cfg.num_kv_heads, 20, cfg.head_dim)).astype(np.float32)
    session._store_kv(cache, 0, [kv[:, :, :, :5]])
    session._store_kv(cache, 1, [kv])
    cache.release(2)
    assert list(cache.written) == [5, 20, 0]
    per_position = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * 4
    other = hal_device("local-sync")  # another device: the move is real, not a no-op
    assert cache.move_to(other, mappable_memory(True)) == (5 + 20) * per_position
    assert cache.device is other and all(b._is_mappable() for b in cache.buffers)
    k, v = cache.read(1, 20)
    assert np.array_equal(k[:, 0], kv[0]) and np.array_equal(v[:, 0], kv[1])
    for b in cache.buffers:  # what an uninitialised allocation may hold
        b.to_host()[1, :, 20:] = np.nan
        b.to_host()[2] = np.nan
    cache.use([1, 2], [21, 1], 32)  # a decode step at position 20 of row 1, a new request in row 2
    for b in cache.buffers:
        row = b.to_host()
        assert not row[1, :, 20:32].any() and not row[2, :, :32].any()
        assert np.isnan(row[1, :, 32:]).all()  # not read yet: not touched
    k, v = cache.read(1, 20)
    assert np.array_equal(k[:, 0], kv[0]) and list(cache.written) == [5, 21, 1]


def test_a_move_back_into_kept_buffers_copies_only_the_positions_written_since(session):
    """A move that keeps the buffers it leaves (the session keeps a CPU device's: new local-task
    buffers cost by their size) lets the move back copy only what each row wrote meanwhile: a
    decode step's position, a row released and refilled from 0 (or written from an unknown
    start) whole; the kept buffers' bytes are accounted until the move back frees them."""
    from iree_glm.runtime.devices import hal_device
    from iree_glm.runtime.kv_cache import mappable_memory

    cfg = session.config
    per_position = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * 4
    cache = session.new_cache(3)
    home, other = cache.device, hal_device("local-sync")
    rng = np.random.default_rng(2)
    kv = rng.standard_normal((2, cfg.num_layers, cfg.num_kv_heads, 30, cfg.head_dim)).astype(np.float32)
    for row, n in ((0, 10), (1, 20), (2, 30)):
        session._store_kv(cache, row, [kv[:, :, :, :n]])
    assert cache.kept_bytes == 0 and cache.nbytes == 3 * cache.capacity * per_position
    assert cache.move_to(other, mappable_memory(True), keep=True) == 60 * per_position
    assert cache.kept is not None and cache.kept.device is home and cache.kept_bytes == cache.nbytes

    def write(row: int, first: int, end: int, starts) -> None:  # what a call writing first..end-1 of `row` does
        cache.use([row], [end], 32, starts)
        for i, b in enumerate(cache.buffers):
            b.to_host()[row, :, first:end] = kv[i % 2, i // 2, :, :end - first] + 100

    write(0, 10, 12, [10])  # two decode steps' worth, start known
    write(1, 20, 21, [20])
    cache.release(2)
    write(2, 0, 5, [0])  # a new request in the released row
    write(1, 21, 22, None)  # start unknown: the whole row counts as rewritten
    moved = cache.move_to(home, mappable_memory(True))
    assert moved == (2 + 22 + 5) * per_position  # not 12 + 22 + 5 positions in use, nor 3 rows x capacity
    assert cache.device is home and cache.kept is None and cache.kept_bytes == 0
    k, v = cache.read(0, 12)
    assert np.array_equal(k[:, 0, :, :10], kv[0, :, :, :10]) and np.array_equal(k[:, 0, :, 10:], kv[0, :, :, :2] + 100)
    k, v = cache.read(2, 5)
    assert np.array_equal(v[:, 0], kv[1, :, :, :5] + 100)
    assert all(np.isfinite(b.to_host()).all() for b in cache.buffers)  # the kept buffers' other positions are old, finite
    # without keeping, the way there and back copies every position in use each time
    assert cache.move_to(other, mappable_memory(True)) == (12 + 22 + 5) * per_position and cache.kept is None
    assert cache.move_to(home, mappable_memory(True)) == (12 + 22 + 5) * per_position
