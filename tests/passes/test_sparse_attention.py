"""Block-sparse attention: the kernel, the MLIR pass, the compiled model and the bad-input errors.

The reference is always dense attention with the equivalent mask (first G tokens plus the
last W positions, causal); the block-sparse form must match it to fp32 rounding, and the
compiled dispatches must not contain a dense S x C attention.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from iree_glm.frontend import sparse_attention as sa
from iree_glm.compiler.build import BuildOptions, build_bundle
from iree_glm.frontend.checkpoint import load_model, open_checkpoint
from iree_glm.errors import run_cli
from iree_glm.errors import UserError
from iree_glm.compiler.iree_compile import compile_mlir
from iree_glm.compiler.target import host_cpu_target
from iree_glm.passes import sparse_attention as sparse_pass
from ..helpers import TESTDATA


PATTERN = sa.SparsePattern(local=16, global_=4, block=8)
CAPACITY = 128  # unlike every other size of the tiny model, so S x C scores are recognisable


# -- the kernel --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "s, start, local, global_, block, heads, kv_heads",
    [
        (37, 0, 8, 3, 8, 4, 2),  # not a multiple of the block, GQA
        (64, 0, 16, 4, 16, 4, 4),  # a multiple of the block
        (5, 10, 8, 3, 4, 4, 1),  # a chunk after a cached prefix, MQA
        (1, 30, 8, 3, 1, 4, 2),  # decode: one query
        (100, 0, 300, 2, 32, 2, 2),  # window longer than the sequence
    ],
)
def test_kernel_matches_dense_masked_attention(s, start, local, global_, block, heads, kv_heads):
    g = torch.Generator().manual_seed(s)
    q = torch.randn(1, heads, s, 8, generator=g)
    k = torch.randn(1, kv_heads, 128, 8, generator=g)
    v = torch.randn(1, kv_heads, 128, 8, generator=g)
    pos = (start + torch.arange(s))[None]
    got = sa.block_sparse_attention(q, k, v, pos, local, global_, block)
    ref = sa.dense_reference(q, k, v, pos, local, global_, block)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("s, block", [(1, 1), (7, 4)])
def test_kernel_batch_rows_at_different_positions(s, block):
    """Batched decode (decode_bN): every row has its own position."""
    g = torch.Generator().manual_seed(7)
    q, k, v = torch.randn(2, 4, s, 8, generator=g), torch.randn(2, 2, 64, 8, generator=g), torch.randn(2, 2, 64, 8, generator=g)
    pos = torch.stack([torch.arange(s) + 3, torch.arange(s) + 40])
    got = sa.block_sparse_attention(q, k, v, pos, 16, 4, block)
    torch.testing.assert_close(got, sa.dense_reference(q, k, v, pos, 16, 4, block), atol=1e-5, rtol=0)


def test_pattern_differs_from_causal_attention():
    """The mask really drops keys (otherwise the tests above would prove little)."""
    mask = sa.sparse_mask(torch.arange(40)[None], 64, local=8, global_=4)[0, 0]
    assert mask[39].sum() == 12 and mask[39, :4].all() and mask[39, 32:40].all() and not mask[39, 4:32].any()
    assert mask[5].sum() == 6 and not mask[5, 6:].any()


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ("local=0,global=4,block=8", "local must be positive"),
        ("local=16,global=-1,block=8", "global must be positive"),
        ("local=16,global=4,block=0", "block must be positive"),
        ("local=16,global=4", "missing block"),
        ("local=16,glob=4,block=8", "cannot parse 'glob=4'"),
        ("local=16,local=4,block=8", "given twice"),
    ],
)
def test_bad_pattern_is_one_line_error(text, message):
    with pytest.raises(UserError, match=message):
        sa.parse_pattern(text).check(128)


def test_compile_cli_rejects_bad_patterns(glm4_checkpoint, tmp_path, capsys):
    from iree_glm.cli.compile import main

    ckpt = str(glm4_checkpoint[0])
    for args, message in [
        (["--sparse-attention", "local=16,global=0,block=8"], "global must be positive"),
        (["--sparse-attention", "local=16,global=4,block=256", "--max-context", "128"], "block=256 is larger than the context (128)"),
        (["--sparse-attention", "window=16"], "cannot parse"),
        (["--sparse-attention", "local=16,global=4,block=8,ring=20"], "ring=20 is smaller than local+block=24"),
        (["--sparse-attention", "local=16,global=4,block=8,ring=0"], "ring must be a positive slot count"),
        (["--sparse-attention", "local=16,global=4,block=8,ring", "--max-context", "28"], "28 slots (global+ring) saves nothing at context 28"),
    ]:
        assert run_cli(main, [ckpt, "-o", str(tmp_path / "b"), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --sparse-attention") and message in err[0]
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    "name, message",
    [
        ("sparse_attention_dense.mlir", "dense attention op"),
        ("sparse_attention_bad_block.mlir", "'block' is not a constant integer"),
    ],
)
def test_pass_refuses_attention_it_cannot_match(name, message, tmp_path):
    with pytest.raises(sparse_pass.SparseAttentionError, match=message):
        sparse_pass.rewrite_file(TESTDATA / name, tmp_path / "out.mlir")


def test_pass_refuses_a_module_without_attention(tmp_path):
    src = tmp_path / "none.mlir"
    src.write_text("func.func @f(%a: !torch.vtensor<[2],f32>) -> !torch.vtensor<[2],f32> {\n  return %a : !torch.vtensor<[2],f32>\n}\n")
    with pytest.raises(sparse_pass.SparseAttentionError, match="no attention to rewrite"):
        sparse_pass.rewrite_file(src, tmp_path / "out.mlir")


# -- the pass on small MLIR ----------------------------------------------------------------


@pytest.fixture(scope="module")
def small_modules(tmp_path_factory):
    """testdata rewritten by the pass and compiled; the dense file compiled as a control."""
    work = tmp_path_factory.mktemp("sparse_small")
    rewritten = work / "marked.mlir"
    assert sparse_pass.rewrite_file(TESTDATA / "sparse_attention_marked.mlir", rewritten) == 5
    out = {"text": rewritten.read_text()}
    for name, src in [("sparse", rewritten), ("dense", TESTDATA / "sparse_attention_dense.mlir")]:
        dump = work / f"{name}-dispatches"
        compile_mlir(src, work / f"{name}.vmfb", host_cpu_target(), (f"--iree-hal-dump-executable-sources-to={dump}",))
        out[name] = (work / f"{name}.vmfb", dump)
    return out


def test_pass_replaces_marked_ops_with_gathers_and_matmuls(small_modules):
    text = small_modules["text"]
    assert "torch.operator" not in text and "scaled_dot_product_attention" not in text
    assert len(re.findall(r"call @iree_glm_block_sparse_attention_\d+\(", text)) == 5  # one kernel per signature
    # Per kernel: K and V gathered for the window and for the globals; 2 matmuls per part.
    assert text.count("torch.aten.index_select") == 20 and text.count("torch.aten.bmm") == 20


@pytest.mark.parametrize("s, start", [(24, 0), (21, 0), (3, 0), (13, 40)])
def test_compiled_pass_output_matches_dense(small_modules, s, start):
    import iree.runtime as rt

    module = rt.load_vm_flatbuffer_file(str(small_modules["sparse"][0]), driver="local-task")
    g = torch.Generator().manual_seed(s)
    q = torch.randn(1, 4, s, 8, generator=g)
    k, v = torch.randn(1, 2, 96, 8, generator=g), torch.randn(1, 2, 96, 8, generator=g)
    pos = (start + torch.arange(s))[None]
    got = module.prefill_attention(q.numpy(), k.numpy(), v.numpy(), pos.numpy()).to_host()
    ref = sa.dense_reference(q, k, v, pos, 16, 4, 8).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    one = module.decode_attention(q[:, :, -1:].numpy(), k.numpy(), v.numpy(), pos[:, -1:].numpy()).to_host()
    np.testing.assert_allclose(one, ref[:, :, -1:], atol=1e-5, rtol=0)


@pytest.mark.parametrize("s", [3, 21])
def test_compiled_pass_output_over_own_keys(small_modules, s):
    """A fresh prefill with a sliding-window cache attends over its own keys (k as long as q),
    also when the prompt is shorter than the G globals."""
    import iree.runtime as rt

    module = rt.load_vm_flatbuffer_file(str(small_modules["sparse"][0]), driver="local-task")
    g = torch.Generator().manual_seed(s)
    q, k, v = (torch.randn(1, h, s, 8, generator=g) for h in (4, 2, 2))
    pos = torch.arange(s)[None]
    got = module.own_keys_attention(q.numpy(), k.numpy(), v.numpy(), pos.numpy()).to_host()
    np.testing.assert_allclose(got, sa.dense_reference(q, k, v, pos, 16, 4, 8).numpy(), atol=1e-5, rtol=0)


def _ring_cache(k: torch.Tensor, global_: int, ring: int) -> torch.Tensor:
    """k [1,Hkv,P,D] (positions 0..P-1) as a sliding-window cache of G + ring slots."""
    cache = torch.zeros(1, k.shape[1], global_ + ring, k.shape[3])
    for p, slot in enumerate(sa.ring_slot(torch.arange(k.shape[2]), global_, ring).tolist()):  # later positions win
        cache[:, :, slot] = k[:, :, p]
    return cache


@pytest.mark.parametrize("pos", [2, 19, 27, 28, 57])
def test_compiled_ring_decode_matches_dense(small_modules, pos):
    """Decode over a sliding-window cache (4 globals + a ring of 24) equals dense attention with
    the pattern's mask over the full history."""
    import iree.runtime as rt

    module = rt.load_vm_flatbuffer_file(str(small_modules["sparse"][0]), driver="local-task")
    g = torch.Generator().manual_seed(pos)
    q = torch.randn(1, 4, 1, 8, generator=g)
    k, v = torch.randn(1, 2, pos + 1, 8, generator=g), torch.randn(1, 2, pos + 1, 8, generator=g)
    here = torch.tensor([[pos]])
    got = module.ring_decode_attention(q.numpy(), _ring_cache(k, 4, 24).numpy(), _ring_cache(v, 4, 24).numpy(), here.numpy()).to_host()
    np.testing.assert_allclose(got, sa.dense_reference(q, k, v, here, 16, 4, 1).numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("s, start", [(8, 0), (5, 3), (8, 37), (3, 61)])
def test_compiled_ring_chunk_matches_dense(small_modules, s, start):
    """A prefill chunk (at most ring - W = 8 tokens, at any start) written into the ring and
    attended there equals dense attention over the full history."""
    import iree.runtime as rt

    module = rt.load_vm_flatbuffer_file(str(small_modules["sparse"][0]), driver="local-task")
    g = torch.Generator().manual_seed(s + start)
    q = torch.randn(1, 4, s, 8, generator=g)
    k, v = torch.randn(1, 2, start + s, 8, generator=g), torch.randn(1, 2, start + s, 8, generator=g)
    pos = (start + torch.arange(s))[None]
    got = module.ring_chunk_attention(q.numpy(), _ring_cache(k, 4, 24).numpy(), _ring_cache(v, 4, 24).numpy(), pos.numpy()).to_host()
    np.testing.assert_allclose(got, sa.dense_reference(q, k, v, pos, 16, 4, 8).numpy(), atol=1e-5, rtol=0)


def test_ring_cache_model_matches_full_cache(glm4_checkpoint):
    """A prompt longer than the ring, fed in chunks, then 30 decode steps: a cache of G + ring
    slots gives the logits of the cache indexed by position."""
    model = load_model(open_checkpoint(glm4_checkpoint[0]))
    ids = torch.randint(0, 257, (1, 75), generator=torch.Generator().manual_seed(1))
    ring_pattern = sa.parse_pattern("local=16,global=4,block=8,ring")
    logits = {}
    for pattern in (PATTERN, ring_pattern):
        sa.enable(model, pattern)
        k, v = model.empty_cache(1, pattern.ring_slots if pattern.ring else CAPACITY)
        steps = []
        with torch.no_grad():
            for i in range(0, 45, 8):  # the prompt, in chunks the ring takes (8, ..., 5)
                out, k, v = model.all_logits(ids[:, i : min(i + 8, 45)], torch.tensor([i]), k, v)
                steps.append(out[0])
            for i in range(45, 75):
                out, k, v = model.all_logits(ids[:, i : i + 1], torch.tensor([i]), k, v)
                steps.append(out[0])
        logits[pattern.ring] = torch.cat(steps)
        assert k.shape[3] == (28 if pattern.ring else CAPACITY)
    torch.testing.assert_close(logits[24], logits[0], atol=1e-5, rtol=0)


def test_dispatch_check_sees_dense_attention_and_not_block_sparse(small_modules):
    # The testdata's cache holds 96 positions, a size no other dimension there has.
    assert sparse_pass.dense_scores_in_dispatches(small_modules["dense"][1], 96)  # the check works
    assert sparse_pass.dense_scores_in_dispatches(small_modules["sparse"][1], 96) == []


# -- the model -----------------------------------------------------------------------------


def _dense_attend(q, k, v, positions, pattern):
    return sa.dense_reference(q, k, v, positions, pattern.local, pattern.global_, pattern.block)


@pytest.mark.parametrize("s, as_mask", [(48, False), (45, False), (45, True)])  # a multiple of the block and not; both forms
def test_model_logits_match_dense_with_equivalent_mask(glm4_checkpoint, monkeypatch, s, as_mask):
    model = load_model(open_checkpoint(glm4_checkpoint[0]))
    sa.enable(model, PATTERN, as_mask=as_mask)
    tokens = torch.randint(0, 257, (1, s), generator=torch.Generator().manual_seed(s))
    k, v = model.empty_cache(1, CAPACITY)
    with torch.no_grad():
        got, gk, _ = model.all_logits(tokens, torch.zeros(1, dtype=torch.int64), k, v)
        monkeypatch.setattr(sa, "attend", _dense_attend)
        ref, rk, _ = model.all_logits(tokens, torch.zeros(1, dtype=torch.int64), k, v)
        sa.enable(model, None)
        causal, _, _ = model.all_logits(tokens, torch.zeros(1, dtype=torch.int64), k, v)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(gk, rk, atol=1e-5, rtol=0)
    if as_mask:  # the decode step's form (whole cache rows, the pattern's mask over them)
        sa.enable(model, PATTERN, as_mask=True)
        k, v = model.empty_cache(1, CAPACITY)
        with torch.no_grad():
            model.all_logits(tokens[:, :-1], torch.zeros(1, dtype=torch.int64), k, v)
            step, _, _ = model.all_logits(tokens[:, -1:], torch.tensor([s - 1]), k, v)
        torch.testing.assert_close(step[0, 0], ref[0, -1], atol=1e-5, rtol=0)
    assert (got[0, :PATTERN.local] - causal[0, :PATTERN.local]).abs().max() < 1e-5  # window covers all
    assert (got[0, -1] - causal[0, -1]).abs().max() > 1e-3  # beyond the window the pattern matters


@pytest.fixture(scope="module")
def sparse_bundle(glm4_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("sparse_bundle") / "glm4-sparse"
    dump = out.parent / "dispatches"
    opts = BuildOptions(max_context=CAPACITY, sparse_attention=PATTERN, extra_flags=(f"--iree-hal-dump-executable-sources-to={dump}",))
    build_bundle(glm4_checkpoint[0], out, opts)
    return out, dump


def _prefill_dispatches(dump) -> list[str]:
    """The prefill's dispatch functions in a `--iree-hal-dump-executable-sources-to` folder, sorted."""
    names = [m for f in dump.glob("*.mlir") for m in re.findall(r"hal\.executable\.export public @(\S+)", f.read_text())]
    return sorted(n for n in names if n.startswith("prefill"))


def test_sparse_prefill_has_the_dense_prefills_dispatches(sparse_bundle, glm4_checkpoint, tmp_path):
    """Sparse prefill is dense prefill with the kernel told the pattern: the same dispatches
    (each named by IREE after its ops and shapes), none added (no mask of its own, no copy of
    the keys), so it costs dense prefill less the key blocks the kernel skips. The attention
    calls are our kernel's executables, outside the prefill's own."""
    from iree_glm.passes import attention_kernel

    if attention_kernel.unavailable_reason() is not None:
        pytest.skip("no attention kernel here: sparse prefill is the marked op's gathers")
    dump = tmp_path / "dense-dispatches"
    opts = BuildOptions(max_context=CAPACITY, extra_flags=(f"--iree-hal-dump-executable-sources-to={dump}",))
    build_bundle(glm4_checkpoint[0], tmp_path / "glm4-dense", opts)
    dense, sparse = _prefill_dispatches(dump), _prefill_dispatches(sparse_bundle[1])
    assert dense and sparse == dense
    # Nor does any dispatch of either copy the attended keys out of the cache (a gather of the
    # n keys per layer and call, as before): the kernel reads them in place; only the cache
    # writes (scatters, read-write) touch the cache.
    cache = re.compile(rf"readonly:tensor<\?x\d+x{CAPACITY}x\d+xf32>")
    for folder in (dump, sparse_bundle[1]):
        readers = [f.name for f in folder.glob("*prefill*.mlir") if cache.search(f.read_text())]
        assert readers == [], readers


def test_bundle_has_no_dense_attention(sparse_bundle):
    """IREE never computes the attention densely: on a host with our attention kernel every
    attention op calls it with the pattern (the manifest says so); elsewhere the marked op's
    gathers replace it."""
    out, dump = sparse_bundle
    assert any(dump.glob("*prefill*.mlir")) and any(dump.glob("*decode*.mlir"))
    from iree_glm.bundle.manifest import read_manifest
    from iree_glm.passes import attention_kernel

    manifest = read_manifest(out)
    options = manifest.options
    assert options.sparse_attention == "local=16,global=4,block=8"
    choice = options.attention_kernel
    found = sparse_pass.dense_scores_in_dispatches(dump, CAPACITY)
    if attention_kernel.unavailable_reason() is None:
        # The scores live on the kernel's stack; the only C-wide tensor left is a decode step's
        # mask over its cache row ([query heads per KV head, C]), which the kernel reads by block.
        group = manifest.model.num_heads // manifest.model.num_kv_heads
        assert all("decode" in f and f.endswith(f": tensor<{group}x{CAPACITY}xf32>") for f in found), found
        from iree_glm.compiler.kernel_choice import kernel_set_for

        host_form = kernel_set_for(host_cpu_target(), ())[0].provider("attention").short  # avx2, or avx512 where the CPU has it
        assert (choice.kernel, choice.sparse, choice.left_to_iree) == (host_form, "local=16,global=4", 0)
        assert choice.rewritten >= 2  # the prefill's and the decode step's attention at least
        calls = [p.read_text() for p in dump.glob("*iree_glm_attention_*.mlir")]
        assert len(calls) >= 2 and all(attention_kernel.SYMBOL in text for text in calls)  # prompt and decode forms
        assert all("arith.constant 16 : index" in text and "arith.constant 4 : index" in text for text in calls)
    else:
        assert found == []
        assert choice.kernel == "iree" and "block-sparse attention" in choice.reason


@pytest.mark.parametrize("s", [40, 53])
def test_compiled_model_matches_dense_with_equivalent_mask(sparse_bundle, glm4_checkpoint, monkeypatch, s):
    from iree_glm.runtime import Session

    session = Session.load(sparse_bundle[0])
    model = load_model(open_checkpoint(glm4_checkpoint[0]))
    sa.enable(model, PATTERN)
    monkeypatch.setattr(sa, "attend", _dense_attend)
    ids = torch.randint(0, 257, (1, s + 1), generator=torch.Generator().manual_seed(s))
    k, v = model.empty_cache(1, CAPACITY)
    with torch.no_grad():
        ref, _, _ = model.all_logits(ids, torch.zeros(1, dtype=torch.int64), k, v)
    cache = session.new_cache()
    logits = session.run_prefill(ids[0, :s].tolist(), 0, cache)
    np.testing.assert_allclose(logits, ref[0, s - 1].numpy(), atol=1e-4, rtol=0)
    step = session.decode([int(ids[0, s])], [s], cache)
    np.testing.assert_allclose(step[0], ref[0, s].numpy(), atol=1e-4, rtol=0)


def _dense_reference_logits(glm4_checkpoint, monkeypatch, ids: torch.Tensor) -> torch.Tensor:
    """The torch model's logits for every position of `ids` [1, S] under the pattern, computed
    by dense attention under its mask."""
    model = load_model(open_checkpoint(glm4_checkpoint[0]))
    sa.enable(model, PATTERN)
    monkeypatch.setattr(sa, "attend", _dense_attend)
    k, v = model.empty_cache(1, CAPACITY)
    with torch.no_grad():
        return model.all_logits(ids, torch.zeros(1, dtype=torch.int64), k, v)[0]


def test_compiled_chunks_and_decode_steps_match_dense(sparse_bundle, glm4_checkpoint, monkeypatch):
    """A prompt in chunks that start and end on and off the pattern's and the kernel's blocks,
    then decode steps past the window: every logit row as the dense masked reference."""
    from iree_glm.runtime import Session

    session = Session.load(sparse_bundle[0])
    ids = torch.randint(0, 257, (1, 104), generator=torch.Generator().manual_seed(7))
    ref = _dense_reference_logits(glm4_checkpoint, monkeypatch, ids)
    cache = session.new_cache()
    bounds = [0, 3, 8, 37, 64, 65, 96]
    for first, end in zip(bounds, bounds[1:]):
        logits = session.run_prefill(ids[0, first:end].tolist(), first, cache)
        np.testing.assert_allclose(logits, ref[0, end - 1].numpy(), atol=1e-4, rtol=0)
    for pos in range(96, 104):
        step = session.decode([int(ids[0, pos])], [pos], cache)
        np.testing.assert_allclose(step[0], ref[0, pos].numpy(), atol=1e-4, rtol=0)


def test_decode_step_reads_its_cache_row_in_place(sparse_bundle, glm4_checkpoint, monkeypatch):
    """A decode step's attention reads the pattern's blocks of its row where they lie in the
    cache: no dispatch copies the row (IREE's `slow_memcpy` of a slice picked at run time), and
    a row between two others that hold other prompts decodes as the dense masked reference."""
    from iree_glm.passes import attention_kernel
    from iree_glm.runtime import Session

    out, dump = sparse_bundle
    decode = [p for p in dump.glob("*decode*.mlir") if "iree_glm_attention_" not in p.name]
    assert decode
    if attention_kernel.unavailable_reason() is None:
        copies = [p.name for p in decode if "slow_memcpy" in p.read_text()]
        assert copies == [], copies
    session = Session.load(out)
    ids = torch.randint(0, 257, (3, 60), generator=torch.Generator().manual_seed(11))
    ref = _dense_reference_logits(glm4_checkpoint, monkeypatch, ids[1:2])
    cache = session.new_cache(3)
    for row in (0, 2, 1):
        session.run_prefill(ids[row, :50].tolist(), 0, cache, slot=row)
    for pos in range(50, 60):
        step = session.decode([int(ids[1, pos])], [pos], cache, slots=[1])
        np.testing.assert_allclose(step[0], ref[0, pos].numpy(), atol=1e-4, rtol=0)
