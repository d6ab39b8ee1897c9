"""`--compute-dtype bf16`: f32 matmuls multiply bf16-rounded inputs on CPUs with AVX-512 BF16,
within a stated logit bound of f32, recorded in the manifest, refused for targets without it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from iree_glm.bundle import cpu_features
from iree_glm.bundle.manifest import read_manifest
from iree_glm.cli import compile as compile_cli
from iree_glm.compiler import compute_dtype, kernel_choice
from iree_glm.compiler.build import BuildOptions, build_bundle
from iree_glm.compiler.target import HOST_CPU_FLAGS, Target, device_target
from iree_glm.kernels import bf16 as bf16_kernel, toolchain
from iree_glm.planner.profile import load_profile
from iree_glm.errors import BundleError, UserError, run_cli
from iree_glm.runtime import Session

# The tiny GLM-4's last-row logits (|logit| up to 1.9) moved by 0.015 with this prompt; the
# 330M config's (|logit| up to 2.7) by 0.018 (docs/accuracy.md). bf16 keeps 8 bits of mantissa
# (relative rounding 2^-9 per input); the bound leaves room for other prompts and CPUs.
LOGIT_BOUND = 0.05
NO_BF16 = "avx512bf16" not in cpu_features.host_features()


def test_the_demotion_is_added_to_the_preprocessing_pipeline():
    (flag,) = compute_dtype.flag_overrides("bf16", HOST_CPU_FLAGS)
    name, pipeline = flag.split("=", 1)
    assert name == compute_dtype.PIPELINE_FLAG
    # the attention decomposition stays, and the demotion runs in the same util.func pipeline
    assert "iree-linalg-ext-decompose-attention," in pipeline and pipeline.endswith(compute_dtype.DEMOTE_PASS + "))")
    assert compute_dtype.flag_overrides("f32", HOST_CPU_FLAGS) == ()
    (alone,) = compute_dtype.flag_overrides("bf16", ["--iree-opt-level=O3"])
    assert alone.endswith(f"=builtin.module(util.func({compute_dtype.DEMOTE_PASS}))")


@pytest.mark.parametrize("flags, needle", [
    (["--iree-llvmcpu-target-cpu=znver3"], "target CPU x86_64 znver3 lacks avx512bf16"),
    (["--iree-llvmcpu-target-cpu=znver4", "--iree-llvmcpu-target-cpu-features=-avx512bf16"], "lacks avx512bf16"),
    (["--iree-llvmcpu-target-triple=aarch64-linux-gnu", "--iree-llvmcpu-target-cpu=cortex-x4"], "x86-64 with avx512bf16 only"),
])
def test_targets_without_avx512_bf16_are_refused(flags, needle):
    why = compute_dtype.refusal("bf16", "llvm-cpu", flags)
    assert why is not None and needle in why and "\n" not in why
    assert compute_dtype.refusal("f32", "llvm-cpu", flags) is None
    assert compute_dtype.refusal("bf16", "llvm-cpu", ["--iree-llvmcpu-target-cpu=sapphirerapids"]) is None
    assert "llvm-cpu" in compute_dtype.refusal("bf16", "vulkan-spirv", [])


def test_build_refuses_before_any_work(tmp_path):
    with pytest.raises(UserError, match="znver3 lacks avx512bf16"):
        build_bundle(None, tmp_path / "b", BuildOptions(compute_dtype="bf16", extra_flags=("--iree-llvmcpu-target-cpu=znver3",)))
    assert not (tmp_path / "b").exists()
    with pytest.raises(UserError, match="unknown compute dtype 'f16'"):
        build_bundle(None, tmp_path / "b", BuildOptions(compute_dtype="f16"))


def test_the_cli_refuses_in_one_line(tmp_path, capsys, glm4_checkpoint):
    code = run_cli(compile_cli.main, [str(glm4_checkpoint[0]), "-o", str(tmp_path / "b"), "--compute-dtype", "bf16",
                                      "--activation-dtype", "bf16"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "--compute-dtype bf16 is for f32 activations" in errors[0]
    assert not (tmp_path / "b").exists()


@pytest.fixture(scope="module")
def bf16_bundle(glm4_checkpoint, tmp_path_factory):
    if NO_BF16:
        pytest.skip("this CPU has no avx512_bf16: bf16 compute is refused for its host target")
    out = tmp_path_factory.mktemp("bundles") / "glm4-bf16"
    build_bundle(glm4_checkpoint[0], out, BuildOptions(max_context=128, compute_dtype="bf16"))
    return out


def test_the_manifest_records_bf16_compute_and_its_feature(bf16_bundle, glm4_bundle):
    options = read_manifest(bf16_bundle).options
    assert options.compute_dtype == "bf16" and options.activation_dtype == "f32"
    assert "avx512bf16" in options.target_cpu.features
    assert read_manifest(glm4_bundle).options.compute_dtype == "f32"
    flags = read_manifest(bf16_bundle).modules[0].flags
    assert any(compute_dtype.DEMOTE_PASS in f for f in flags)


def test_bf16_logits_are_within_the_bound_of_f32(bf16_bundle, glm4_bundle):
    ids = [(i * 37) % 200 + 1 for i in range(40)]
    logits = {}
    for name, bundle in (("f32", glm4_bundle), ("bf16", bf16_bundle)):
        session = Session.load(bundle)
        logits[name] = np.asarray(session.run_prefill(ids, 0, session.new_cache()), dtype=np.float32)
    err = np.abs(logits["bf16"] - logits["f32"]).max()
    assert 0 < err < LOGIT_BOUND  # not bit-identical: the matmuls did run in bf16
    session = Session.load(bf16_bundle)
    out = session.generate(ids, max_new_tokens=6, stop_ids=())
    assert len(out.generated_ids) == 6 and out.stop_reason == "max_new_tokens"


def test_a_cpu_without_avx512_bf16_refuses_the_bundle(bf16_bundle, monkeypatch):
    real = cpu_features.host_features()
    monkeypatch.setattr(cpu_features, "host_features", lambda: real - {"avx512bf16"})
    with pytest.raises(BundleError) as e:
        Session.load(bf16_bundle)
    assert "avx512bf16" in str(e.value) and "\n" not in str(e.value)


NO_BF16_KERNEL = kernel_choice.kernel_set_for(device_target(load_profile("host-cpu").host), ())[0] is not toolchain.X86_64_AMX or \
    bool(cpu_features.missing_features(bf16_kernel.FEATURES))


@pytest.fixture(scope="module")
def demoted_bundle(glm4_checkpoint, tmp_path_factory):
    """bf16 compute by IREE's demotion alone (a kernel set without the bf16 kernel): the reference."""
    if NO_BF16:
        pytest.skip("this CPU has no avx512_bf16: bf16 compute is refused for its host target")
    out = tmp_path_factory.mktemp("bundles") / "glm4-bf16-demoted"
    build_bundle(glm4_checkpoint[0], out, BuildOptions(max_context=128, compute_dtype="bf16", kernel_set="x86_64_avx512"))
    return out


