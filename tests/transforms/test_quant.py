"""Quantized bundles: packed weights in the .irpa, fused dispatches, logits close to fp32.

The dispatch check reads the executable sources IREE dumps: every quantized weight must be
read as i8 by some dispatch, and no dispatch may read or write an fp32 tensor shaped like a
dequantized weight, so a silent fallback to dequantize-then-matmul fails here. The int8 bundle
is built with `int8_activations="prefill"`: its prefill must run i8 x i8 -> i32 mmt4d dispatches
and none of them may read a layer's stored [N/16, K, 16] bytes (the per-row dequant form).
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from iree_glm.compiler.build import BuildOptions, build_bundle
from iree_glm.frontend.checkpoint import load_model, open_checkpoint
from iree_glm.kernels import int4 as int4_kernel
from iree_glm.errors import UserError
from iree_glm.transforms.quantize import QuantLinear, QuantSpec, quantize_model
from iree_glm.runtime.session import Session
from iree_glm.validation import to_data
from ..helpers import TESTDATA


BINDING = re.compile(r"tensor<(readonly|writeonly|readwrite):tensor<([0-9x?]+)x(i8|f32)>>")


def _dims(shape) -> str:
    return "x".join(str(int(d)) for d in shape)


def weight_shapes(model: torch.nn.Module) -> list[tuple[str, list[str]]]:
    """For each quantized layer: its packed i8 shape and the fp32 shapes a dequantized copy would have."""
    out = []
    for m in model.modules():
        if isinstance(m, QuantLinear):
            q = m.qweight.shape
            if m.mode == "int8":  # [N/16, K, 16]
                n, k, d = q[0] * q[-1], m.in_features, (*q[:2], 2, *q[2:])
            else:  # int4 [N, K/G, G/2]
                n, k, d = q[0], m.in_features, (*q[:2], 2, q[2])
            out.append((_dims(q), [_dims(q), _dims((k, n)), _dims((n, k)), _dims(d)]))
    return out


def dispatch_violations(dump: Path, shapes: list[tuple[str, list[str]]], read_packed: bool = True) -> list[str]:
    """Problems in a `--iree-hal-dump-executable-sources-to` folder (empty list: all fused).
    `read_packed=False`: the packed weights are read by our kernels' dispatches (memrefs, not
    tensors), so only the absence of fp32 weight copies is checked."""
    bindings = []
    for f in sorted(dump.glob("*dispatch*.mlir")):
        bindings += [(f.name, *b) for b in BINDING.findall(f.read_text())]
    problems = []
    for packed, fp32_forms in shapes:
        if read_packed and not any(t == "i8" and s == packed and access == "readonly" for _, access, s, t in bindings):
            problems.append(f"no dispatch reads the packed i8 weight {packed}")
        for name, access, s, t in bindings:
            if t == "f32" and s in fp32_forms:
                problems.append(f"{name} has an fp32 weight-shaped binding {access} {s}")
    return problems


def _logits(session: Session, ids: list[int], steps: int) -> tuple[np.ndarray, list[int]]:
    """Greedy: prefill then `steps` decode calls; returns logits [steps + 1, V] and the tokens."""
    cache = session.new_cache()
    rows, tokens = [session.run_prefill(ids, 0, cache)], []
    for i in range(steps):
        tokens.append(int(rows[-1].argmax()))
        rows.append(session.decode([tokens[-1]], [len(ids) + i], cache)[0])
    return np.stack(rows), tokens


def _eager_logits(model, ids: list[int], tokens: list[int]) -> np.ndarray:
    seq = torch.tensor([ids + tokens])
    k, v = model.empty_cache(1, seq.shape[1])
    with torch.no_grad():
        logits, _, _ = model.all_logits(seq, torch.zeros(1, dtype=torch.int64), k, v)
    return logits[0, len(ids) - 1 :].numpy()


def _int8_options(dump: Path) -> BuildOptions:
    """The int8 bundle's options, its executables' sources dumped into `dump`."""
    return BuildOptions(max_context=64, quant=QuantSpec("int8"), int8_activations="prefill",
                        extra_flags=(f"--iree-hal-dump-executable-sources-to={dump}",))


@pytest.fixture(scope="module")
def int8_bundle(glm4_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("quant8")
    dump = root / "sources"
    result = build_bundle(glm4_checkpoint[0], root / "bundle", _int8_options(dump))
    return result, dump


@pytest.fixture(scope="module")
def fp32_model(glm4_checkpoint):
    return load_model(open_checkpoint(glm4_checkpoint[0])).fuse_qkv()  # as build_bundle does


PROMPT = [5, 17, 99, 3, 42, 8, 230, 61]


# int4 prompts on the AMX set multiply bf16-rounded x and weights (8-bit mantissas): the tiny
# model's logits moved by at most ~0.02 (docs/accuracy.md); the bound of --compute-dtype bf16's tests.
BF16_PROMPT_BOUND = 0.05


def _host_set():
    """The kernel set a host bundle on this machine links (the best one this CPU runs), or None."""
    from iree_glm.kernels import target_cpu, toolchain

    kernel_set, _ = toolchain.select(target_cpu.from_flags(["--iree-llvmcpu-target-cpu=host"]))
    return kernel_set if kernel_set is not None and toolchain.unavailable_reason(kernel_set) is None else None


def _ours(kernel: str, **extra) -> dict:
    """The manifest's KernelChoice for `kernel` on the host's kernel set (the set holding its code:
    the AMX set's attention is the AVX2 set's), with `extra` fields."""
    s = _host_set().provider(kernel)
    return {"kernel": s.short, "kernel_set": s.name, "features": list(s.features), **extra}


def _assert_links(dump, pattern: str, kernel: str) -> None:
    """Every kernel executable matching `pattern` links the host set's object of `kernel` (e.g.
    int8_avx512.o on an AVX-512 VNNI CPU, not the AVX2 one; the set holding the kernel's code)."""
    obj = f"{kernel}_{_host_set().provider(kernel).short}.o"
    files = sorted(dump.glob(pattern))
    assert files and all(obj in f.read_text() for f in files), f"{pattern} does not link {obj}"


