"""The dequant-matmul pass on small input-phase MLIR files (passes/testdata).

Each case checks the rewritten IR (one generic reading the packed i8 weight, no matmul, no
fp32 weight left) and that the fused and unfused forms compute the same numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from iree.compiler import ir
from iree_glm.passes import dequant_matmul
from iree_glm.kernels import int4 as int4_kernel, int8 as int8_kernel
from ..helpers import TESTDATA


FLAGS = ["--iree-hal-target-device=local", "--iree-hal-local-target-device-backends=llvm-cpu", "--iree-llvmcpu-target-cpu=host"]


def _rewrite(name: str, cpu_tiles: bool = False, kernel: Path | None = None, int8: Path | None = None,
             int8_activations: str = "none", verify_rows: bool = False, text: str | None = None) -> tuple[str, int]:
    with ir.Context():
        module = ir.Module.parse(text or (TESTDATA / name).read_text())
        done = dequant_matmul.run(module, cpu_tiles, int8_activations, kernel=kernel, int8_kernel=int8, verify_rows=verify_rows)
        module.operation.verify()
        return str(module), len(done)


def _compile_and_run(text: str, fn: str, x: np.ndarray) -> np.ndarray:
    import iree.compiler as ic
    import iree.runtime as rt

    vmfb = ic.compile_str(text, extra_args=FLAGS)
    config = rt.Config("local-sync")
    ctx = rt.SystemContext(config=config)
    ctx.add_vm_module(rt.VmModule.copy_buffer(ctx.instance, vmfb))
    out = ctx.modules.module[fn](x)
    return np.asarray(out.to_host() if hasattr(out, "to_host") else out)


@pytest.mark.parametrize("name,fns", [("int8_channel.mlir", ["prefill", "decode"]), ("int4_group.mlir", ["prefill", "decode"])])
def test_rewritten_ir(name, fns):
    text, n = _rewrite(name)
    assert n == len(fns)
    assert "linalg.matmul" not in text
    assert "linalg.transpose" not in text
    # The only tensors of f32 with the weight's element count are gone: every remaining
    # sitofp sits inside the fused generic, which reads the i8 global directly.
    with ir.Context():
        module = ir.Module.parse(text)
        fused = []

        def visit(op):
            if op.name == "linalg.generic" and "reduction" in str(op.attributes["iterator_types"]):
                fused.append(op)
            return ir.WalkResult.ADVANCE

        module.operation.walk(visit)
        assert len(fused) == len(fns)
        for op in fused:
            body = str(op)
            assert "arith.sitofp" in body and "arith.mulf" in body and "arith.addf" in body
            producers = [_producer_name(v) for v in op.operands]
            assert "util.global.load" in producers  # the packed i8 weight, read directly
            assert "linalg.generic" not in producers  # no dequantized copy feeds it
            assert any(str(v.type).endswith("xi8>") for v in op.operands)


def _producer_name(value: ir.Value) -> str:
    owner = value.owner
    return owner.name if isinstance(owner, (ir.Operation, ir.OpView)) else "block-argument"


def test_int4_unpack_stays_in_the_inner_loop():
    text, _ = _rewrite("int4_group.mlir")
    fused = text[text.index("linalg.generic"):]
    body = fused[: fused.index("} ->")]
    for op in ("arith.shrsi", "arith.andi", "arith.subi", "arith.sitofp", "arith.extf", "arith.mulf", "arith.addf"):
        assert op in body


def test_leaves_other_matmuls_alone():
    text, n = _rewrite("no_dequant.mlir")
    assert n == 0
    assert text.count("linalg.matmul") == 2


def test_decode_form_has_no_m_loop_and_carries_cpu_tiles():
    """M=1: the generic iterates (tile, channel, K) and, for llvm-cpu, names its tile sizes."""
    text, _ = _rewrite("int8_channel.mlir", cpu_tiles=True)
    decode = text[text.index("@decode"):]
    generic = decode[decode.index("linalg.generic"):]
    generic = generic[: generic.index("^bb0")]
    assert 'iterator_types = ["parallel", "parallel", "reduction"]' in generic
    assert "tensor<64xf32>" in generic and "tensor<2x64x16xi8>" in generic
    assert "compilation_info" in generic
    assert "vector_reduction = [0, 0, 1]" in text
    prefill = text[text.index("@prefill"): text.index("@decode")]
    assert "compilation_info" not in prefill  # only the decode form is tuned
    plain, _ = _rewrite("int8_channel.mlir")
    assert "compilation_info" not in plain  # other backends get IREE's own choice


@pytest.mark.parametrize("name,fn,m,cpu_tiles", [
    ("int8_channel.mlir", "prefill", 5, False),
    ("int8_channel.mlir", "decode", 1, False),
    ("int8_channel.mlir", "decode", 1, True),
    ("int4_group.mlir", "prefill", 3, False),
    ("int4_group.mlir", "decode", 1, True),
])
def test_fused_matches_unfused(name, fn, m, cpu_tiles):
    x = np.random.default_rng(1).standard_normal((m, 64)).astype(np.float32)
    original = (TESTDATA / name).read_text()
    fused, n = _rewrite(name, cpu_tiles)
    assert n >= 1
    want = _compile_and_run(original, fn, x)
    got = _compile_and_run(fused, fn, x)
    assert want.shape == got.shape == (m, 32)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.abs(want).max() > 0.1  # the case is not trivially zero


def test_int4_nibble_dim_unrolled_on_a_folded_shift_constant():
    """IREE folds the exporter's [0, 4] shifts and their unit reshape into one 5-d constant; the
    nibble dim is still unrolled (no shift tensor read in the loop) and the numbers match."""
    original = (TESTDATA / "int4_group.mlir").read_text()
    folded = original.replace(
        "%sh = tensor.expand_shape %shifts [[0, 1, 2, 3]] output_shape [1, 1, 2, 1] : tensor<2xi8> into tensor<1x1x2x1xi8>",
        "%sh = arith.constant dense<[[[[0], [4]]]]> : tensor<1x1x2x1xi8>")
    assert folded != original
    with ir.Context():
        module = ir.Module.parse(folded)
        assert len(dequant_matmul.run(module, cpu_tiles=True)) == 2
        text = str(module)
    generics = [g for g in text.split("linalg.generic")[1:] if "reduction" in g[: g.index("{", g.index("iterator_types"))]]
    assert generics and all("1x1x2x1xi8" not in g[: g.index("^bb0")] for g in generics)
    x = np.random.default_rng(2).standard_normal((1, 64)).astype(np.float32)
    np.testing.assert_allclose(_compile_and_run(text, "decode", x), _compile_and_run(folded, "decode", x), rtol=1e-5, atol=1e-5)


def _rewrite_mode(name: str, int8_activations: str) -> str:
    with ir.Context():
        module = ir.Module.parse((TESTDATA / name).read_text())
        assert len(dequant_matmul.run(module, True, int8_activations)) == 2
        module.operation.verify()
        return str(module)


def _function(text: str, name: str) -> str:
    start = text.index(f"@{name}(")
    end = text.find("util.func", start)
    return text[start: end if end > 0 else None]


def test_integer_form_ir():
    """prefill (dynamic rows): activations quantized per row, one i8 x i8 -> i32 matmul on the
    stored bytes, no fp32 weight; decode keeps the fused generic unless asked for "all"."""
    text = _rewrite_mode("int8_channel.mlir", "prefill")
    prefill, decode = _function(text, "prefill"), _function(text, "decode")
    assert "linalg.matmul ins(%" in prefill and "tensor<64x32xi8>) outs(" in prefill and "-> tensor<?x32xi32>" in prefill
    assert "math.roundeven" in prefill and "arith.fptosi" in prefill and "to i8" in prefill
    assert "tensor<2x64x16xf32>" not in prefill.split("linalg.generic", 1)[1]  # no dequantized weight is computed
    assert "tensor<64x32xf32>" not in prefill
    assert "linalg.matmul" not in decode and "compilation_info" in decode
    everywhere = _rewrite_mode("int8_channel.mlir", "all")
    assert "-> tensor<1x32xi32>" in _function(everywhere, "decode")
    assert "linalg.matmul" not in _function(_rewrite_mode("int4_group.mlir", "all"), "prefill")  # int4 stays weight-only
    with pytest.raises(ValueError, match="unknown mode 'some'"):
        _rewrite_mode("int8_channel.mlir", "some")


def test_integer_form_matches_unfused_within_the_rounding_bound():
    """|y_int - y| <= sum_k |x - s_x q|_k |W_kn| <= s_x / 2 * sum_k |W_kn| per row m and column n
    (the weight is exact in both); W comes from the unfused module run on the identity."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((6, 64)) * np.array([[1], [0.01], [100], [1], [1], [0]])).astype(np.float32)  # a zero row too
    original = (TESTDATA / "int8_channel.mlir").read_text()
    want = _compile_and_run(original, "prefill", x)
    w = _compile_and_run(original, "prefill", np.eye(64, dtype=np.float32))  # [K, N] with the scales applied
    got = _compile_and_run(_rewrite_mode("int8_channel.mlir", "prefill"), "prefill", x)
    s_x = np.abs(x).max(1, keepdims=True) / 127
    bound = s_x / 2 * np.abs(w).sum(0, keepdims=True) + 1e-5 * np.abs(want) + 1e-6
    assert np.all(np.abs(got - want) <= bound), np.abs(got - want).max()
    assert np.all(got[5] == 0)
    assert not np.allclose(got, want, rtol=1e-6, atol=1e-7)  # it is the integer path, not the f32 one
    q = np.round(x / np.maximum(s_x, 1e-38))  # the same numbers from numpy: integer product, then scales
    np.testing.assert_allclose(got, (q.astype(np.float64) @ w) * s_x, rtol=2e-5, atol=1e-5)

