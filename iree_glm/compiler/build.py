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

import torch

from iree_glm.frontend import default_model
from iree_glm.bundle.manifest import INT8_ACTIVATIONS, VERIFY, BundleOptions, EntryPoint, Manifest, ModuleEntry, QuantRecord, TargetCpuRecord, decode_name
from iree_glm.bundle.model_config import ModelConfig
from iree_glm.bundle.writer import finish_manifest, writing_bundle
from iree_glm.frontend.checkpoint import hf_config_dict, open_checkpoint, load_model
from iree_glm.errors import UserError
from iree_glm.export import cache as export_cache
from iree_glm.export.program import PARAMETER_SCOPE, export_mlir, write_parameter_archive
from iree_glm.transforms.prune import PruneSpec, calibration_ids, check_spec, prune_model
from iree_glm.compiler.iree_compile import compile_mlir
from iree_glm.planner.report import svg_picture
from iree_glm.planner.profile import Profile, load_profile
from iree_glm.planner.scheduler import PartitionPlan, plan_partition, quant_dtypes
from iree_glm.compiler.stages import compile_stages, stand_ins
from iree_glm.compiler import phases
from iree_glm.planner.phases import plan_phases
from iree_glm.export.stages import export_stages, stages_of
from iree_glm.transforms.quantize import QuantLinear, QuantSpec, bf16_layers, quantize_model, quantized_layer_count, state_bytes
from iree_glm.transforms import activation_dtype
from iree_glm.frontend import sparse_attention
from iree_glm.compiler import compute_dtype, exact_rows, kernel_choice
from iree_glm.compiler.target import Target, device_target
from iree_glm.kernels import target_cpu, toolchain
from iree_glm.passes.dequant_matmul import DequantMatmulPass
from iree_glm.passes.pipeline import PassPipeline

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
    compute_dtype: str | None = None  # f32 or bf16: what f32 matmuls multiply in (compiler/compute_dtype.py); None: the profile's
    int8_activations: str | None = None  # int8 matmuls run as i8 x i8 (none, prefill, all; passes/dequant_matmul.py); None: the profile's
    kernel_set: str | None = None  # our kernels' instruction-set level ("best" or a set's name, kernels/toolchain.py); None: the profile's
    embeddings: bool = True  # an `embed` entry point (final-norm hidden states, for /v1/embeddings)
    export_cache: Path | None = None  # exported MLIR kept by model shape (export/cache.py); None: $IREE_GLM_EXPORT_CACHE, if set


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


def _entry_points(opts: BuildOptions, staged: bool, embed: bool = False) -> list[EntryPoint]:
    """prefill, decode (per batch size), with `embed` the `embed` entry point (hidden states for
    /v1/embeddings) and, where speculative decoding can run, `verify`: a prefill that returns
    every row's logits (runtime/speculative.py). `verify` is not for a sliding-window cache (a
    rejected draft's entries would overwrite ring slots still in the window) nor for a
    multi-device pipeline (its stages export prefill and decode only)."""
    slots = cache_slots(opts)
    eps = [EntryPoint("prefill", 1, None, slots)]
    for b in opts.decode_batch_sizes:
        eps.append(EntryPoint(decode_name(b), b, 1, slots))
    if embed:
        eps.append(EntryPoint("embed", 1, None, slots, returns="hidden"))
    ring = opts.sparse_attention is not None and opts.sparse_attention.ring
    if not staged and not ring:
        eps.append(EntryPoint(VERIFY, 1, None, slots, all_logits=True))
    return eps


def exact_verify_eligible(model, kernels: kernel_choice.KernelPlan, dtype: str, sparse: bool) -> bool:
    """Whether every matmul of the model calls our decode kernel for one row and its few-row
    form for several (bit for bit the same per row, tests/kernels), so that decode steps can be
    one-row `verify` calls at the decode kernels' speed (each kernel dispatch branches on the row count,
    passes/dequant_matmul.py) and a verify call of a few rows computes each as one row
    (compiler/exact_rows.py says how many). Not with fp32 matmuls: for a dynamic row count they
    are data-tiled 16 rows at a time, a one-row call costs ~1.7 decode steps (dispatch profile,
    330M shapes), so those bundles keep their decode function and the margin."""
    from iree_glm.kernels import int4 as int4_kernel, int8 as int8_kernel

    fp32_matmuls = any(isinstance(m, torch.nn.Linear) for m in model.modules()) or not isinstance(getattr(model, "lm_head", None), QuantLinear)
    if dtype != "f32" or sparse or fp32_matmuls:
        return False
    for m in model.modules():
        if not isinstance(m, QuantLinear):
            continue
        if m.mode not in ("int8", "int4"):  # bf16 layers: IREE's / the bf16 kernel's own code
            return False
        choice = kernels.int4 if m.mode == "int4" else kernels.int8
        fits = int4_kernel.fits(m.in_features, m.group, 1) if m.mode == "int4" else int8_kernel.fits(m.in_features, int8_kernel.LANES, 1)
        if not (choice.ours and fits and toolchain.by_name(choice.kernel_set).verify_rows):
            return False
    return quantized_layer_count(model) > 0