def _int8_kernel(result) -> bool:
    """Whether the bundle's int8 decode matmuls call our kernels (checked against the host)."""
    used = result.manifest.options.int8_kernel.kernel not in ("generic", "none")
    assert used == (_host_set() is not None)
    return used


def test_int8_dispatches_read_packed_bytes(int8_bundle, fp32_model):
    result, dump = int8_bundle
    qmodel = quantize_model(copy.deepcopy(fp32_model), QuantSpec("int8"))
    shapes = weight_shapes(qmodel)
    assert len(shapes) == 2 * 4 + 1  # qkv, o, gate_up, down per layer + head
    assert dispatch_violations(dump, shapes, read_packed=not _int8_kernel(result)) == []


def test_int8_runs_the_kernels(int8_bundle, fp32_model):
    """On an AVX2 host every int8 matmul is a kernel dispatch: one-row calls (decode's layers
    and head, prefill's last-row head) the matrix-vector kernel; the prompt's layers (integer
    matmuls, `int8_activations="prefill"`) a quantization dispatch per input size and the matrix
    kernel. One executable per weight shape links the object, and no generated dispatch reads a
    stored [N/16, K, 16] weight (a silent fallback to the generic form or mmt4d fails here)."""
    result, dump = int8_bundle
    if not _int8_kernel(result):
        pytest.skip("our int8 kernels are unavailable on this host")
    assert to_data(result.manifest.options.int8_kernel) == _ours("int8", decode="matvec", prefill="matmul", quantize_glue=_glue_counts(fp32_model))
    _assert_links(dump, "*iree_glm_int8_matvec_*.mlir", "int8")
    qmodel = quantize_model(copy.deepcopy(fp32_model), QuantSpec("int8"))
    shape = lambda m: (m.in_features, m.qweight.shape[0] * m.qweight.shape[2])  # noqa: E731
    layers = {shape(m) for m in qmodel.model.layers.modules() if isinstance(m, QuantLinear)}
    kernels = sorted(f.name for f in dump.glob("*iree_glm_int8_matvec_*.mlir"))
    want = [f"module_iree_glm_int8_matvec_{k}x{n}{rows}_exe.mlir" for k, n in layers for rows in ("", "_mdyn")]
    assert kernels == sorted(want + ["module_iree_glm_int8_matvec_{}x{}_exe.mlir".format(*shape(qmodel.lm_head))])
    quantize = sorted(f.name for f in dump.glob("*iree_glm_int8_quantize_*.mlir"))
    assert quantize == sorted(f"module_iree_glm_int8_quantize_{k}_mdyn{glue}_exe.mlir"
                              for k, glue in _quantize_inputs(fp32_model, "_silu_mul_scaled"))
    _assert_glue_fused(dump)
    for f in [*dump.glob("*iree_glm_int8_matvec_*.mlir"), *dump.glob("*iree_glm_int8_quantize_*.mlir")]:
        assert "hal.import.static" in f.read_text()
    packed = {_dims(m.qweight.shape) for m in qmodel.modules() if isinstance(m, QuantLinear)}
    for f in dump.glob("*dispatch*.mlir"):
        if f.name.startswith("module_verify$"):  # speculative verify multiplies as decode does (docs/speculative.md)
            continue
        read = {s for _, s, ty in BINDING.findall(f.read_text()) if ty == "i8"}
        assert not read & packed, f"{f.name} reads a packed int8 weight in generated code"
        assert "linalg.mmt4d" not in f.read_text(), f"{f.name}: an mmt4d dispatch"


