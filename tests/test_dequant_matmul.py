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

TESTDATA = Path(__file__).resolve().parent.parent / "passes" / "testdata"
FLAGS = ["--iree-hal-target-device=local", "--iree-hal-local-target-device-backends=llvm-cpu", "--iree-llvmcpu-target-cpu=host"]


def _rewrite(name: str, cpu_tiles: bool = False) -> tuple[str, int]:
    with ir.Context():
        module = ir.Module.parse((TESTDATA / name).read_text())
        done = dequant_matmul.run(module, cpu_tiles)
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
    for op in ("arith.shli", "arith.shrsi", "arith.sitofp", "arith.mulf", "arith.addf"):
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
    """IREE folds the exporter's [4, 0] shifts and their unit reshape into one 5-d constant; the
    nibble dim is still unrolled (no shift tensor read in the loop) and the numbers match."""
    original = (TESTDATA / "int4_group.mlir").read_text()
    folded = original.replace(
        "%sh = tensor.expand_shape %shifts [[0, 1, 2, 3, 4]] output_shape [1, 1, 2, 1, 1] : tensor<2xi8> into tensor<1x1x2x1x1xi8>",
        "%sh = arith.constant dense<[[[[[4]], [[0]]]]]> : tensor<1x1x2x1x1xi8>")
    assert folded != original
    with ir.Context():
        module = ir.Module.parse(folded)
        assert len(dequant_matmul.run(module, cpu_tiles=True)) == 2
        text = str(module)
    generics = [g for g in text.split("linalg.generic")[1:] if "reduction" in g[: g.index("{", g.index("iterator_types"))]]
    assert generics and all("1x1x2x1x1xi8" not in g[: g.index("^bb0")] for g in generics)
    x = np.random.default_rng(2).standard_normal((1, 64)).astype(np.float32)
    np.testing.assert_allclose(_compile_and_run(text, "decode", x), _compile_and_run(folded, "decode", x), rtol=1e-5, atol=1e-5)