def mark_verify_like_decode(model) -> None:
    """The int8 decode kernel quantizes x per block of 32 (kernels/int8.py); where it will run,
    the `verify` entry point quantizes its rows the same way in the graph, so that checking
    draft tokens computes what decode steps would (speculative decoding's greedy output is then
    the plain decode's). Other entry points are unchanged (program.py sets it for verify only)."""
    from iree_glm.kernels import int8 as int8_kernel

    for module in model.modules():
        if isinstance(module, QuantLinear) and module.mode == "int8" and int8_kernel.fits(module.in_features, int8_kernel.LANES, 1):
            module.verify_like_decode = True


def mark_like_int8_kernel(model) -> dict:
    """For a module another device runs (a `decode-DEVICE` plan's): where the CPU module's int8
    decode kernel runs, its `decode` and `verify` entry points quantize x per block of 32 in the
    graph, as that kernel does, so that a plan switch mid-generation keeps the tokens (a generic
    int8 x fp32 matmul differs by ~3e-2 in the logits). Returns {layer: its verify_like_decode
    before} to undo it after the export: the CPU module's own export must not quantize in the graph."""
    from iree_glm.kernels import int8 as int8_kernel

    marked = {m: m.verify_like_decode for m in model.modules()
              if isinstance(m, QuantLinear) and m.mode == "int8" and int8_kernel.fits(m.in_features, int8_kernel.LANES, 1)}
    for m in marked:
        m.decode_like_kernel = m.verify_like_decode = True
    return marked


def _keys_in_place(model, on: bool) -> None:
    """Whether the next export's prompt attention reads whole cache rows in place (our kernel's
    form, frontend/model.py's `Attention.keys_in_place`) or gathers the attended keys."""
    for m in model.modules():
        if hasattr(m, "keys_in_place"):
            m.keys_in_place = on