def _glue_counts(model) -> dict[str, int]:
    """The kernels' quantizations computing their input per layer of each prompt function
    (prefill and embed): RMSNorm before q/k/v and gate/up, silu(gate) * up before down; o's
    input (attention) is plain."""
    layers = 2 * model.cfg.num_layers
    return {"rms_norm": 2 * layers, "silu_mul": layers, "none": layers}


def _quantize_inputs(model, silu: str) -> set[tuple[int, str]]:
    """(K, name suffix) of the quantization executables a prompt's layers use."""
    import struct

    c = model.cfg
    eps = struct.unpack("<I", struct.pack("<f", c.rms_norm_eps))[0]
    return {(c.hidden_size, f"_rms_norm_{eps:08x}"), (c.intermediate_size, silu), (c.num_heads * c.head_dim, "")}


def _assert_glue_fused(dump: Path) -> None:
    """No dispatch IREE generates for prefill computes the sigmoid of silu (it moved into the kernels' quantization)."""
    prefill = list(dump.glob("*prefill*dispatch*.mlir"))
    assert prefill
    for f in prefill:
        assert "math.exp" not in f.read_text(), f"{f.name} computes silu: the glue was not fused"


def test_int8_decode_dispatches_carry_our_cpu_tiles(int8_bundle):
    """Without the kernel, every decode dispatch reading a packed [N/16, K, 16] weight has the
    pass's tile sizes."""
    result, dump = int8_bundle
    if _int8_kernel(result):
        pytest.skip("int8 decode calls our kernel (the tiles are tested on the pass, test_dequant_matmul.py)")
    packed = [f for f in dump.glob("*decode*dispatch*.mlir")
              if any(t == "i8" and s.count("x") == 2 for _, s, t in BINDING.findall(f.read_text()))]
    # qkv and gate_up are both [12, 64, 16], o and down both [4, 96, 16] (one executable per shape;
    # the head may be shared with prefill)
    assert len(packed) >= 2
    for f in packed:
        assert "vector_common_parallel = [" in f.read_text() and "vector_reduction = [0, 0, 1]" in f.read_text(), f.name


def test_int8_bundle_size_and_manifest(int8_bundle):
    result, _ = int8_bundle
    o = result.manifest.options
    assert to_data(o.quant) == {"mode": "int8", "head": "int8", "embeddings": "int8", "int8_activations": "prefill"}
    assert o.int8_kernel.kernel in ("avx2", "avx512", "amx", "generic")
    irpa = result.bundle / "weights.irpa"
    assert abs(irpa.stat().st_size - o.parameter_bytes) < 0.05 * o.parameter_bytes + 65536
    # Tiny test model: every table int8, plus fp32 norms, biases and per-row scales.
    assert 0.25 < o.compression_vs_fp32 < 0.32


def test_a_second_int8_build_writes_the_same_module(int8_bundle, glm4_checkpoint, tmp_path):
    """Builds are reproducible: nothing of a build's temporary folders (the configurations
    compiler/exact_rows.py reads, the sources dump) is compiled into the module."""
    result, _ = int8_bundle
    verify = next(ep for ep in result.manifest.entry_points if ep.name == "verify")
    assert verify.exact_rows  # the build dumped and read the configurations
    again = build_bundle(glm4_checkpoint[0], tmp_path / "bundle", _int8_options(tmp_path / "sources"))
    module = (result.bundle / "model.vmfb").read_bytes()
    assert b"/iree_glm-" not in module  # no temporary folder's path (their prefix)
    assert (again.bundle / "model.vmfb").read_bytes() == module


