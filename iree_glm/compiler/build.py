"""Checkpoint -> bundle: load, export, write parameters, lower with IREE, write the manifest.

`build_bundle` is the library entry point behind `python -m iree_glm.compile`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from iree_glm.frontend import default_model
from iree_glm.bundle.manifest import INT8_ACTIVATIONS, Manifest, ModuleEntry
from iree_glm.bundle.writer import finish_manifest, writing_bundle
from iree_glm.frontend.checkpoint import hf_config_dict, open_checkpoint, load_model
from iree_glm.errors import UserError
from iree_glm.export.program import PARAMETER_SCOPE, EntryPoint, export_mlir, write_parameter_archive
from iree_glm.transforms.prune import PruneSpec, calibration_ids, check_spec, prune_model
from iree_glm.compiler.iree_compile import compile_mlir
from iree_glm.planner.report import svg_picture
from iree_glm.planner.profile import Profile, load_profile
from iree_glm.planner.scheduler import PartitionPlan, plan_partition, quant_dtypes
from iree_glm.compiler.stages import compile_stages, stand_ins
from iree_glm.export.stages import export_stages, stages_of
from iree_glm.transforms.quantize import QuantLinear, QuantSpec, quantize_model, quantized_layer_count, state_bytes
from iree_glm.transforms import activation_dtype
from iree_glm.frontend import sparse_attention
from iree_glm.compiler.target import device_target

MODULE_FILE = "model.vmfb"
PARAMETER_FILE = "weights.irpa"
PLAN_FILE, PLAN_PICTURE = "plan.json", "plan.svg"
DEFAULT_MAX_CONTEXT = 1024


@dataclass
class BuildOptions:
    max_context: int | None = None  # None: min(1024, the model's max_position_embeddings)
    profile: str = "host-cpu"
    decode_batch_sizes: tuple[int, ...] = (1,)
    extra_flags: tuple[str, ...] = field(default_factory=tuple)
    prune: PruneSpec | None = None  # structured pruning (iree_glm/prune.py)
    calibration: Path | None = None  # pruning calibration text (default: shipped stdlib sample)
    quant: QuantSpec = field(default_factory=QuantSpec)  # weight quantization (iree_glm/quant.py)
    sparse_attention: sparse_attention.SparsePattern | None = None  # block-sparse attention (passes/sparse_attention.py)
    activation_dtype: str | None = None  # f32, f16 or bf16 (iree_glm/activation_dtype.py); None: the profile's
    int8_activations: str | None = None  # int8 matmuls run as i8 x i8 (none, prefill, all; passes/dequant_matmul.py); None: the profile's
    embeddings: bool = True  # an `embed` entry point (final-norm hidden states, for /v1/embeddings)


@dataclass
class BuildResult:
    bundle: Path
    manifest: Manifest
    seconds: dict[str, float]
    plan: PartitionPlan | None = None


def cache_slots(opts: BuildOptions) -> int:
    """KV-cache positions per row: the context, or G + ring for a sliding-window cache."""
    sparse = opts.sparse_attention
    return sparse.ring_slots if sparse is not None and sparse.ring else opts.max_context


def _entry_points(opts: BuildOptions, embed: bool = False) -> list[EntryPoint]:
    """prefill, decode / decode_bN, and with `embed` the `embed` entry point (hidden states
    for /v1/embeddings)."""
    slots = cache_slots(opts)
    eps = [EntryPoint("prefill", 1, None, slots)]
    for b in opts.decode_batch_sizes:
        eps.append(EntryPoint("decode" if b == 1 else f"decode_b{b}", b, 1, slots))
    if embed:
        eps.append(EntryPoint("embed", 1, None, slots, returns="hidden"))
    return eps


def _fused_expected(model, entry_points: list[EntryPoint]) -> int:
    """Matmuls reading packed weights over all entry points (`embed` does not run the head)."""
    count = quantized_layer_count(model)
    head = int(count > 0 and isinstance(getattr(model, "lm_head", None), QuantLinear))
    return sum(count - head if ep.returns == "hidden" else count for ep in entry_points)


def _check_options(opts: BuildOptions) -> Profile:
    """Check the options that need no checkpoint; returns the loaded profile."""
    if opts.max_context is not None and opts.max_context < 2:
        raise UserError(f"--max-context must be at least 2 (got {opts.max_context})")
    opts.quant.check()
    if opts.activation_dtype is not None:
        activation_dtype.check(opts.activation_dtype)
    if opts.int8_activations is not None and opts.int8_activations not in INT8_ACTIVATIONS:
        raise UserError(f"--int8-activations: unknown mode '{opts.int8_activations}' (choose from {', '.join(INT8_ACTIVATIONS)})")
    return load_profile(opts.profile)


def build_bundle(
    checkpoint: Path | None,
    out: Path,
    opts: BuildOptions | None = None,
    progress: Callable[[str], None] = lambda stage: None,
) -> BuildResult:
    """Compile a checkpoint folder (or, with None, the default model) into a bundle at `out`."""
    opts = opts or BuildOptions()
    profile = _check_options(opts)
    target = device_target(profile.host)
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="iree_glm-") as work:
        work = Path(work)
        source = {"checkpoint": Path(checkpoint).name if checkpoint else None}
        if checkpoint is None:
            checkpoint = default_model.write_default_checkpoint(work / "default-checkpoint")
            source = {"checkpoint": None, "default_model": default_model.DESCRIPTION}
        ckpt = open_checkpoint(Path(checkpoint))
        if opts.max_context is None:  # a sliding-window cache costs the same at any context
            ring = opts.sparse_attention is not None and opts.sparse_attention.ring
            limit = ckpt.config.max_position_embeddings
            opts = replace(opts, max_context=limit if ring else min(DEFAULT_MAX_CONTEXT, limit))
        if opts.max_context > ckpt.config.max_position_embeddings:
            raise UserError(
                f"--max-context {opts.max_context} exceeds the model's max_position_embeddings "
                f"({ckpt.config.max_position_embeddings})"
            )
        if opts.prune is not None:
            check_spec(opts.prune, ckpt.config)
        if opts.sparse_attention is not None:
            opts.sparse_attention.check(opts.max_context)
        dtype = opts.activation_dtype or profile.host.activation_dtype
        if dtype != "f32" and (opts.quant.mode != "none" or opts.sparse_attention is not None):
            raise UserError(f"--activation-dtype {dtype} is not supported with --quant or --sparse-attention yet (use f32)")
        with writing_bundle(out) as folder:
            t = time.perf_counter()
            progress("load weights")
            model = load_model(ckpt)
            seconds["load"] = time.perf_counter() - t
            if opts.prune is not None:
                t = time.perf_counter()
                tok = ckpt.path / "tokenizer.json" if ckpt.has_tokenizer else None
                model, _plan = prune_model(model, opts.prune, calibration_ids(tok, opts.calibration))
                seconds["prune"] = time.perf_counter() - t
            config = model.cfg
            fp32_bytes = state_bytes(model.state_dict())
            model.fuse_qkv()
            if opts.quant.mode != "none":
                model = quantize_model(model, opts.quant)
            plan = plan_partition(config, profile, quant_dtypes(opts.quant.mode, opts.quant.head, opts.quant.embeddings), capacity=cache_slots(opts))
            stages = stages_of(plan) if len(plan.devices_used) > 1 else []  # one module per device
            if stages and dtype != "f32":
                raise UserError(f"--activation-dtype {dtype} is not supported with a multi-device plan (profile {profile.name})")
            model = activation_dtype.convert(model, dtype)
            if stages and opts.sparse_attention is not None:
                raise UserError(f"--sparse-attention is not supported with a multi-device plan (profile {profile.name})")

            t = time.perf_counter()
            progress("export to MLIR")
            # The embed entry point: single-module bundles with a KV cache indexed by position.
            entry_points = _entry_points(opts, embed=opts.embeddings and not stages and cache_slots(opts) == opts.max_context)
            fused_expected = _fused_expected(model, entry_points)
            sparse_attention.enable(model, opts.sparse_attention)
            if stages:
                exported = export_stages(model, stages, entry_points, work)
            else:
                module, _ctx = export_mlir(model, entry_points, cache_dtype=activation_dtype.check(dtype))
                if opts.sparse_attention is not None:
                    from iree_glm.passes import sparse_attention as sparse_pass

                    sparse_pass.run(module)
                mlir_path = work / "model.mlirbc"
                with open(mlir_path, "wb") as f:
                    module.operation.write_bytecode(f)
                del module, _ctx
            seconds["export"] = time.perf_counter() - t

            t = time.perf_counter()
            progress("write parameter archive")
            parameter_bytes = write_parameter_archive(model, folder / PARAMETER_FILE)
            compression = parameter_bytes / fp32_bytes
            del model
            seconds["parameters"] = time.perf_counter() - t

            t = time.perf_counter()
            progress(f"compile with IREE ({target.backend})")
            log = Path(out).parent / f"{Path(out).name}.compile-error.log"
            int8_activations = _int8_activations(opts, profile)
            kernel = _int4_kernel_choice(opts.quant, target, opts.extra_flags)
            if kernel["kernel"] != "avx2" and opts.quant.mode == "int4":
                progress(f"int4 layers: generic fused form, not the AVX2 kernels ({kernel['reason']})")
            int8_kernel = _int8_kernel_choice(opts.quant, target, opts.extra_flags, int8_activations, profile.host.int8_prefill_kernel)
            if int8_kernel["kernel"] != "none" and not stages:
                what = "call the AVX2 matrix-vector kernel" if int8_kernel["kernel"] == "avx2" else f"generic fused form ({int8_kernel['reason']})"
                progress(f"int8 {'layers' if opts.quant.mode == 'int8' else 'head'}: one-row (decode) matmuls {what}")
                if int8_kernel.get("prefill"):
                    progress(f"int8 layers: prompt matmuls {'call the AVX2 matrix kernel' if int8_kernel['prefill'] == 'matmul' else 'run ' + int8_kernel['prefill']}")
            glue = _quantize_glue_record(kernel, int8_kernel, profile.host.quantize_glue)
            passes = [_dequant_matmul_pass(fused_expected, target.backend == "llvm-cpu", int8_activations, kernel["kernel"] == "avx2",
                                           int8_kernel["kernel"] == "avx2", int8_kernel.get("prefill") == "matmul", glue)] if fused_expected else []
            attention = _attention_kernel_choice(target, opts, dtype, bool(stages), profile.host.attention_kernel)
            if attention["kernel"] == "avx2":
                passes.append(_attention_kernel_pass(attention))
            stage_info = None
            if stages:
                modules, stage_info = compile_stages(exported, stages, profile, folder, opts.extra_flags, log,
                                                     lambda n: [_dequant_matmul_pass(n)] if n else [])
            else:
                flags = compile_mlir(mlir_path, folder / MODULE_FILE, target, opts.extra_flags, log, input_passes=passes)
                modules = [ModuleEntry(MODULE_FILE, "all", target.backend, target.driver, flags)]
            seconds["compile"] = time.perf_counter() - t
            if glue is not None and glue:
                progress("kernel quantizations computing their input: " + ", ".join(f"{kind} {n}" for kind, n in sorted(glue.items())))
            if attention.get("left_to_iree"):
                progress(f"attention: {attention['left_to_iree']} op(s) of a form the AVX2 kernel does not compute kept IREE's lowering")

            for f in ckpt.tokenizer_files:
                shutil.copy(f, folder / f.name)
            if opts.prune is None:
                shutil.copy(ckpt.path / "config.json", folder / "config.json")
            else:  # the pruned model is a smaller config
                (folder / "config.json").write_text(json.dumps(hf_config_dict(config), indent=2))
            manifest = Manifest(
                model=config.to_dict(),
                max_context=opts.max_context,
                entry_points=[ep.__dict__ for ep in entry_points],
                modules=modules,
                parameters=PARAMETER_FILE,
                parameter_scope=PARAMETER_SCOPE,
                tokenizer="tokenizer.json" if ckpt.has_tokenizer else None,
                source=source,
                profile=profile.name,
                options={"max_context": opts.max_context, "dtype": activation_dtype.DTYPES[dtype], "activation_dtype": dtype,
                         **({"prune": str(opts.prune)} if opts.prune else {}),
                         **({"sparse_attention": str(opts.sparse_attention)} if opts.sparse_attention else {}),
                         "kv_cache_slots": cache_slots(opts),
                         **({"prefix_cache_mb": profile.policy.prefix_cache_mb} if profile.policy.prefix_cache_mb is not None else {}),
                         **({"prefill_chunk": profile.policy.prefill_chunk} if profile.policy.prefill_chunk is not None else {}),
                         "quant": {**opts.quant.to_dict(), **({"int8_activations": int8_activations} if opts.quant.mode != "none" and not stages else {})},
                         "parameter_bytes": parameter_bytes,
                         **({"int4_kernel": kernel} if opts.quant.mode == "int4" and not stages else {}),
                         **({"int8_kernel": int8_kernel} if int8_kernel["kernel"] != "none" and not stages else {}),
                         "attention_kernel": attention,
                         "compression_vs_fp32": round(compression, 4), "plan": PLAN_FILE,
                         **({"stages": stage_info} if stage_info else {})},
            )
            progress("write manifest")
            (folder / PLAN_FILE).write_text(plan.to_json())
            (folder / PLAN_PICTURE).write_text(svg_picture(plan, stand_ins(stage_info)))
            finish_manifest(folder, manifest)
    return BuildResult(Path(out), manifest, seconds, plan)


def _int8_activations(opts: BuildOptions, profile: Profile) -> str:
    """Which int8 matmuls quantize activations: the option, else the host device's profile entry."""
    return opts.int8_activations or profile.host.int8_activations


