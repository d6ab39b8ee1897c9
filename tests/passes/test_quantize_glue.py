"""The kernels' quantizations that compute their input (passes/quantize_glue.py,
kernels/x86_64_avx2/row_glue.h): silu(gate) * up and RMSNorm folded into the dispatch quantizing x
before an int4 / int8 matrix kernel.

On passes/testdata/int4_glue.mlir (the int4_group.mlir weight behind each step): the pass
fuses exactly the two forms and leaves another activation alone, and the fused program
computes what the kernels compute on x (torch's model) and stays within x's int8 rounding of
the unfused fp32 program. The C functions are also called directly against the plain
quantization of x computed in numpy. Whole bundles: tests/test_quant.py (counts, no silu left
in IREE's prefill dispatches, logits).
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import numpy as np
import pytest

from iree.compiler import ir
from iree_glm.passes import dequant_matmul
from iree_glm.kernels import int4 as int4_kernel, int8 as int8_kernel

from ..helpers import MEMREF, kernel_library, memref
from .test_dequant_matmul import _compile_and_run, _kernel_reference
from ..helpers import TESTDATA


EPS = np.float32(9.99999974e-6)  # int4_glue.mlir's


def _rewrite(kernel: Path, glue: dict | None) -> str:
    with ir.Context():
        module = ir.Module.parse((TESTDATA / "int4_glue.mlir").read_text())
        dequant_matmul.run(module, True, kernel=kernel, glue=glue)
        module.operation.verify()
        return str(module)


def test_pass_fuses_silu_mul_and_rms_norm_only(int4_kernel_object):
    glue: dict[str, int] = {}
    text = _rewrite(int4_kernel_object, glue)
    assert glue == {"silu_mul": 2, "rms_norm": 1, "none": 1}
    calls = dict(re.findall(r"util\.func public @(\w+)\(.*?util\.call @(\w+)\(", text, re.S))
    eps_bits = np.array([EPS], np.float32).view(np.uint32)[0]
    assert calls == {"prefill_silu": "iree_glm_int4_matvec_64x32g32_mdyn_silu_mul",
                     "prefill_silu_rows": "iree_glm_int4_matvec_64x32g32_mdyn_silu_mul",
                     "prefill_norm": f"iree_glm_int4_matvec_64x32g32_mdyn_rms_norm_{eps_bits:08x}",
                     "prefill_other": "iree_glm_int4_matvec_64x32g32_mdyn"}
    for symbol in (*int4_kernel.GLUE_SYMBOLS.values(), int4_kernel.QUANTIZE_SYMBOL):
        assert f"func.func private @{symbol}(" in text
    # The quantization reads the rows the slices cover: a slice of all columns of an argument's
    # rows, but none where the slices' row count is the source's own (IREE would copy it).
    bodies = dict(re.findall(r"util\.func public @(\w+)\((.*?)util\.return", text, re.S))
    assert bodies["prefill_silu"].count("tensor.extract_slice") == 3
    assert bodies["prefill_silu_rows"].count("tensor.extract_slice") == 2
    # without the option the pass keeps the plain quantization everywhere
    plain = _rewrite(int4_kernel_object, None)
    assert "_silu_mul" not in plain and "_rms_norm" not in plain


def _silu_mul(gu: np.ndarray) -> np.ndarray:
    k = gu.shape[-1] // 2
    g, u = gu[..., :k].astype(np.float64), gu[..., k:].astype(np.float64)
    return (u * (g / (1 + np.exp(-g)))).astype(np.float32)


def _rms_norm(h: np.ndarray, w: np.ndarray) -> np.ndarray:
    h64 = h.astype(np.float64)
    return (w * (h64 / np.sqrt((h64 ** 2).mean(-1, keepdims=True) + float(EPS)))).astype(np.float32)


def _norm_weight(text: str) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(re.search(r'@norm_weight = dense<"0x([0-9A-F]+)">', text).group(1)), np.float32)


@pytest.mark.parametrize("fn", ["prefill_silu", "prefill_silu_rows", "prefill_norm"])
@pytest.mark.parametrize("m", [1, 5, 37])
def test_fused_matches_the_kernels_model_and_the_unfused_form(int4_kernel_object, fn, m):
    original = (TESTDATA / "int4_glue.mlir").read_text()
    fused = _rewrite(int4_kernel_object, {})
    rng = np.random.default_rng(m)
    width = 64 if fn == "prefill_norm" else 128
    inp = (rng.standard_normal((1, m, width)) * 2).astype(np.float32)
    x = _rms_norm(inp[0], _norm_weight(original)) if fn == "prefill_norm" else _silu_mul(inp[0])
    if fn == "prefill_silu_rows":
        inp = inp[0]
    got = _compile_and_run(fused, fn, inp)
    # The kernels' model on x computed in float64: equal up to a rare one-step rounding flip of x's int8.
    model = _kernel_reference(x, original)
    assert np.abs(got - model).max() < 2e-3 * np.abs(model).max()
    # Against the unfused program with fp32 activations: x's int8 rounding only.
    want = _compile_and_run(original, fn, inp)
    assert np.abs(got - want).max() < 0.01 * np.abs(want).max()
    assert np.abs(got - want).max() > 0


# The C functions directly: the fused quantization equals the plain one on x computed in numpy.

def _lib(kernels, tmp_path_factory, symbols: dict[str, list]):
    reason = kernels.unavailable_reason()
    if reason:
        pytest.skip(f"AVX2 kernels unavailable: {reason}")
    lib = kernel_library(kernels.SOURCE, tmp_path_factory.mktemp(kernels.__name__.split(".")[-1]), {})
    for symbol, types in symbols.items():
        getattr(lib, symbol).argtypes = [t for kind in types for t in (MEMREF if kind == "m" else [kind])]
    return lib


I, F = ctypes.c_size_t, ctypes.c_float


def _buffer(rows: int, row_bytes: int) -> np.ndarray:
    out = np.zeros(rows * row_bytes + 64, np.int8)
    off = (-out.ctypes.data) % 32  # IREE's buffers are aligned
    return out[off: off + rows * row_bytes]


def _assert_same_rows(got: np.ndarray, want: np.ndarray, k: int, row_bytes: int) -> None:
    got, want = got.reshape(-1, row_bytes), want.reshape(-1, row_bytes)
    q_got, q_want = got[:, :k].astype(int), want[:, :k].astype(int)
    assert np.abs(q_got - q_want).max() <= 1 and (q_got == q_want).mean() > 0.99
    s_got = got[:, k:].copy().view(np.float32)
    s_want = want[:, k:].copy().view(np.float32)
    np.testing.assert_allclose(s_got, s_want, rtol=1e-5, atol=1e-30)


@pytest.mark.parametrize("kind", ["silu_mul", "rms_norm"])
def test_int4_c_glue_matches_the_plain_quantization(tmp_path_factory, kind):
    lib = _lib(int4_kernel, tmp_path_factory, {
        "iree_glm_int4_quantize_workgroup": ["m", "m", I, I, I, I, I],
        "iree_glm_int4_quantize_silu_mul_workgroup": ["m", "m", I, I, I, I, I],
        "iree_glm_int4_quantize_rms_norm_workgroup": ["m", "m", "m", I, I, I, F, I, I]})
    m, k, group = 21, 2816, 32
    rng = np.random.default_rng(3)
    row = int4_kernel.xq_row_bytes(k)
    if kind == "silu_mul":
        inp = (rng.standard_normal((m, 2 * k)) * 3).astype(np.float32)
        inp[0, :k] = -30  # far in the sigmoid's tails: silu(-30) ~ -3e-12
        inp[1, :k:7] = 30
        x = _silu_mul(inp)
    else:
        inp = (rng.standard_normal((m, k)) * np.where(rng.random(k) < 0.05, 20, 1)).astype(np.float32)
        w = rng.uniform(0.5, 1.5, k).astype(np.float32)
        x = _rms_norm(inp, w)
    want, got = _buffer(m, row), _buffer(m, row)
    for r0 in range(0, m, 16):
        lib.iree_glm_int4_quantize_workgroup(*memref(x), *memref(want), m, k, group, r0, r0 + 16)
        if kind == "silu_mul":
            lib.iree_glm_int4_quantize_silu_mul_workgroup(*memref(inp), *memref(got), m, k, group, r0, r0 + 16)
        else:
            lib.iree_glm_int4_quantize_rms_norm_workgroup(*memref(inp), *memref(w), *memref(got), m, k, group, EPS, r0, r0 + 16)
    # block scales and 8 * block sums follow the int8 bytes: compare the bytes and the scales
    blocks = k // 32
    _assert_same_rows(got.reshape(m, row)[:, : k + 4 * blocks], want.reshape(m, row)[:, : k + 4 * blocks], k, k + 4 * blocks)


@pytest.mark.parametrize("kind", ["silu_mul", "rms_norm"])
def test_int8_c_glue_matches_the_plain_quantization(tmp_path_factory, kind):
    lib = _lib(int8_kernel, tmp_path_factory, {
        "iree_glm_int8_quantize_workgroup": ["m", "m", I, I, I, I],
        "iree_glm_int8_quantize_silu_mul_workgroup": ["m", "m", "m", I, I, I, I],
        "iree_glm_int8_quantize_rms_norm_workgroup": ["m", "m", "m", I, I, F, I, I]})
    m, k = 19, 1024
    rng = np.random.default_rng(4)
    row = int8_kernel.xq_row_bytes(k)
    if kind == "silu_mul":
        raw = (rng.standard_normal((m, 2 * k)) * 30).astype(np.float32)
        scale = rng.uniform(0.01, 0.1, 2 * k).astype(np.float32)
        inp = raw
        x = _silu_mul(raw * scale)  # the graph multiplies by the weight scale in f32 first
    else:
        inp = (rng.standard_normal((m, k)) * 4).astype(np.float32)
        w = rng.uniform(0.5, 1.5, k).astype(np.float32)
        x = _rms_norm(inp, w)
    want, got = _buffer(m, row), _buffer(m, row)
    for r0 in range(0, m, 16):
        lib.iree_glm_int8_quantize_workgroup(*memref(x), *memref(want), m, k, r0, r0 + 16)
        if kind == "silu_mul":
            lib.iree_glm_int8_quantize_silu_mul_workgroup(*memref(inp), *memref(scale), *memref(got), m, k, r0, r0 + 16)
        else:
            lib.iree_glm_int8_quantize_rms_norm_workgroup(*memref(inp), *memref(w), *memref(got), m, k, EPS, r0, r0 + 16)
    _assert_same_rows(got.reshape(m, row)[:, : k + 4], want.reshape(m, row)[:, : k + 4], k, k + 4)


def test_python_constants_match_the_c_header():
    enum = re.search(r"enum \{ GLUE_MAX_K = (\d+) \}", (int4_kernel.SOURCE.parent / "row_glue.h").read_text())
    assert int(enum.group(1)) == int4_kernel.GLUE_MAX_K