def test_embeddings_int8_by_default_none_keeps_fp32(fp32_model):
    from iree_glm.cli.compile import parse_args
    from iree_glm.transforms.quantize import QuantEmbedding

    assert parse_args(["-o", "b", "--quant", "int8"]).quant_embeddings == "int8"
    table = fp32_model.model.embed_tokens
    kept = quantize_model(copy.deepcopy(fp32_model), QuantSpec("int8", embeddings="none"))
    assert type(kept.model.embed_tokens) is torch.nn.Embedding
    quant = quantize_model(copy.deepcopy(fp32_model), QuantSpec("int4"))
    emb = quant.model.embed_tokens
    assert isinstance(emb, QuantEmbedding) and emb.qweight.dtype == torch.int8
    ids = torch.arange(table.num_embeddings)
    with torch.no_grad():
        err = (emb(ids) - table(ids)).abs()
    assert (err <= emb.scale[:, None] / 2 + 1e-7).all() and err.max() > 0  # rounded to the row's step on gather


def test_tied_model_keeps_an_fp32_head_with_int8_embeddings(tmp_path):
    from ..helpers import write_hf_checkpoint

    write_hf_checkpoint("glm_tied", tmp_path / "tied")
    model = load_model(open_checkpoint(tmp_path / "tied"))
    assert model.cfg.tie_word_embeddings
    x = torch.randn(3, model.cfg.hidden_size)
    with torch.no_grad():
        want = model.project(x)
        quant = quantize_model(copy.deepcopy(model), QuantSpec("int8", head="none"))
        torch.testing.assert_close(quant.project(x), want, rtol=0, atol=0)
    assert quant.model.embed_tokens.qweight.dtype == torch.int8


def _integer_prefill_logits(model, ids: list[int], tokens: list[int], kernel: bool) -> np.ndarray:
    """Eager reference of an `int8_activations="prefill"` bundle: the prompt's layers multiply
    per-row int8 activations (QuantLinear.integer_rows), decode steps and the one-row head do not;
    with the int8 `kernel`, one-row matmuls quantize x per block of 32 (quantized_activations)."""
    layers = [m for m in model.model.layers.modules() if isinstance(m, QuantLinear)]
    for m in model.modules():
        if isinstance(m, QuantLinear):
            m.quantized_activations = kernel
    k, v = model.empty_cache(1, len(ids) + len(tokens))
    with torch.no_grad():
        for m in layers:
            m.integer_rows, m.quantized_activations = True, False
        rows = [model.all_logits(torch.tensor([ids]), torch.zeros(1, dtype=torch.int64), k, v)[0][0, -1]]
        for m in layers:
            m.integer_rows, m.quantized_activations = False, kernel
        for i, t in enumerate(tokens):
            rows.append(model.all_logits(torch.tensor([[t]]), torch.tensor([len(ids) + i]), k, v)[0][0, -1])
    return torch.stack(rows).numpy()


def test_int8_prefill_runs_integer_mmt4d(int8_bundle, fp32_model):
    """Without the matrix kernel, prefill multiplies i8 x i8 -> i32 (IREE's mmt4d); no prefill
    dispatch reads a layer's stored weight bytes, which only the per-row dequant fallback would do."""
    result, dump = int8_bundle
    if _int8_kernel(result):
        pytest.skip("int8 prompts call our matrix kernel (test_int8_runs_the_kernels)")
    qmodel = quantize_model(copy.deepcopy(fp32_model), QuantSpec("int8"))
    head = _dims(qmodel.lm_head.qweight.shape)
    layer_shapes = {packed for packed, _ in weight_shapes(qmodel)} - {head}
    assert layer_shapes
    prefill = sorted(dump.glob("*prefill*dispatch*.mlir"))
    integer = [f for f in prefill if any("linalg.mmt4d" in line and line.count("xi8>") == 2 and "xi32>" in line
                                         for line in f.read_text().splitlines())]
    assert integer, "no i8 x i8 -> i32 mmt4d dispatch in prefill"
    for f in prefill:
        for access, s, t in BINDING.findall(f.read_text()):
            assert not (t == "i8" and s in layer_shapes), f"{f.name} reads stored weight bytes {s} (per-row dequant form)"