def _avx2_kernel_reason(target, extra_flags: tuple[str, ...]) -> str | None:
    """Why our AVX2 kernels cannot be linked into this build (None if they can): llvm-cpu for
    this x86-64 host only."""
    if target.backend != "llvm-cpu":
        return f"backend {target.backend}"
    flags = [*target.flags, *extra_flags]
    cross = [f for f in flags if f.startswith("--iree-llvmcpu-target-triple=") and not f.split("=", 1)[1].startswith("x86_64")]
    if cross:
        return f"target {cross[-1].split('=', 1)[1]}"
    from iree_glm.kernels import int4 as int4_kernel

    return int4_kernel.unavailable_reason()


def _int4_kernel_choice(quant: QuantSpec, target, extra_flags: tuple[str, ...]) -> dict:
    """Whether int4 layers call the AVX2 kernels (passes/int4_kernel.py): {"kernel": "avx2"},
    else the generic fused form and why."""
    if quant.mode != "int4":
        return {"kernel": "none", "reason": "not int4"}
    reason = _avx2_kernel_reason(target, extra_flags)
    return {"kernel": "generic", "reason": reason} if reason else {"kernel": "avx2"}


def _int8_kernel_choice(quant: QuantSpec, target, extra_flags: tuple[str, ...], int8_activations: str, prefill_kernel: bool) -> dict:
    """Whether int8 matmuls call the AVX2 kernels (passes/int8_kernel.py): {"kernel": "avx2",
    "decode": "matvec"} for one-row matmuls (int8 layers, the int8 head of int8 and int4
    bundles); for int8 layers also how prompts multiply: "prefill": "matmul" (our matrix kernel,
    where `int8_activations` makes them integer matmuls and the profile's `prefill_kernel`
    allows), "mmt4d" (IREE's integer matmul) or "generic" (weight-only fused form). Without the
    kernels: the generic fused form and why."""
    if quant.mode == "none" or (quant.mode != "int8" and quant.head != "int8"):
        return {"kernel": "none", "reason": "no int8 matmul"}
    reason = _avx2_kernel_reason(target, extra_flags)
    if reason:
        return {"kernel": "generic", "reason": reason}
    if quant.mode != "int8":
        return {"kernel": "avx2", "decode": "matvec"}
    prefill = "generic" if int8_activations == "none" else "matmul" if prefill_kernel else "mmt4d"
    return {"kernel": "avx2", "decode": "matvec", "prefill": prefill}