def _export_for_other_devices(model, entry_points: list[EntryPoint], dtype: str, work: Path, cache: Path | None) -> Path:
    """The program as `mark_like_int8_kernel` has it, for the decode modules of other devices."""
    marked = mark_like_int8_kernel(model)
    try:
        (work / "other-devices").mkdir(exist_ok=True)
        return _export_single(model, entry_points, dtype, False, work / "other-devices", cache)
    finally:
        for m, verify in marked.items():
            m.decode_like_kernel, m.verify_like_decode = False, verify


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
    if opts.compute_dtype is not None:
        compute_dtype.check(opts.compute_dtype)
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
    cache = export_cache.cache_folder(opts.export_cache)  # a folder that cannot be one stops the build before it starts
    target = device_target(profile.host)
    compute = opts.compute_dtype or profile.host.compute_dtype
    dtype = opts.activation_dtype or profile.host.activation_dtype
    if dtype != "f32" and (opts.quant.mode != "none" or opts.sparse_attention is not None):
        raise UserError(f"--activation-dtype {dtype} is not supported with --quant or --sparse-attention yet (use f32)")
    if compute != "f32" and dtype != "f32":  # a conflict on any CPU: refused before what this CPU lacks
        raise UserError(f"--compute-dtype {compute} is for f32 activations (--activation-dtype {dtype} already multiplies in {dtype})")
    refused = compute_dtype.refusal(compute, target.backend, [*target.flags, *opts.extra_flags])
    if refused:
        raise UserError(refused)
    extra_flags = (*opts.extra_flags, *compute_dtype.flag_overrides(compute, [*target.flags, *opts.extra_flags]))
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="iree_glm-") as work:
        work = Path(work)
        source = {"checkpoint": Path(checkpoint).name if checkpoint else None}
        if checkpoint is None:
            checkpoint = default_model.write_default_checkpoint(work / "default-checkpoint")
            source = {"checkpoint": None, "default_model": default_model.DESCRIPTION}
        ckpt = open_checkpoint(Path(checkpoint))
        opts = _with_context(opts, ckpt.config)
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
            weight_dtypes = quant_dtypes(opts.quant.mode, opts.quant.head, opts.quant.embeddings)
            plan = plan_partition(config, profile, weight_dtypes, capacity=cache_slots(opts))
            stages = stages_of(plan) if len(plan.devices_used) > 1 else []  # one module per device
            phase_plan = plan_phases(config, profile, weight_dtypes, capacity=cache_slots(opts))
            not_split = phases.why_not_run(phase_plan, bool(stages), dtype, opts.sparse_attention is not None)
            if not_split:
                progress(f"phase plan: prefill elsewhere would be faster, but {not_split}")
            prefill_specs = phases.prefill_specs(phase_plan) if phase_plan.split and not not_split else []
            no_decode_modules = phases.why_no_decode_modules(phase_plan, bool(stages), dtype, compute, opts.sparse_attention is not None,
                                                             opts.quant.mode)
            if no_decode_modules:
                progress(f"decode options ({', '.join(o.device for o in phase_plan.decode_options)}): {no_decode_modules}")
            if prefill_specs and compute != "f32":  # the other device's prefill module would multiply in f32
                raise UserError(f"--compute-dtype {compute} is not supported with a prefill placed on another device (profile {profile.name})")
            # The embed entry point: single-module bundles with a KV cache indexed by position.
            entry_points = _entry_points(opts, bool(stages), embed=opts.embeddings and not stages and cache_slots(opts) == opts.max_context)
            quantized_matmuls = _fused_expected(model, entry_points)
            if stages and dtype != "f32":
                raise UserError(f"--activation-dtype {dtype} is not supported with a multi-device plan (profile {profile.name})")
            if stages and compute != "f32":
                raise UserError(f"--compute-dtype {compute} is not supported with a multi-device plan (profile {profile.name})")
            if stages and opts.sparse_attention is not None:
                raise UserError(f"--sparse-attention is not supported with a multi-device plan (profile {profile.name})")
            model = activation_dtype.convert(model, dtype)

            int8_activations = opts.int8_activations or profile.host.int8_activations
            kernels = kernel_choice.choose(kernel_choice.KernelRequest(
                target, extra_flags, opts.quant.mode, opts.quant.head, int8_activations, dtype, opts.sparse_attention,
                bool(stages), profile.host.attention_kernel, profile.host.int8_prefill_kernel, profile.host.quantize_glue,
                opts.kernel_set or profile.host.kernel_set, compute))
            if kernels.bf16.ours:  # the layers' weights stored bf16 in the bf16 kernel's layout
                model = bf16_layers(model)
                quantized_matmuls = _fused_expected(model, entry_points)
            if kernels.int8.ours and not toolchain.by_name(kernels.int8.kernel_set).verify_rows:
                mark_verify_like_decode(model)  # else verify calls the decode kernel's few-row form
            exact = not stages and exact_verify_eligible(model, kernels, dtype, opts.sparse_attention is not None)
            if exact:  # verify's rows do not depend on the call: its attention is our kernel (whose rows do not
                # either) or else IREE's reductions of a decode step, and its norms sum each row on its own
                for m in model.modules():
                    if hasattr(m, "decode_form"):
                        m.verify_decode_form = True

            t = time.perf_counter()
            progress("export to MLIR")
            # Where the attention kernel is ours, the pattern is its parameter: the model exports
            # dense attention under the pattern's mask and the kernel skips the masked blocks;
            # and a prompt's attention reads the cache rows in place (no copy of the keys), in the
            # exports that only the CPU module compiles: another device's IREE lowering would
            # attend over the whole padded row. The other devices' decode modules compile an
            # export of their own where the int8 kernel is ours (they quantize as it does), else
            # the main one; a prefill placement always has its own.
            as_mask = kernels.attention.ours
            sparse_attention.enable(model, opts.sparse_attention, as_mask=as_mask)
            other_devices = not stages and not no_decode_modules and any(
                profile.device(o.device).name != profile.host.name for o in phase_plan.decode_options)
            _keys_in_place(model, as_mask and not (other_devices and not kernels.int8.ours))
            if stages:
                exported = export_stages(model, stages, entry_points, work)
            else:
                mlir_path = _export_single(model, entry_points, dtype, opts.sparse_attention is not None and not as_mask, work,
                                           cache, progress)
            _keys_in_place(model, False)
            # Other devices' decode modules compute what the CPU kernels compute (int8: x per block in the graph).
            decode_modules = not stages and not no_decode_modules and bool(phase_plan.decode_options)
            other_mlir = _export_for_other_devices(model, entry_points, dtype, work, cache) if decode_modules and kernels.int8.ours \
                else None if stages else mlir_path
            prefill_entry = [ep for ep in entry_points if ep.name == "prefill"]
            if prefill_specs:
                exported_prefill = export_stages(model, prefill_specs, prefill_entry, work, phases.PREFILL_PREFIX)
            seconds["export"] = time.perf_counter() - t

            t = time.perf_counter()
            progress("write parameter archive")
            parameter_bytes = write_parameter_archive(model, folder / PARAMETER_FILE)
            del model
            seconds["parameters"] = time.perf_counter() - t

            t = time.perf_counter()
            progress(f"compile with IREE ({target.backend})")
            log = Path(out).parent / f"{Path(out).name}.compile-error.log"
            _say_kernels(kernels, opts.quant, progress)
            stage_entries = None
            if stages:
                modules, stage_entries = compile_stages(exported, stages, profile, folder, extra_flags, log,
                                                        lambda n: PassPipeline([DequantMatmulPass(n)] if n else []))
            else:
                pipeline = kernels.input_pipeline(quantized_matmuls, target.backend == "llvm-cpu", int8_activations)
                configurations = work / "configurations" if exact else None
                compiled = compile_mlir(mlir_path, folder / MODULE_FILE, target, extra_flags, log, pipeline, configurations)
                kernels.record(compiled.pass_results)
                if exact:  # how many rows of a verify call compute as one-row calls do
                    rows = exact_rows.exact_rows(configurations, exact_rows.MAX_ROWS)
                    entry_points = [replace(ep, exact_rows=rows) if ep.name == VERIFY else ep for ep in entry_points]
                modules = [ModuleEntry(MODULE_FILE, "all", target.backend, target.driver, compiled.flags)]
            decode_files: dict[str, str] = {}
            if not stages and not no_decode_modules:
                more, decode_files = phases.compile_decode_modules(other_mlir, phase_plan, profile, folder, opts.extra_flags, log,
                                                                   quantized_matmuls, int8_activations, progress)
                modules += more
            prefill_entries = None
            if prefill_specs:
                progress(f"compile the prefill placement ({', '.join(s.device for s in prefill_specs)})")
                more, prefill_entries = compile_stages(exported_prefill, prefill_specs, profile, folder, opts.extra_flags, log,
                                                       lambda n: PassPipeline([DequantMatmulPass(n)] if n else []),
                                                       phases.PREFILL_PREFIX)
                modules += more
            seconds["compile"] = time.perf_counter() - t
            _say_pass_results(kernels, progress)

            for f in ckpt.tokenizer_files:
                shutil.copy(f, folder / f.name)
            if opts.prune is None:
                shutil.copy(ckpt.path / "config.json", folder / "config.json")
            else:  # the pruned model is a smaller config
                (folder / "config.json").write_text(json.dumps(hf_config_dict(config), indent=2))
            staged = bool(stages)
            options = BundleOptions(
                max_context=opts.max_context, dtype=activation_dtype.DTYPES[dtype], activation_dtype=dtype,
                compute_dtype=compute, kv_cache_slots=cache_slots(opts),
                quant=QuantRecord(**opts.quant.to_dict(), **({"int8_activations": int8_activations} if opts.quant.mode != "none" and not staged else {})),
                parameter_bytes=parameter_bytes, compression_vs_fp32=round(parameter_bytes / fp32_bytes, 4),
                attention_kernel=kernels.attention, plan=PLAN_FILE,
                prune=str(opts.prune) if opts.prune else None,
                sparse_attention=str(opts.sparse_attention) if opts.sparse_attention else None,
                prefix_cache_mb=profile.policy.prefix_cache_mb, prefill_chunk=profile.policy.prefill_chunk,
                int4_kernel=kernels.int4 if opts.quant.mode == "int4" and not staged else None,
                int8_kernel=kernels.int8 if kernels.int8.kernel != "none" and not staged else None,
                bf16_kernel=kernels.bf16 if kernels.bf16.kernel != "none" else None,
                stages=stage_entries,
                plans=phases.plan_entries(phase_plan, profile, prefill_entries, decode_files),
                target_cpu=_target_cpu_record(device_target(profile.host), extra_flags),
            )
            manifest = Manifest(
                model=config, max_context=opts.max_context, entry_points=entry_points, modules=modules,
                parameters=PARAMETER_FILE, parameter_scope=PARAMETER_SCOPE,
                tokenizer="tokenizer.json" if ckpt.has_tokenizer else None, source=source, profile=profile.name, options=options,
            )
            progress("write manifest")
            (folder / PLAN_FILE).write_text(plan.to_json())
            (folder / PLAN_PICTURE).write_text(svg_picture(plan, stand_ins(stage_entries)))
            finish_manifest(folder, manifest)
    return BuildResult(Path(out), manifest, seconds, plan)