def test_int8_logits_match_eager_and_stay_close_to_fp32(int8_bundle, fp32_model):
    result, _ = int8_bundle
    session = Session.load(result.bundle)
    got, tokens = _logits(session, PROMPT, 6)
    qmodel = quantize_model(copy.deepcopy(fp32_model), QuantSpec("int8"))
    want_q = _integer_prefill_logits(qmodel, PROMPT, tokens, _int8_kernel(result))
    want_fp = _eager_logits(fp32_model, PROMPT, tokens)
    # The bundle computes the same model as torch eager (integer prompt, weight-only decode).
    np.testing.assert_allclose(got, want_q, atol=2e-4, rtol=1e-4)
    # int8 vs fp32: measured max |diff| ~1e-2 on logits of magnitude ~1 (tiny random model).
    scale = np.abs(want_fp).max()
    assert np.abs(got - want_fp).max() < 0.03 * scale
    assert (got.argmax(-1) == want_fp.argmax(-1)).mean() >= 0.85


def test_an_amx_host_bundle_gives_the_avx512_sets_numbers(int8_bundle, glm4_checkpoint, tmp_path_factory):
    """On a CPU with AMX a host bundle's prompt matmuls link int8_amx.o, and the tile kernel's
    exact sums give what the AVX-512 set's bundle gives: equal logits, the same greedy tokens
    (a prompt of 2 full 16-row tiles and a partial one)."""
    from iree_glm.kernels import toolchain

    if _host_set() is not toolchain.X86_64_AMX:
        pytest.skip(f"no AMX set here: {toolchain.host_reason(toolchain.X86_64_AMX) or 'the host set is another'}")
    result, dump = int8_bundle
    _assert_links(dump, "*iree_glm_int8_matvec_*_mdyn_exe.mlir", "int8")
    opts = BuildOptions(max_context=64, quant=QuantSpec("int8"), int8_activations="prefill", kernel_set="x86_64_avx512")
    _assert_same_as_the_avx512_sets(result, "int8_kernel", build_bundle(glm4_checkpoint[0], tmp_path_factory.mktemp("quant8_avx512") / "bundle", opts))


def _assert_same_as_the_avx512_sets(result, kernel: str, avx512) -> None:
    """The AMX host bundle `result` gives the logits and greedy tokens of `avx512`, the same
    build on the AVX-512 set (manifest field `kernel` names each set), over a prompt of 2 full
    16-row tiles and a partial one."""
    assert getattr(avx512.manifest.options, kernel).kernel_set == "x86_64_avx512"
    assert getattr(result.manifest.options, kernel).kernel_set == "x86_64_amx"
    prompt = [(i * 37) % 200 + 1 for i in range(40)]
    got, tokens = _logits(Session.load(result.bundle), prompt, 4)
    want, want_tokens = _logits(Session.load(avx512.bundle), prompt, 4)
    assert tokens == want_tokens
    np.testing.assert_array_equal(got, want)


def test_int8_decode_matches_eager(int8_bundle, fp32_model):
    """Decode calls (one row), fed the prompt token by token, match the eager model: weight-only
    (f32 activations) for the generic form; with the kernel, x quantized per block of 32 (and
    that really changed the numbers: a generic fallback would not)."""
    result, _ = int8_bundle
    session = Session.load(result.bundle)
    # The `decode` function itself: where the bundle has exact verify rows, plain decode steps are
    # one-row verify calls, whose x may differ in a last bit and round one activation of a block
    # the other way (up to ~1e-2 here: docs/speculative.md, "Exactness").
    session._exact_rows = 0
    cache = session.new_cache()
    got = np.stack([session.decode([t], [i], cache)[0] for i, t in enumerate(PROMPT)])
    qmodel = quantize_model(copy.deepcopy(fp32_model), QuantSpec("int8"))
    plain = _eager_logits(qmodel, PROMPT[:1], PROMPT[1:])
    kernel = _int8_kernel(result)
    for m in qmodel.modules():
        if isinstance(m, QuantLinear):
            m.quantized_activations = kernel
    want = _eager_logits(qmodel, PROMPT[:1], PROMPT[1:])
    # With the kernel, IREE's and torch's float sums before a run-time quantization differ in last
    # bits, and once one activation of a block rounds the other way every later step (through
    # the KV cache) moves by up to ~2e-2: on an AVX2-only Zen 3 from the 5th step on, and the
    # eager model alone moves as much when its norm weights are scaled by 1 -/+ 2^-21..2^-20.
    # So the first steps must match, and the rest stay within that.
    same = np.isclose(got, want, atol=2e-4, rtol=1e-4).all(axis=1)
    assert same[:2].all(), f"decode steps 0-1 differ from the eager model by {np.abs(got - want)[:2].max():.2e}"
    assert same.all() or (kernel and np.abs(got - want).max() < 5e-2), f"decode drifted by {np.abs(got - want).max():.2e}"
    if kernel:
        assert np.abs(got - plain)[:2].max() > 1e-4