def _kernel_reference(x: np.ndarray, text: str) -> np.ndarray:
    """What the kernel computes on int4_group.mlir's weights: torch's model of it (quant.py)."""
    import re

    import torch
    from iree_glm.transforms.quantize import dequantize_int4, quantize_activations

    q = np.frombuffer(bytes.fromhex(re.search(r'@qweight = dense<"0x([0-9A-F]+)">', text).group(1)), np.int8).reshape(32, 2, 16)
    s = np.frombuffer(bytes.fromhex(re.search(r'@scale = dense<"0x([0-9A-F]+)">', text).group(1)), np.float16).reshape(32, 2)
    w = dequantize_int4(torch.from_numpy(q.copy()), torch.from_numpy(s.copy()))
    return (quantize_activations(torch.from_numpy(x), 32) @ w.T).numpy()


def test_int4_calls_the_kernels(int4_kernel_object):
    """With the kernel object, the int4 matmuls become calls of dispatches that link it
    (hal.import.static): the matrix-vector kernel for M=1; for dynamic M the quantization of x
    and the matrix kernel."""
    text, n = _rewrite("int4_group.mlir", cpu_tiles=True, kernel=int4_kernel_object)
    assert n == 2
    for fn, callee in (("decode", "iree_glm_int4_matvec_64x32g32"), ("prefill", "iree_glm_int4_matvec_64x32g32_mdyn")):
        body = text[text.index(f"util.func public @{fn}"):]
        body = body[: body.index("util.return")]
        assert f"util.call @{callee}(" in body
        assert "linalg.generic" not in body and "linalg.matmul" not in body
    assert f'hal.executable.object<{{path = "{int4_kernel_object}"}}>' in text
    for symbol in (int4_kernel.SYMBOL, int4_kernel.QUANTIZE_SYMBOL, int4_kernel.MATMUL_SYMBOL):
        assert f"func.func private @{symbol}(" in text
    assert text.count("hal.import.static") == 3