def _with_context(opts: BuildOptions, config: ModelConfig) -> BuildOptions:
    """`opts` with max_context decided and the options that depend on the model checked."""
    if opts.max_context is None:  # a sliding-window cache costs the same at any context
        ring = opts.sparse_attention is not None and opts.sparse_attention.ring
        limit = config.max_position_embeddings
        opts = replace(opts, max_context=limit if ring else min(DEFAULT_MAX_CONTEXT, limit))
    if opts.max_context > config.max_position_embeddings:
        raise UserError(f"--max-context {opts.max_context} exceeds the model's max_position_embeddings ({config.max_position_embeddings})")
    if opts.prune is not None:
        check_spec(opts.prune, config)
    if opts.sparse_attention is not None:
        opts.sparse_attention.check(opts.max_context)
    return opts


def _target_cpu_record(target: Target, extra_flags: tuple[str, ...]) -> TargetCpuRecord | None:
    """What the host device's code may use, for llvm-cpu (the runtime checks the CPU it runs on)."""
    if target.backend != "llvm-cpu":
        return None
    cpu = target_cpu.from_flags([*target.flags, *extra_flags])
    return TargetCpuRecord(cpu.arch, cpu.cpu, cpu.isa_features())


def _export_single(model, entry_points: list[EntryPoint], dtype: str, sparse: bool, work: Path, cache: Path | None,
                   progress: Callable[[str], None] = lambda stage: None) -> Path:
    """The model's one module as torch-dialect MLIR bytecode in `work` (block-sparse attention
    rewritten), from `cache` where it holds this model shape's export."""
    path = work / "model.mlirbc"
    key = export_cache.export_key(model, entry_points, dtype=dtype, sparse=sparse) if cache is not None else None
    if key is not None and export_cache.fetch(cache, key, path):
        progress(f"export to MLIR: cached ({cache / key[:12]}...)")
        return path
    module, _ctx = export_mlir(model, entry_points, cache_dtype=activation_dtype.check(dtype))
    if sparse:
        from iree_glm.passes import sparse_attention as sparse_pass

        sparse_pass.run(module)
    with open(path, "wb") as f:
        module.operation.write_bytecode(f)
    if key is not None:
        export_cache.store(cache, key, path)
    return path