INT4 = QuantSpec("int4", group_size=32, embeddings="int8")


@pytest.fixture(scope="module")
def int4_bundle(glm4_checkpoint, tmp_path_factory):
    """int4 layers (every matmul fused, or build_bundle raises) plus int8 embeddings (a gather)."""
    root = tmp_path_factory.mktemp("quant4")
    dump = root / "sources"
    opts = BuildOptions(max_context=64, quant=INT4, extra_flags=(f"--iree-hal-dump-executable-sources-to={dump}",))
    return build_bundle(glm4_checkpoint[0], root / "b4", opts), dump


def _int4_kernel_expected() -> bool:
    return _host_set() is not None


def test_int4_dispatches_read_packed_bytes(int4_bundle, fp32_model):
    result, dump = int4_bundle
    assert to_data(result.manifest.options.quant) == {"mode": "int4", "head": "int8", "embeddings": "int8", "group_size": 32,
                                                "int8_activations": "prefill"}  # the profile's, for the int8 head
    shapes = weight_shapes(quantize_model(copy.deepcopy(fp32_model), INT4))
    kernel = result.manifest.options.int4_kernel.ours
    assert dispatch_violations(dump, shapes, read_packed=not kernel) == []


def test_int4_runs_the_kernels(int4_bundle, fp32_model):
    """On an AVX2 host every int4 matmul is a kernel dispatch: per layer shape one executable
    for decode (M=1) and one for prefill (dynamic M, after a quantization dispatch per input
    size) link the object, and no generated dispatch reads a packed int4 weight (a silent
    fallback to the generic form fails here)."""
    result, dump = int4_bundle
    if not _int4_kernel_expected():
        assert result.manifest.options.int4_kernel.kernel == "generic"
        pytest.skip("our int4 kernels are unavailable on this host")
    assert to_data(result.manifest.options.int4_kernel) == _ours("int4", quantize_glue=_glue_counts(fp32_model))
    _assert_links(dump, "*iree_glm_int4_matvec_*.mlir", "int4")
    qmodel = quantize_model(copy.deepcopy(fp32_model), INT4)
    layers = {(m.in_features, m.qweight.shape[0]) for m in qmodel.modules() if isinstance(m, QuantLinear) and m.mode == "int4"}
    kernels = sorted(dump.glob("*iree_glm_int4_matvec_*.mlir"))
    assert sorted(f.name for f in kernels) == sorted(
        f"module_iree_glm_int4_matvec_{k}x{n}g32{rows}_exe.mlir" for k, n in layers for rows in ("", "_mdyn"))
    # x's rows, once per input size: quantized to int8 blocks, or on the AMX set converted to bf16
    wide = _host_set().name in int4_kernel.BF16_PROMPT_SETS
    rows = "iree_glm_int4_convert_bf16_{k}" if wide else "iree_glm_int4_quantize_{k}g32"
    quantize = sorted(f.name for f in dump.glob(f"*{rows.format(k='*')}_*.mlir"))
    # speculative verify: a set with few-row kernels (verify_rows) runs decode's kernel per row (no
    # quantization dispatch); otherwise verify quantizes IREE's x as decode does: plain ones per input size
    c = fp32_model.cfg
    verify = set() if _host_set().verify_rows else {(k, "") for k in (c.hidden_size, c.intermediate_size, c.num_heads * c.head_dim)}
    assert quantize == sorted(f"module_{rows.format(k=k)}_mdyn{glue}_exe.mlir" for k, glue in _quantize_inputs(fp32_model, "_silu_mul") | verify)
    _assert_glue_fused(dump)
    for f in kernels:
        assert "hal.import.static" in f.read_text() and "iree_glm_int4_mat" in f.read_text()
    head = qmodel.lm_head  # int8: its one-row calls run the int8 kernel
    assert to_data(result.manifest.options.int8_kernel) == _ours("int8", decode="matvec")
    assert [f.name for f in dump.glob("*iree_glm_int8_matvec_*.mlir")] == [
        f"module_iree_glm_int8_matvec_{head.in_features}x{head.qweight.shape[0] * 16}_exe.mlir"]
    int4_packed = {_dims(m.qweight.shape) for m in qmodel.modules() if isinstance(m, QuantLinear) and m.mode == "int4"}
    for f in dump.glob("*dispatch*.mlir"):
        if f.name.startswith("module_verify$"):  # speculative verify multiplies as decode does (docs/speculative.md)
            continue
        read = {s for _, s, ty in BINDING.findall(f.read_text()) if ty == "i8"}
        assert not read & int4_packed, f"{f.name} reads a packed int4 weight in generated code"


