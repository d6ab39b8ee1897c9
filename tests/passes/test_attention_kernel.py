"""The attention-kernel pass (passes/attention_kernel.py) on small input-phase MLIR, and in a bundle.

The rewritten IR calls the AVX2 kernel's dispatch; it computes what IREE's own lowering of the
op computes (to ~1e-5, NaN where that gives NaN): causal masks, fully masked rows, key counts
that are not a multiple of the kernel's key block and row counts that are not a multiple of
its row tile. Bundles built for this host use it and still match transformers.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from iree.compiler import ir
from iree_glm.compiler import kernel_choice
from iree_glm.validation import to_data
from iree_glm.bundle.manifest import read_manifest
from iree_glm.bundle.sparse_pattern import SparsePattern
from iree_glm.compiler.target import Target, host_cpu_target
from iree_glm.passes import attention_kernel
from ..helpers import TESTDATA


SOURCE = (TESTDATA / "attention_gqa.mlir").read_text()


@pytest.fixture(scope="module")
def kernel(tmp_path_factory) -> Path:
    reason = attention_kernel.unavailable_reason()
    if reason:
        pytest.skip(f"attention AVX2 kernel unavailable: {reason}")
    return attention_kernel.build_object(tmp_path_factory.mktemp("attention_kernel"))


@pytest.fixture(scope="module")
def modules(kernel):
    """(rewritten IR text, the two forms compiled for the host as bundles are: kernel, IREE's)."""
    import iree.compiler as ic

    with ir.Context():
        module = ir.Module.parse(SOURCE)
        counts = attention_kernel.run(module, kernel)
        module.operation.verify()
        text = str(module)
    flags = host_cpu_target().compile_args()
    return text, counts, ic.compile_str(text, extra_args=flags), ic.compile_str(SOURCE, extra_args=flags)


def _call(vmfb: bytes, fn: str, *args: np.ndarray) -> np.ndarray:
    import iree.runtime as rt

    ctx = rt.SystemContext(config=rt.Config("local-task"))
    ctx.add_vm_module(rt.VmModule.copy_buffer(ctx.instance, vmfb))
    out = ctx.modules.module[fn](*args)
    return np.asarray(out.to_host() if hasattr(out, "to_host") else out)


def _function(text: str, name: str) -> str:
    body = text[text.index(f"util.func public @{name}("):]
    return body[: body.index("util.return")]


def test_constants_match_the_kernel_source():
    """The dispatch's workgroup count assumes the C kernels' row tile (and their widest head)."""
    enum = re.search(r"enum \{([^}]*)\}", attention_kernel.LAYOUT.read_text()).group(1)
    values = dict((k.strip(), v.strip()) for k, v in (item.split("=") for item in enum.split(",") if "=" in item))
    assert int(values["ROWS"]) == attention_kernel.ROWS and int(values["MAX_D"]) == attention_kernel.MAX_D


def test_rewritten_ir_calls_the_kernel(modules, kernel):
    text, (rewritten, left), _, _ = modules
    assert (rewritten, left) == (3, 1)  # @wide_head (D = 12) is left to IREE
    for fn in ("prefill", "masked", "decode"):
        body = _function(text, fn)
        assert "iree_linalg_ext.attention" not in body and re.search(r"util\.call @iree_glm_attention_\w+\(", body)
    assert "iree_linalg_ext.attention" in _function(text, "wide_head")
    assert f'hal.executable.object<{{path = "{kernel}"}}>' in text
    assert f"func.func private @{attention_kernel.SYMBOL}(" in text and text.count("hal.import.static") == 3
    # The model's broadcast mask: the kernel gets the [1, 1, S, N] position mask, not [H, S*G, N].
    assert re.search(r"util\.call @iree_glm_attention_\w+\(%\w+, %\w+, %\w+, %\w+\) : \(.*tensor<1x1x\?x\?xf32>\)", _function(text, "prefill"))


def _causal(s: int, n: int) -> np.ndarray:
    """[S, N]: the last S of N positions, each seeing the keys at or before it."""
    pos = np.arange(s) + n - s
    return np.where(np.arange(n)[None, :] <= pos[:, None], 0.0, -np.inf).astype(np.float32)


def _qkv(rows: int, n: int, d: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for shape in ((2, rows, d), (2, n, d), (2, n, d))]


@pytest.mark.parametrize("s,n", [(5, 70), (37, 150), (1, 1), (64, 64), (40, 40), (33, 97)])
def test_prefill_matches_iree_on_a_causal_mask(modules, s, n):
    """The model's form (2 query rows per position): row counts 10, 74, 2, 128, 80 and 66, key
    counts around the kernel's 64-key block; the first chunk of a prompt (S = N: every tile's
    last block is its causal diagonal, trimmed) and later ones (a diagonal across a block edge)."""
    _, _, ours, theirs = modules
    q, k, v = _qkv(2 * s, n, seed=s)
    pmask = _causal(s, n)[None, None]
    got, want = _call(ours, "prefill", q, k, v, pmask), _call(theirs, "prefill", q, k, v, pmask)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_any_mask_with_fully_masked_rows_matches_iree(modules):
    """A random mask, whole rows masked (also in a block the other rows see): what IREE gives, NaN included."""
    _, _, ours, theirs = modules
    rng = np.random.default_rng(3)
    q, k, v = _qkv(45, 131, seed=3)
    mask = np.where(rng.random((2, 45, 131)) < 0.5, 0.0, -np.inf).astype(np.float32)
    mask += rng.standard_normal(mask.shape).astype(np.float32)  # finite additive biases too
    mask[0, 7, :] = -np.inf
    mask[1, 40:, :] = -np.inf
    mask[:, 10:20, :64] = -np.inf  # a key block fully masked for some rows of a tile only
    got, want = _call(ours, "masked", q, k, v, mask), _call(theirs, "masked", q, k, v, mask)
    assert np.isnan(want[0, 7]).all()  # what the op gives on a row with no visible key
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # NaN where IREE has NaN, and only there


def test_mask_forms_the_kernel_shortcuts_match_iree(modules):
    """The kernel adds no mask to a key block that is 0 for all of a tile's rows and trims keys
    past the last one a row sees: a single finite bias in one row of an otherwise zero block,
    -0.0 entries, a hole of -inf keys followed by visible ones, and trailing keys hidden from
    all rows (key counts 1 and 2 past a multiple of 3, the kernel's score tile) must not change
    what is computed."""
    _, _, ours, theirs = modules
    for n in (130, 131):
        q, k, v = _qkv(45, n, seed=n)
        mask = np.zeros((2, 45, n), np.float32)
        mask[0, 3, 5] = -2.0  # one row's bias in a block that is 0 everywhere else
        mask[1, :, 10:20] = -0.0
        mask[:, 8:16, 40:70] = -np.inf  # a hole across a block edge, keys after it visible
        mask[:, :, n - 7:] = -np.inf  # the last keys hidden from every row
        mask[1, 44, n - 7] = 0.5  # ... but one, for one row
        got, want = _call(ours, "masked", q, k, v, mask), _call(theirs, "masked", q, k, v, mask)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_far_apart_scores_and_finite_masks_match_iree(modules):
    """Softmax terms hundreds below a row's largest (wide scores, finite masks down to -1000): the
    kernel's base-2 exp clamps and flushes them to 0 where IREE's exp underflows."""
    _, _, ours, theirs = modules
    rng = np.random.default_rng(9)
    q, k, v = _qkv(45, 131, seed=9)
    q *= 25  # scores with a standard deviation of ~25: differences past exp's range within a row
    mask = rng.choice(np.array([0.0, -30.0, -100.0, -1000.0], np.float32), size=(2, 45, 131))
    got, want = _call(ours, "masked", q, k, v, mask), _call(theirs, "masked", q, k, v, mask)
    assert np.isfinite(want).all()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_decode_form_matches_iree(modules):
    _, _, ours, theirs = modules
    q, k, v = _qkv(4, 77, seed=5)
    mask = np.broadcast_to(_causal(1, 77)[None], (2, 4, 77)).copy()
    mask[:, :, 70:] = -np.inf
    np.testing.assert_allclose(_call(ours, "decode", q, k, v, mask), _call(theirs, "decode", q, k, v, mask), rtol=1e-5, atol=1e-5)


def _attention_choice(target, extra_flags=(), dtype="f32", sparse=None, staged=False, wanted=True):
    return kernel_choice.choose(kernel_choice.KernelRequest(target, extra_flags, "none", "int8", "none", dtype, sparse, staged,
                                                            wanted, True, True)).attention


def _host_attention() -> dict:
    """The manifest entry of the host's attention kernel: its kernel set's form (kernels/toolchain.py),
    e.g. the AVX-512 one on an AVX-512 machine."""
    kernel_set, _ = kernel_choice.kernel_set_for(host_cpu_target(), ())
    provider = kernel_set.provider("attention")
    return {"kernel": provider.short, "kernel_set": provider.name, "features": list(provider.features)}


def test_kernel_only_where_it_applies():
    """Other backends, cross targets, non-f32 activations, block-sparse attention over a ring
    cache, multi-device plans and the profile's switch keep IREE's lowering, and say why."""
    host = host_cpu_target()
    reason = attention_kernel.unavailable_reason()
    expected = {"kernel": "iree", "reason": reason} if reason else _host_attention()
    assert to_data(_attention_choice(host)) == expected
    cases = [
        (dict(target=Target("vulkan-spirv", "vulkan")), "backend vulkan-spirv"),
        (dict(target=host, extra_flags=("--iree-llvmcpu-target-triple=aarch64-linux-android",)), "target aarch64"),
        (dict(target=host, dtype="bf16"), "activation dtype bf16"),
        (dict(target=host, sparse=SparsePattern(256, 16, 64, ring=320)), "sliding-window (ring)"),
        (dict(target=host, extra_flags=("--iree-llvmcpu-target-triple=aarch64-linux-android",), sparse=SparsePattern(256, 16, 64)),
         "block-sparse attention: target aarch64"),
        (dict(target=host, staged=True), "multi-device"),
        (dict(target=host, wanted=False), "attention_kernel = false"),
    ]
    for kwargs, why in cases:
        choice = _attention_choice(**kwargs)
        assert choice.kernel == "iree" and why in choice.reason
    if not reason:  # block-sparse attention is the kernel told the pattern
        sparse = _attention_choice(host, sparse=SparsePattern(256, 16, 64))
        assert to_data(sparse) == {**expected, "sparse": "local=256,global=16"}


def test_bundle_prefill_calls_the_kernel_and_matches_transformers(glm4_bundle, glm4_checkpoint):
    """The default host bundle: manifest says which form, the module holds the kernel's
    dispatch, and a 100-token prefill (rows past one tile, keys past one block) matches
    transformers' logits."""
    from iree_glm.runtime import Session

    manifest = read_manifest(glm4_bundle)
    choice = manifest.options.attention_kernel
    if attention_kernel.unavailable_reason():
        assert choice.kernel == "iree"
        pytest.skip("attention AVX2 kernel unavailable here")
    # 2 layers x (prefill, embed, verify); decode steps attend with model.decode_attention's reductions (no attention op)
    assert to_data(choice) == {**_host_attention(), "rewritten": 6, "left_to_iree": 0}
    assert b"iree_glm_attention_" in (glm4_bundle / "model.vmfb").read_bytes()
    prompt = [int(t) for t in np.random.default_rng(0).integers(0, 257, 100)]
    with torch.no_grad():
        want = glm4_checkpoint[1](torch.tensor([prompt])).logits[0, -1].numpy()
    session = Session.load(glm4_bundle)
    got = session.run_prefill(prompt, 0, session.new_cache())
    assert np.abs(got - want).max() < 1e-4


@pytest.fixture(scope="module")
def exact_verify(kernel):
    """@prefill's attention as an exact bundle's `verify`: a call of the flash kernel, as everywhere."""
    import iree.compiler as ic

    with ir.Context():
        module = ir.Module.parse(SOURCE.replace("@prefill(", "@verify("))
        counts = attention_kernel.run(module, kernel)
        module.operation.verify()
        text = str(module)
    return text, counts, ic.compile_str(text, extra_args=host_cpu_target().compile_args())


def test_verify_calls_the_flash_kernel_as_every_function_does(exact_verify):
    """No kernel of its own: the flash kernel's rows do not depend on the call (next test)."""
    text, counts, _ = exact_verify
    assert counts == (3, 1)
    calls = {fn: re.search(r"util\.call @(iree_glm_attention_\w+)\(", _function(text, fn)).group(1) for fn in ("verify", "masked", "decode")}
    definition = lambda name: text[text.index(f"stream.executable private @{name}_exe"):].split("util.func")[0]  # noqa: E731
    assert all(f"call @{attention_kernel.SYMBOL}(" in definition(calls[fn]) for fn in ("verify", "masked", "decode"))


def test_exact_verify_rows_are_one_row_calls_bit_for_bit(exact_verify, modules):
    """Through IREE: row r of an R-row call (positions start.., keys up to the last one) equals the
    one-row call at its position over its own keys, and matches IREE's lowering of the op."""
    _, _, vmfb = exact_verify
    theirs = modules[3]
    start, group, most = 60, 2, 9  # rows across the flash kernel's 64-key block edge
    q, k, v = _qkv(group * most, start + most, seed=3)
    one = [_call(vmfb, "verify", q[:, group * i:group * i + group].copy(), k[:, :start + i + 1].copy(), v[:, :start + i + 1].copy(),
                 _causal(1, start + i + 1)[None, None]) for i in range(most)]
    for rows in range(1, most + 1):
        n = start + rows
        args = (q[:, :group * rows].copy(), k[:, :n].copy(), v[:, :n].copy(), _causal(rows, n)[None, None])
        got = _call(vmfb, "verify", *args)
        np.testing.assert_allclose(got, _call(theirs, "prefill", *args), rtol=1e-5, atol=1e-5)
        for i in range(rows):
            assert np.array_equal(got[:, group * i:group * i + group], one[i]), f"{rows}-row call, row {i}"