def _attention_kernel_choice(target, opts: BuildOptions, dtype: str, staged: bool, wanted: bool) -> dict:
    """Whether attention calls the AVX2 flash-attention kernel (passes/attention_kernel.py):
    {"kernel": "avx2"}, else IREE's own lowering ("iree") and why. `wanted`: the host profile's
    `attention_kernel`."""
    if not wanted:
        return {"kernel": "iree", "reason": "profile: attention_kernel = false"}
    if dtype != "f32":
        return {"kernel": "iree", "reason": f"activation dtype {dtype} (the kernel is f32)"}
    if opts.sparse_attention is not None:
        return {"kernel": "iree", "reason": "block-sparse attention"}
    if staged:
        return {"kernel": "iree", "reason": "multi-device plan"}
    reason = _avx2_kernel_reason(target, opts.extra_flags)
    return {"kernel": "iree", "reason": reason} if reason else {"kernel": "avx2"}


def _attention_kernel_pass(record: dict):
    """The input-phase pass making attention ops calls of the AVX2 kernel; counts what it
    rewrote and what it left to IREE (other forms) in `record` (the manifest's entry)."""

    def run(src: Path, dst: Path) -> None:
        from iree_glm.passes import attention_kernel

        rewritten, left = attention_kernel.rewrite_file(src, dst, attention_kernel.build_object(Path(dst).parent))
        record.update(rewritten=rewritten, left_to_iree=left)

    return run