def test_an_amx_host_int4_bundle_is_within_the_bf16_bound_of_the_avx512_sets(int4_bundle, glm4_checkpoint, tmp_path_factory):
    """On a CPU with AMX a host int4 bundle links int4_amx.o, whose prompts run in bf16 (x and the
    widened weights rounded to bf16, docs/accuracy.md): the prefill's logits are within
    BF16_PROMPT_BOUND of the AVX-512 set's bundle (x in int8 blocks) but not equal, and the greedy
    tokens are the same (a prompt of 2 full 16-row blocks and a partial one)."""
    from iree_glm.kernels import toolchain

    if _host_set() is not toolchain.X86_64_AMX:
        pytest.skip(f"no AMX set here: {toolchain.host_reason(toolchain.X86_64_AMX) or 'the host set is another'}")
    result, dump = int4_bundle
    _assert_links(dump, "*iree_glm_int4_matvec_*_mdyn_exe.mlir", "int4")
    avx512 = build_bundle(glm4_checkpoint[0], tmp_path_factory.mktemp("quant4_avx512") / "bundle",
                          BuildOptions(max_context=64, quant=INT4, kernel_set="x86_64_avx512"))
    assert avx512.manifest.options.int4_kernel.kernel_set == "x86_64_avx512"
    assert result.manifest.options.int4_kernel.kernel_set == "x86_64_amx"
    prompt = [(i * 37) % 200 + 1 for i in range(40)]
    got, tokens = _logits(Session.load(result.bundle), prompt, 4)
    want, want_tokens = _logits(Session.load(avx512.bundle), prompt, 4)
    assert tokens == want_tokens
    assert 0 < np.abs(got - want).max() < BF16_PROMPT_BOUND


def _stepwise_logits(model, ids: list[int], tokens: list[int], quantized_activations: bool) -> np.ndarray:
    """Eager prefill of `ids`, then one call per token (M = 1, as decode runs); int4 layers
    quantize their input like the CPU kernel when `quantized_activations`."""
    for m in model.modules():
        if isinstance(m, QuantLinear):
            m.quantized_activations = quantized_activations
    k, v = model.empty_cache(1, len(ids) + len(tokens))
    with torch.no_grad():
        rows = [model.all_logits(torch.tensor([ids]), torch.zeros(1, dtype=torch.int64), k, v)[0][0, -1]]
        for i, tok in enumerate(tokens):
            rows.append(model.all_logits(torch.tensor([[tok]]), torch.tensor([len(ids) + i]), k, v)[0][0, -1])
    return torch.stack(rows).numpy()


def test_int4_logits_match_eager(int4_bundle, fp32_model):
    result, _ = int4_bundle
    session = Session.load(result.bundle)
    got, tokens = _logits(session, PROMPT, 3)
    qmodel = quantize_model(copy.deepcopy(fp32_model), INT4)
    kernel = result.manifest.options.int4_kernel.ours
    # With the kernels, torch's model of them (x quantized per block of 32) matches closely;
    # without, the generic fused form computes the weight-only int4 model.
    want = _stepwise_logits(qmodel, PROMPT, tokens, quantized_activations=kernel)
    if kernel and result.manifest.options.int4_kernel.kernel_set in int4_kernel.BF16_PROMPT_SETS:
        # the prompt in bf16 (x and widened weights rounded), not int8 blocks: within the bf16
        # bound of the weight-only model (f32 x), which it rounds rather than quantizes
        plain = _stepwise_logits(qmodel, PROMPT, tokens, quantized_activations=False)
        assert 0 < np.abs(got - plain).max() < BF16_PROMPT_BOUND
        return
    np.testing.assert_allclose(got, want, atol=5e-4, rtol=1e-4)
    if kernel:  # and quantizing x really changed the numbers (a generic fallback would not)
        plain = _stepwise_logits(qmodel, PROMPT, tokens, quantized_activations=False)
        assert np.abs(got - plain).max() > 1e-4


