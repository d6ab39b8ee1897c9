"""Tiny Hugging Face checkpoints with seeded random weights, built with transformers itself."""

from __future__ import annotations

import ctypes
import json
import re
import threading
from pathlib import Path

import numpy as np
import torch

import iree_glm.planner.profiles
from iree_glm.bundle.tokenizer import byte_level_tokenizer_json

PROFILES = Path(iree_glm.planner.profiles.__file__).parent  # the shipped device profiles
TESTDATA = Path(__file__).parent / "passes" / "testdata"  # input IR of the pass tests
# host-cpu.toml without its prefill_chunk, so tests can set their own policy
HOST = re.sub(r"(?m)^prefill_chunk = .*\n", "", (PROFILES / "host-cpu.toml").read_text())

# name -> (transformers config class, model class, config overrides)
VARIANTS = {
    # GLM-4, GQA (4 heads over 2 KV heads), head_dim != hidden/heads, partial rotary, qkv bias, untied.
    "glm4_gqa": ("Glm4Config", "Glm4ForCausalLM", dict(num_key_value_heads=2, head_dim=24, attention_bias=True)),
    # GLM (v1), tied embeddings, no GQA.
    "glm_tied": ("GlmConfig", "GlmForCausalLM", dict(num_key_value_heads=4, tie_word_embeddings=True)),
    # Llama: MQA (1 KV head), attention and MLP bias, rotary over the full head.
    "llama_mqa": ("LlamaConfig", "LlamaForCausalLM", dict(num_key_value_heads=1, head_dim=16, attention_bias=True, mlp_bias=True)),
    # Llama given a partial rotary factor, which transformers' Llama ignores (and so must we).
    "llama_partial_ignored": ("LlamaConfig", "LlamaForCausalLM", dict(num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5})),
}


def make_hf_model(variant: str, seed: int = 0, vocab: int = 257, layers: int = 2, max_positions: int = 512):
    import transformers

    cfg_name, model_name, extra = VARIANTS[variant]
    cfg = getattr(transformers, cfg_name)(
        vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
        num_attention_heads=4, max_position_embeddings=max_positions, pad_token_id=0, bos_token_id=1,
        eos_token_id=256, **extra,
    )
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(cfg).eval()
    # Larger than default-init weights, so that logits are far from uniform and greedy
    # decoding is not decided by rounding noise.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0.0, 0.08)
    return model


def write_hf_checkpoint(variant: str, path: Path, seed: int = 0, tokenizer: bool = True, max_positions: int = 512):
    model = make_hf_model(variant, seed, max_positions=max_positions)
    model.save_pretrained(path)
    if tokenizer:
        (Path(path) / "tokenizer.json").write_text(byte_level_tokenizer_json())
    return model


MEMREF = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t]  # a 1-D memref as IREE passes it


def kernel_library(source: Path, folder: Path, argtypes: dict[str, tuple[int, int]], kernel_set=None) -> ctypes.CDLL:
    """One of our kernels' C files built as a shared library with the flags bundles use (those of
    `kernel_set`, default the AVX2 set); `argtypes`: symbol -> (memref arguments, index arguments)."""
    from iree_glm.kernels import toolchain

    lib = ctypes.CDLL(str(toolchain.build_object(folder, source, kernel_set or toolchain.X86_64_AVX2, shared=True)))
    for symbol, (memrefs, indices) in argtypes.items():
        getattr(lib, symbol).argtypes = MEMREF * memrefs + [ctypes.c_size_t] * indices
    return lib


def memref(a: np.ndarray) -> list:
    """The memref arguments of a contiguous array (base, aligned pointer, offset, size, stride)."""
    return [a.ctypes.data, a.ctypes.data, 0, a.size, 1]


def lose_devices(monkeypatch, lost_calls: set[int], message: str = "VK_ERROR_DEVICE_LOST; while invoking native function hal.fence.await") -> list[str]:
    """Make the VM contexts created in the calls numbered `lost_calls` (from 1) fail the way IREE
    reports a device lost while the initializers upload the weights. Returns each call's outcome,
    in order: "injected", "lost" (IREE itself reported a lost device: lavapipe does under load,
    see iree_glm/runtime/devices.py), "failed" (another error) or "ok"; tests count the injected
    losses, so a natural one on top cannot make them flaky."""
    import iree.runtime as rt

    real = rt.VmContext
    outcomes: list[str] = []

    def context(instance, modules):
        outcomes.append("ok")
        if len(outcomes) in lost_calls:
            outcomes[-1] = "injected"
            raise RuntimeError(f"Error creating vm context with modules: {message}")
        try:
            return real(instance, modules=modules)
        except RuntimeError as e:
            outcomes[-1] = "lost" if "VK_ERROR_DEVICE_LOST" in str(e) else "failed"
            raise

    monkeypatch.setattr(rt, "VmContext", context)
    return outcomes