def _quantize_glue_record(kernel: dict, int8_kernel: dict, wanted: bool) -> dict | None:
    """The dict the dequant-matmul pass counts the kernels' fused quantizations in (by kind,
    "none": plain), also the manifest's `quantize_glue` in the int4 / int8 kernel's entry; None
    when no prompt matmul calls a kernel or the profile's `quantize_glue` is off (then the
    entry says so)."""
    entry = kernel if kernel["kernel"] == "avx2" else int8_kernel if int8_kernel.get("prefill") == "matmul" else None
    if entry is None:
        return None
    if not wanted:
        entry["quantize_glue"] = "off (profile: quantize_glue = false)"
        return None
    entry["quantize_glue"] = {}
    return entry["quantize_glue"]


def _dequant_matmul_pass(expected: int, cpu_tiles: bool = False, int8_activations: str = "none", int4_kernel: bool = False,
                        int8_kernel: bool = False, int8_matmul: bool = True, glue: dict | None = None):
    """The input-phase pass fusing weight dequantization into matmuls; fails if any is left unfused.

    `cpu_tiles`: the target is llvm-cpu, so decode dispatches get our measured tile sizes.
    `int8_activations`: which int8 matmuls become i8 x i8 -> i32 (passes/dequant_matmul.py).
    `int4_kernel` / `int8_kernel`: int4 matmuls / int8 matmuls call the AVX2 kernels, compiled
    beside the rewritten IR (`int8_matmul`: prompts' integer matmuls too). `glue`: the kernels'
    quantizations compute their input where they can, counted in this dict (see dequant_matmul.run)."""

    def run(src: Path, dst: Path) -> None:
        from iree_glm.passes.dequant_matmul import rewrite_file

        kernel = None
        if int4_kernel:
            from iree_glm.kernels import int4 as k

            kernel = k.build_object(Path(dst).parent)
        kernel8 = None
        if int8_kernel:
            from iree_glm.kernels import int8 as k8

            kernel8 = k8.build_object(Path(dst).parent)
        fused = rewrite_file(src, dst, cpu_tiles, int8_activations, kernel, kernel8, int8_matmul, glue)
        if fused != expected:
            raise RuntimeError(f"dequant-matmul pass fused {fused} of {expected} quantized matmuls")

    return run