@pytest.mark.parametrize("fn,m", [("decode", 1), ("prefill", 1), ("prefill", 3), ("prefill", 13), ("prefill", 70)])
def test_int4_kernels_match_their_torch_model_and_the_unfused_form(int4_kernel_object, fn, m):
    original = (TESTDATA / "int4_group.mlir").read_text()
    fused, _ = _rewrite("int4_group.mlir", cpu_tiles=True, kernel=int4_kernel_object)
    for seed in range(2):
        x = np.random.default_rng(seed).standard_normal((m, 64)).astype(np.float32)
        got = _compile_and_run(fused, fn, x)
        # Exact model: x quantized per block of 32 like the kernels (quant.quantize_activations).
        np.testing.assert_allclose(got, _kernel_reference(x, original), rtol=1e-5, atol=1e-5)
        # Against fp32 activations (the unfused form): the int8 rounding of x, < 1% of the outputs' range.
        want = _compile_and_run(original, fn, x)
        assert np.abs(got - want).max() < 0.01 * np.abs(want).max()
        assert np.abs(got - want).max() > 0  # activations really were quantized


def test_int4_kernel_not_used_for_other_layouts(int4_kernel_object):
    """int8 weights keep their generated forms even when the int4 kernel is offered."""
    text, n = _rewrite("int8_channel.mlir", cpu_tiles=True, kernel=int4_kernel_object)
    assert n == 2 and "util.call" not in text and "stream.executable" not in text