def test_the_host_bundle_calls_the_bf16_kernels(bf16_bundle, demoted_bundle, glm4_bundle):
    if NO_BF16_KERNEL:
        pytest.skip("the host target has no amx-bf16 (or no AMX kernel set): bf16 compute stays IREE's demotion")
    ours = read_manifest(bf16_bundle).options
    assert ours.bf16_kernel.kernel_set == "x86_64_amx" and ours.bf16_kernel.prefill == "matmul"
    assert {"amx-bf16", "avx512bf16", "amx-tile"} <= set(ours.bf16_kernel.features)
    demoted = read_manifest(demoted_bundle).options
    assert demoted.bf16_kernel.kernel == "iree" and "has no bf16 kernel" in demoted.bf16_kernel.reason
    assert read_manifest(glm4_bundle).options.bf16_kernel is None
    # the layer weights are bf16 in the archive: about half of the f32 bundle's
    assert ours.parameter_bytes < 0.75 * read_manifest(glm4_bundle).options.parameter_bytes
    assert demoted.parameter_bytes == read_manifest(glm4_bundle).options.parameter_bytes


def test_the_bf16_kernels_match_the_demoted_bundle(bf16_bundle, demoted_bundle, glm4_bundle):
    """The same bf16-rounded inputs and f32 sums as IREE's demotion: logits within the stated
    bound of it (and of f32), and the same greedy tokens."""
    if NO_BF16_KERNEL:
        pytest.skip("the host target has no amx-bf16 (or no AMX kernel set): bf16 compute stays IREE's demotion")
    ids = [(i * 37) % 200 + 1 for i in range(40)]
    logits, tokens = {}, {}
    for name, bundle in (("ours", bf16_bundle), ("demoted", demoted_bundle), ("f32", glm4_bundle)):
        session = Session.load(bundle)
        logits[name] = np.asarray(session.run_prefill(ids, 0, session.new_cache()), dtype=np.float32)
        tokens[name] = session.generate(ids, max_new_tokens=8, stop_ids=()).generated_ids
    assert np.abs(logits["ours"] - logits["demoted"]).max() < LOGIT_BOUND
    assert 0 < np.abs(logits["ours"] - logits["f32"]).max() < LOGIT_BOUND
    assert tokens["ours"] == tokens["demoted"]