def x86_kernel_sets() -> list:
    """The x86-64 kernel sets (kernels/toolchain.py): kernel tests run once per set."""
    from iree_glm.kernels import toolchain

    return [s for s in toolchain.KERNEL_SETS if s.arch == "x86_64"]


def set_library(kernel_set, kernel: str, folder_factory, argtypes: dict[str, tuple[int, int]]) -> ctypes.CDLL:
    """`kernel` ("int4", "int8") of `kernel_set` as a shared library (kernel_library), skipped with
    the reason where this CPU lacks the set's features."""
    import pytest

    from iree_glm.kernels import toolchain

    reason = toolchain.unavailable_reason(kernel_set)
    if reason:
        pytest.skip(f"{kernel} {kernel_set.name} kernels unavailable: {reason}")
    return kernel_library(kernel_set.source(kernel), folder_factory.mktemp(f"{kernel}_{kernel_set.short}"), argtypes, kernel_set)


def _toml(value) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return repr(value)


def write_profile(path: Path, data: dict) -> None:
    """A device profile (as parsed from TOML) written back as TOML."""
    lines = [f"{k} = {_toml(v)}" for k, v in data.items() if not isinstance(v, (list, dict))]
    lines += ["[policy]"] + [f"{k} = {_toml(v)}" for k, v in data["policy"].items()]
    for table in ("devices", "links"):
        for row in data[table]:
            lines += [f"[[{table}]]"] + [f"{k} = {_toml(v)}" for k, v in row.items()]
    path.write_text("\n".join(lines) + "\n")


def declared_lavapipe_profile(path: Path, name: str, lavapipe_power_w: float, slow_cpu: bool, int8: bool = False) -> Path:
    """host-cpu-vulkan with lavapipe declared fast at matmuls but call-heavy (3 ms a call), drawing
    `lavapipe_power_w`; `slow_cpu`: the CPU declared slow at matmuls (1 GFLOP/s), so that prompts
    go to lavapipe; `int8`: lavapipe declared to run int8 weights too. Written to `path`."""
    import tomllib

    data = tomllib.loads((PROFILES / "host-cpu-vulkan.toml").read_text())
    data["name"] = name
    if slow_cpu:
        data["devices"][0].update(peak_gflops={k: 1.0 for k in data["devices"][0]["peak_gflops"]}, attention_gflops=1.0)
    data["devices"][1].update(peak_gflops={"f32": 1000.0}, attention_gflops=1000.0, memory_bandwidth_gbs=20.0,
                              fresh_memory_gbs=20.0, call_overhead_us=3000.0, dispatch_overhead_us=40.0,
                              active_power_w=lavapipe_power_w)
    if int8:
        data["devices"][1].update(dtypes=["f32", "int8"], peak_gflops={"f32": 1000.0, "int8": 1000.0})
    write_profile(path, data)
    return path


def declared_lavapipe_bundle(checkpoint: Path, tmp_path_factory, name: str, lavapipe_power_w: float, slow_cpu: bool,
                             quant: str = "none", decode_batch_sizes: tuple[int, ...] = (1, 2)) -> Path:
    """The checkpoint built (context 128, weights `quant`) from `declared_lavapipe_profile`."""
    from iree_glm.compiler.build import BuildOptions, build_bundle
    from iree_glm.transforms.quantize import QuantSpec

    profile = declared_lavapipe_profile(tmp_path_factory.mktemp("profiles") / f"{name}.toml", name, lavapipe_power_w, slow_cpu,
                                        int8=quant == "int8")
    out = tmp_path_factory.mktemp("bundles") / name
    build_bundle(checkpoint, out, BuildOptions(max_context=128, profile=str(profile), decode_batch_sizes=decode_batch_sizes,
                                               quant=QuantSpec(quant)))
    return out


def greedy_reference(bundle: Path, prompts: list[list[int]], new_tokens: int) -> dict[tuple[int, ...], list[int]]:
    """Each prompt's greedy tokens from `bundle` (the CPU-only bundle the plans must match)."""
    from iree_glm.runtime import Session

    s = Session.load(bundle)
    return {tuple(p): s.generate(p, max_new_tokens=new_tokens).generated_ids for p in prompts}


def run_in_threads(work, count: int, timeout: float = 60) -> list:
    """work(0) .. work(count - 1), each on its own thread at once (concurrent requests); their
    results in order."""
    results = [None] * count

    def run(i):
        results[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return results