@pytest.fixture(scope="module")
def int8_kernel_object(tmp_path_factory):
    reason = int8_kernel.unavailable_reason()
    if reason:
        pytest.skip(f"int8 AVX2 kernel unavailable: {reason}")
    return int8_kernel.build_object(tmp_path_factory.mktemp("int8_kernel"))


@pytest.mark.parametrize("int8_activations", ["none", "prefill"])
def test_int8_calls_the_kernels(int8_kernel_object, int8_activations):
    """With the int8 kernel object, the one-row int8 matmul becomes a call of a dispatch linking
    it (hal.import.static); a prompt's matmul calls the quantization and matrix kernels if it
    multiplies integers (`int8_activations`), else keeps the generic fused form."""
    text, n = _rewrite("int8_channel.mlir", cpu_tiles=True, int8=int8_kernel_object, int8_activations=int8_activations)
    assert n == 2
    decode = text[text.index("util.func public @decode"):]
    decode = decode[: decode.index("util.return")]
    assert "util.call @iree_glm_int8_matvec_64x32(" in decode and "linalg.matmul" not in decode
    prefill = text[text.index("util.func public @prefill"):]
    prefill = prefill[: prefill.index("util.return")]
    assert f'hal.executable.object<{{path = "{int8_kernel_object}"}}>' in text
    assert f"func.func private @{int8_kernel.SYMBOL}(" in text
    if int8_activations == "none":
        assert "util.call" not in prefill and "linalg.generic" in prefill
        assert text.count("hal.import.static") == 1
    else:
        assert "util.call @iree_glm_int8_matvec_64x32_mdyn(" in prefill and "linalg.matmul" not in prefill
        for symbol in (int8_kernel.QUANTIZE_SYMBOL, int8_kernel.MATMUL_SYMBOL):
            assert f"func.func private @{symbol}(" in text
        assert text.count("hal.import.static") == 3