def test_a_cpu_without_amx_bf16_refuses_the_kernel_bundle(bf16_bundle, monkeypatch):
    if NO_BF16_KERNEL:
        pytest.skip("the host target has no amx-bf16: its bundle has no bf16 kernel")
    real = cpu_features.host_features()
    monkeypatch.setattr(cpu_features, "host_features", lambda: real - {"amx-bf16"})
    with pytest.raises(BundleError) as e:
        Session.load(bf16_bundle)
    assert "amx-bf16" in str(e.value) and "\n" not in str(e.value)


def test_targets_without_amx_bf16_keep_the_demotion():
    request = kernel_choice.KernelRequest(
        Target("llvm-cpu", "local-task", ("--iree-llvmcpu-target-cpu=sapphirerapids", "--iree-llvmcpu-target-cpu-features=-amx-bf16")),
        (), "none", "none", "none", "f32", None, False, True, True, True, compute_dtype="bf16")
    if toolchain.build_reason(toolchain.X86_64_AMX):
        pytest.skip(toolchain.build_reason(toolchain.X86_64_AMX))
    choice = kernel_choice.choose(request).bf16
    # AMX-BF16 is one of the AMX set's features: without it the target gets the AVX-512 set
    assert choice.kernel == "iree" and "x86_64_avx512 has no bf16 kernel" in choice.reason
    ours = kernel_choice.choose(replace(request, target=Target("llvm-cpu", "local-task", ("--iree-llvmcpu-target-cpu=sapphirerapids",)))).bf16
    assert ours.kernel_set == "x86_64_amx" and ours.decode == "matvec"
    assert kernel_choice.choose(replace(request, quant_mode="int8")).bf16.kernel == "none"


def test_verify_rows_of_the_kernel_bundle_are_decode_steps(bf16_bundle):
    """Speculative decoding's verify rows: the layers multiply as decode does (the same
    matrix-vector kernel per row, bit for bit in test_bf16_kernel.py), but other ops (attention,
    norms) may differ from decode's by f32 rounding, which bf16 rounding
    of the next matmul's input can amplify to a bf16 step (on the 330M 4-layer bundles: 0 here,
    0.007 with IREE's demotion alone). Within the stated bound, and the same greedy choice."""
    if NO_BF16_KERNEL:
        pytest.skip("the host target has no amx-bf16: its bundle has no bf16 kernel")
    session = Session.load(bf16_bundle)
    prompt, extension = [(i * 37) % 200 + 1 for i in range(20)], [7, 8, 9, 10]
    cache = session.new_cache()
    session.run_prefill(prompt, 0, cache)
    rows = session.verify(extension, len(prompt), cache)
    cache = session.new_cache()
    session.run_prefill(prompt, 0, cache)
    steps = np.stack([session.decode([t], [len(prompt) + i], cache)[0] for i, t in enumerate(extension)])
    assert np.abs(rows - steps).max() < LOGIT_BOUND
    assert (rows.argmax(axis=1) == steps.argmax(axis=1)).all()