def _say_kernels(kernels: kernel_choice.KernelPlan, quant: QuantSpec, progress: Callable[[str], None]) -> None:
    if quant.mode == "int4" and not kernels.int4.ours:
        progress(f"int4 layers: generic fused form, not our kernels ({kernels.int4.reason})")
    elif quant.mode == "int4":
        progress(f"int4 layers: call our {kernels.int4.kernel_set} kernels")
    int8 = kernels.int8
    if int8.kernel != "none" and int8.reason != "multi-device plan":
        what = f"call our {int8.kernel_set} matrix-vector kernel" if int8.ours else f"generic fused form ({int8.reason})"
        progress(f"int8 {'layers' if quant.mode == 'int8' else 'head'}: one-row (decode) matmuls {what}")
        if int8.prefill:
            progress(f"int8 layers: prompt matmuls {f'call our {int8.kernel_set} matrix kernel' if int8.prefill == 'matmul' else 'run ' + int8.prefill}")
    if kernels.bf16.ours:
        progress(f"bf16 compute: layers call our {kernels.bf16.kernel_set} kernels (weights stored bf16)")
    elif kernels.bf16.kernel == "iree":
        progress(f"bf16 compute: IREE's demotion, not our kernels ({kernels.bf16.reason})")
    attention = kernels.attention
    if attention.ours:
        progress(f"attention: call our {attention.kernel_set} kernel")
    elif attention.reason not in (None, "multi-device plan"):
        progress(f"attention: IREE's lowering ({attention.reason})")


def _say_pass_results(kernels: kernel_choice.KernelPlan, progress: Callable[[str], None]) -> None:
    glue = kernels.int4.quantize_glue if kernels.int4.ours else kernels.int8.quantize_glue
    if isinstance(glue, dict) and glue:
        progress("kernel quantizations computing their input: " + ", ".join(f"{kind} {n}" for kind, n in sorted(glue.items())))
    if kernels.attention.left_to_iree:
        progress(f"attention: {kernels.attention.left_to_iree} op(s) of a form our attention kernel does not compute kept IREE's lowering")