def test_int8_kernel_matches_its_torch_model_and_the_unfused_form(int8_kernel_object):
    import re

    import torch
    from iree_glm.transforms.quantize import quantize_activations

    original = (TESTDATA / "int8_channel.mlir").read_text()
    fused, _ = _rewrite("int8_channel.mlir", cpu_tiles=True, int8=int8_kernel_object)
    q = np.frombuffer(bytes.fromhex(re.search(r'@qweight = dense<"0x([0-9A-F]+)">', original).group(1)), np.int8).reshape(2, 64, 16)
    w = q.transpose(1, 0, 2).reshape(64, 32).astype(np.float64)
    for seed in range(2):
        x = np.random.default_rng(seed).standard_normal((1, 64)).astype(np.float32)
        got = _compile_and_run(fused, "decode", x)
        # Exact model: x quantized per block of 32 (quant.quantize_activations), integer weights
        # (this decode function has no weight scale).
        np.testing.assert_allclose(got, quantize_activations(torch.from_numpy(x), 32).double().numpy() @ w, rtol=1e-5, atol=1e-4)
        want = _compile_and_run(original, "decode", x)  # fp32 activations: within the int8 rounding of x
        assert 0 < np.abs(got - want).max() < 0.01 * np.abs(want).max()


@pytest.mark.parametrize("m", [1, 2, 13, 70])
def test_int8_matrix_kernel_matches_the_integer_form(int8_kernel_object, m):
    """A prompt's matmul through the kernels computes what the pass's integer matmul (IREE's
    mmt4d) computes: x quantized per row, exact integer sums, the row scale."""
    fused, _ = _rewrite("int8_channel.mlir", cpu_tiles=True, int8=int8_kernel_object, int8_activations="prefill")
    integer, _ = _rewrite("int8_channel.mlir", cpu_tiles=True, int8_activations="prefill")
    x = np.random.default_rng(m).standard_normal((m, 64)).astype(np.float32)
    np.testing.assert_allclose(_compile_and_run(fused, "prefill", x), _compile_and_run(integer, "prefill", x), rtol=1e-5, atol=1e-5)


def test_a_shape_outside_the_kernels_range_is_reported(int8_kernel_object, int4_kernel_object, monkeypatch):
    """A one-row matmul whose K the kernels do not take keeps the generic form, and says so."""
    monkeypatch.setattr(int8_kernel, "MAX_K", 32)  # the test data's K is 64
    monkeypatch.setattr(int4_kernel, "MAX_K", 32)
    for name, kwargs in (("int8_channel.mlir", {"int8": int8_kernel_object}), ("int4_group.mlir", {"kernel": int4_kernel_object})):
        with pytest.warns(dequant_matmul.KernelNotUsed, match=r"K=64 (group 32 )?rows 1 is outside the AVX2 kernel's range.*generic fused form"):
            text, n = _rewrite(name, cpu_tiles=True, **kwargs)
        assert n == 2 and "util.call" not in _function(text, "decode")