def test_checker_catches_an_unfused_compile(tmp_path):
    """The dispatch check fails on the same weights compiled without the pass."""
    import iree.compiler as ic

    dump = tmp_path / "sources"
    ic.compile_str(
        (TESTDATA / "int8_channel.mlir").read_text(),
        extra_args=["--iree-hal-target-device=local", "--iree-hal-local-target-device-backends=llvm-cpu",
                    "--iree-opt-const-eval=false", f"--iree-hal-dump-executable-sources-to={dump}"],
    )
    problems = dispatch_violations(dump, [("2x64x16", ["2x64x16", "64x32", "32x64"])])
    assert problems and any("fp32 weight-shaped" in p for p in problems)


def test_quantize_rejects_bad_options(fp32_model):
    with pytest.raises(UserError, match="unknown mode 'int3'"):
        quantize_model(copy.deepcopy(fp32_model), QuantSpec("int3"))
    with pytest.raises(UserError, match="--group-size: 48"):
        QuantSpec("int4", group_size=48).check()
    # hidden 64, heads x head_dim 96: a group of 64 does not divide o_proj's 96 inputs (the first such layer).
    with pytest.raises(UserError, match=r"does not divide the input dimension 96 of layer 'model.layers.0.self_attn.o_proj'"):
        quantize_model(copy.deepcopy(fp32_model), QuantSpec("int4", group_size=64))


@pytest.mark.parametrize("args,message", [
    (["--quant", "int3"], "--quant: unknown mode 'int3'"),
    (["--quant", "int4", "--group-size", "64"], "layer 'model.layers.0.self_attn.o_proj'"),
])
def test_cli_bad_quant_is_one_line_exit_2(glm4_checkpoint, tmp_path, args, message):
    proc = subprocess.run(
        [sys.executable, "-m", "iree_glm.compile", str(glm4_checkpoint[0]), "-o", str(tmp_path / "b"), *args],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l.strip() and "Warning" not in l and "warn" not in l]
    assert lines[-1].startswith("error: ") and message in lines[-1]
    assert not (tmp_path / "b").exists()


def _llamacpp_tool():
    """tools/llamacpp.py (the llama.cpp benchmark peer), imported without needing llama-cpp-python."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "tools" / "llamacpp.py"
    spec = importlib.util.spec_from_file_location("llamacpp_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, path


def test_llamacpp_tool_rejects_bad_input(tmp_path):
    tool, path = _llamacpp_tool()
    with pytest.raises(UserError, match="no convert_hf_to_gguf.py and gguf-py found"):
        tool.find_source(tmp_path, tmp_path)
    with pytest.raises(UserError, match="unknown GGUF type 'q3_k'"):
        tool.convert(tmp_path, "q3_k", tmp_path / "work", tmp_path)
    proc = subprocess.run([sys.executable, str(path), str(tmp_path / "missing")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: checkpoint:")


def test_int8_activations_option_and_profile_key_are_checked(glm4_checkpoint, tmp_path, capsys):
    from iree_glm.cli import compile as compile_cli
    from iree_glm.errors import run_cli
    from iree_glm.planner.profile import ProfileError, load_profile

    from ..helpers import HOST

    code = run_cli(compile_cli.main, [str(glm4_checkpoint[0]), "-o", str(tmp_path / "b"), "--quant", "int8", "--int8-activations", "most"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "--int8-activations: unknown mode 'most'" in errors[0]
    assert not (tmp_path / "b").exists()
    assert load_profile("host-cpu").host.int8_activations == "prefill"
    path = tmp_path / "p.toml"
    assert 'int8_activations = "prefill"' in HOST
    path.write_text(HOST.replace('int8_activations = "prefill"', 'int8_activations = "most"'))
    with pytest.raises(ProfileError, match=r"devices\[0\].int8_activations: 'most' is not one of none, prefill, all"):
        load_profile(path)