@pytest.mark.parametrize("name", ["int8_channel.mlir", "int4_group.mlir"])
def test_verify_rows_are_decode_steps_bit_for_bit(int8_kernel_object, int4_kernel_object, name):
    """The `verify` entry point (here: the test data's prefill renamed) calls the decode kernels'
    few-row form (one row: the decode kernel itself): each of its rows equals the decode
    function's result for that row alone, bit for bit, through IREE (R = 1..16). The prompt path (the integer matrix kernel) does not."""
    verify = (TESTDATA / name).read_text().replace("@prefill(", "@verify(")
    text, n = _rewrite(name, cpu_tiles=True, kernel=int4_kernel_object, int8=int8_kernel_object, int8_activations="prefill",
                       verify_rows=True, text=verify)
    assert n == 2
    body = text[text.index("util.func public @verify"):]
    kernel = int4_kernel if name.startswith("int4") else int8_kernel
    callee = kernel.verify_name(64, 32, 32) if kernel is int4_kernel else kernel.verify_name(64, 32)
    assert f"util.call @{callee}(" in body[: body.index("util.return")]
    # One row: the decode kernel, chosen inside the one dispatch (no branch in the function).
    assert f"func.func private @{kernel.VERIFY_SYMBOL}(" in text and f"func.func private @{kernel.SYMBOL}(" in text
    assert "scf.if" not in body[: body.index("util.return")]
    import iree.compiler as ic
    import iree.runtime as rt

    # A branch around the dispatches would split the call into one submission per side.
    stream = ic.compile_str(text, extra_args=[*FLAGS, "--compile-to=stream"]).decode()
    funcs = {f.split("(", 1)[0]: f for f in stream.split("util.func public @")[1:]}
    executes = {fn: funcs[fn].count("stream.cmd.execute") for fn in ("decode", "verify")}
    assert executes["verify"] == executes["decode"] == 1, executes

    ctx = rt.SystemContext(config=rt.Config("local-sync"))
    ctx.add_vm_module(rt.VmModule.copy_buffer(ctx.instance, ic.compile_str(text, extra_args=FLAGS)))
    scale = np.float32(1)
    if kernel is int8_kernel:  # this decode function has no weight scale (a multiply in f32, as numpy's)
        import re
        scale = np.frombuffer(bytes.fromhex(re.search(r'@scale = dense<"0x([0-9A-F]+)">', verify).group(1)), np.float32)
    rng = np.random.default_rng(3)
    for m in (1, 2, 5, 9, 16):
        x = (rng.standard_normal((m, 64)) * np.where(rng.random((m, 64)) < 0.05, 20, 1)).astype(np.float32)
        rows = np.asarray(ctx.modules.module["verify"](x).to_host())
        steps = np.concatenate([np.asarray(ctx.modules.module["decode"](x[i: i + 1]).to_host()) * scale for i in range(m)])
        assert np.array_equal(rows.view(np.uint32), steps.view(np.uint32)), m


@pytest.mark.parametrize("name", ["int8_channel.mlir", "int4_group.mlir"])
def test_batched_decode_rows_are_decode_steps_bit_for_bit(int8_kernel_object, int4_kernel_object, name):
    """A batched decode step (`decode_b4`: the test data's decode with 4 static rows) calls the
    few-row kernels as `verify` does: each row of the matmul is the decode kernel's result for
    that row alone, bit for bit, whatever else is in the batch (the prompt path's matrix kernels
    quantize x per row otherwise). `decode_b8` keeps the matrix kernels (BATCHED_FEW_ROWS)."""
    text = (TESTDATA / name).read_text()
    decode = text[text.index("  util.func public @decode("):]
    decode = decode[: decode.index("\n  }\n") + 5]
    batched = [decode.replace("@decode(", f"@decode_b{b}(").replace("tensor<1x64xf32>", f"tensor<{b}x64xf32>")
               .replace("tensor<1x32xf32>", f"tensor<{b}x32xf32>") for b in (4, 8)]
    text = text[: text.rindex("}")] + "".join(batched) + "}\n"
    text, n = _rewrite(name, cpu_tiles=True, kernel=int4_kernel_object, int8=int8_kernel_object, int8_activations="prefill",
                       verify_rows=True, text=text)
    assert n == 4
    kernel = int4_kernel if name.startswith("int4") else int8_kernel
    callee = kernel.verify_name(64, 32, 32) if kernel is int4_kernel else kernel.verify_name(64, 32)
    for b in (4, 8):
        body = text[text.index(f"util.func public @decode_b{b}"):]
        # up to BATCHED_FEW_ROWS rows the few-row kernels, larger batches the prompt path
        assert (f"util.call @{callee}(" in body[: body.index("util.return")]) == (b <= dequant_matmul.BATCHED_FEW_ROWS)
    import iree.compiler as ic
    import iree.runtime as rt

    ctx = rt.SystemContext(config=rt.Config("local-sync"))
    ctx.add_vm_module(rt.VmModule.copy_buffer(ctx.instance, ic.compile_str(text, extra_args=FLAGS)))
    rng = np.random.default_rng(5)
    for _ in range(3):
        x = (rng.standard_normal((4, 64)) * np.where(rng.random((4, 64)) < 0.05, 20, 1)).astype(np.float32)
        rows = np.asarray(ctx.modules.module["decode_b4"](x).to_host())
        steps = np.concatenate([np.asarray(ctx.modules.module["decode"](x[i: i + 1]).to_host()) for i in range(4)])
        assert np.array_equal(rows.view(np.uint32), steps.view(np.uint32))


def _bf16_module(n: int = 20, k: int = 48) -> tuple[str, np.ndarray]:
    """Input-phase MLIR of a bf16 layer as quant.QuantLinear("bf16") exports it (extf ->
    transpose -> collapse to [K, N'] -> matmul), prefill (dynamic M) and decode (M=1); and the
    weight as f32 [N', K]."""
    import torch

    from iree_glm.transforms.quantize import pack_bf16, unpack_bf16

    q = pack_bf16(torch.from_numpy(np.random.default_rng(3).standard_normal((n, k)).astype(np.float32)))
    a, k2, _, _ = q.shape
    wt, ft, kn = f"tensor<{a}x{k2}x16x2xbf16>", f"tensor<{a}x{k2}x16x2xf32>", f"tensor<{2 * k2}x{16 * a}xf32>"
    funcs = []
    for fn, m in (("prefill", "?"), ("decode", "1")):
        dims = "(%m)" if m == "?" else "()"
        get_m = f"%m = tensor.dim %x, %c0 : tensor<{m}x{k}xf32>" if m == "?" else ""
        funcs.append(f"""
  util.func public @{fn}(%x: tensor<{m}x{k}xf32>) -> tensor<{m}x{16 * a}xf32> {{
    %c0 = arith.constant 0 : index
    %zero = arith.constant 0.000000e+00 : f32
    {get_m}
    %q = util.global.load immutable @w : {wt}
    %e = tensor.empty() : {ft}
    %wf = linalg.generic {{indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]}} ins(%q : {wt}) outs(%e : {ft}) {{
    ^bb0(%in: bf16, %out: f32):
      %f = arith.extf %in : bf16 to f32
      linalg.yield %f : f32
    }} -> {ft}
    %te = tensor.empty() : tensor<{k2}x2x{a}x16xf32>
    %t = linalg.transpose ins(%wf : {ft}) outs(%te : tensor<{k2}x2x{a}x16xf32>) permutation = [1, 3, 0, 2]
    %wkn = tensor.collapse_shape %t [[0, 1], [2, 3]] : tensor<{k2}x2x{a}x16xf32> into {kn}
    %oe = tensor.empty{dims} : tensor<{m}x{16 * a}xf32>
    %init = linalg.fill ins(%zero : f32) outs(%oe : tensor<{m}x{16 * a}xf32>) -> tensor<{m}x{16 * a}xf32>
    %y = linalg.matmul ins(%x, %wkn : tensor<{m}x{k}xf32>, {kn}) outs(%init : tensor<{m}x{16 * a}xf32>) -> tensor<{m}x{16 * a}xf32>
    util.return %y : tensor<{m}x{16 * a}xf32>
  }}""")
    hex_ = q.contiguous().view(torch.int16).numpy().tobytes().hex().upper()
    return f'module {{\n  util.global private @w = dense<"0x{hex_}"> : {wt}\n{"".join(funcs)}\n}}\n', unpack_bf16(q).numpy()


def test_bf16_weights_fuse_without_the_kernel():
    """A bf16 weight widened by extf is a chain the pass fuses (the generic form: targets
    without the bf16 kernels), computing the unfused numbers."""
    original, _ = _bf16_module()
    fused, n = _rewrite("", text=original)
    assert n == 2 and "linalg.matmul" not in fused and "arith.extf" in fused
    x = np.random.default_rng(4).standard_normal((5, 48)).astype(np.float32)
    for fn, rows in (("prefill", x), ("decode", x[:1])):
        np.testing.assert_allclose(_compile_and_run(fused, fn, rows), _compile_and_run(original, fn, rows), rtol=1e-5, atol=1e-5)


def test_bf16_weights_call_the_bf16_kernels(tmp_path):
    """With the bf16 kernels' object, prompts call the conversion and tile kernels, one row the
    matrix-vector kernel; both compute x rounded to bf16 times the bf16 weight."""
    import torch

    from iree_glm.bundle.cpu_features import missing_features
    from iree_glm.kernels import bf16, toolchain

    reason = toolchain.unavailable_reason(toolchain.X86_64_AMX) or (
        f"the CPU lacks {', '.join(missing_features(bf16.FEATURES))}" if missing_features(bf16.FEATURES) else None)
    if reason:
        pytest.skip(f"bf16 kernels unavailable: {reason}")
    original, w = _bf16_module()
    with ir.Context():
        module = ir.Module.parse(original)
        done = dequant_matmul.run(module, bf16_kernel=bf16.build_object(tmp_path))
        module.operation.verify()
        text = str(module)
    assert len(done) == 2 and "linalg.matmul" not in text
    assert f"@{bf16.MATMUL_SYMBOL}" in text and f"@{bf16.CONVERT_SYMBOL}" in text and f"@{bf16.MATVEC_SYMBOL}" in text
    x = np.random.default_rng(5).standard_normal((37, 48)).astype(np.float32)
    want = torch.from_numpy(x).to(torch.bfloat16).double().numpy() @ w.astype(np.float64).T
    for fn, rows in (("prefill", x), ("decode", x[:1])):
        np.testing.assert_allclose(_compile_and_run(text, fn, rows), want[: len(rows)], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("m", [3, 37, 300])
def test_int4_prompts_on_amx_take_the_bf16_path(tmp_path, m):
    """With the AMX set's int4 object, prompts convert x to bf16 and call the widening tile kernel
    (x86_64_amx/int4.c), decode keeps the int8-block matrix-vector kernel: prefill computes
    bf16(x) times bf16(dequantized weights), decode its torch model."""
    import re

    import torch
    from iree_glm.kernels import toolchain
    from iree_glm.transforms.quantize import dequantize_int4

    reason = toolchain.unavailable_reason(toolchain.X86_64_AMX)
    if reason:
        pytest.skip(f"AMX int4 kernels unavailable: {reason}")
    original = (TESTDATA / "int4_group.mlir").read_text()
    text, n = _rewrite("int4_group.mlir", cpu_tiles=True, kernel=int4_kernel.build_object(tmp_path, toolchain.X86_64_AMX))
    assert n == 2 and "linalg.matmul" not in text
    for symbol in (int4_kernel.SYMBOL, int4_kernel.BF16_CONVERT_SYMBOL, int4_kernel.BF16_MATMUL_SYMBOL):
        assert f"func.func private @{symbol}(" in text
    assert f"@{int4_kernel.MATMUL_SYMBOL}(" not in text and f"@{int4_kernel.QUANTIZE_SYMBOL}(" not in text
    q = np.frombuffer(bytes.fromhex(re.search(r'@qweight = dense<"0x([0-9A-F]+)">', original).group(1)), np.int8).reshape(32, 2, 16)
    s = np.frombuffer(bytes.fromhex(re.search(r'@scale = dense<"0x([0-9A-F]+)">', original).group(1)), np.float16).reshape(32, 2)
    w = dequantize_int4(torch.from_numpy(q.copy()), torch.from_numpy(s.copy())).to(torch.bfloat16).double()
    x = np.random.default_rng(m).standard_normal((m, 64)).astype(np.float32)
    want = (torch.from_numpy(x).to(torch.bfloat16).double() @ w.T).numpy()
    np.testing.assert_allclose(_compile_and_run(text, "prefill", x), want, rtol=0, atol=4e-7 * 8 * np.abs(want).max())
    np.testing.assert_allclose(_compile_and_run(text, "decode", x[:1]), _kernel_reference(x[:1], original), rtol=1e-5, atol=1e-5)
