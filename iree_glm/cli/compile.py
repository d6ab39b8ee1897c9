"""`python -m iree_glm.compile [CHECKPOINT] -o BUNDLE`: a checkpoint folder -> an IREE bundle."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from iree_glm.cli.args import ArgumentParser
from iree_glm.errors import run_cli
from iree_glm.validation import option


def _batch_sizes(text: str) -> tuple[int, ...]:
    from iree_glm.errors import UserError

    try:
        sizes = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise UserError(f"--batch-sizes must be comma-separated integers (got '{text}')") from None
    if not sizes or sizes[0] != 1:
        raise UserError(f"--batch-sizes must include 1 and only sizes >= 1 (got '{text}')")
    return tuple(sizes)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m iree_glm.compile", description=__doc__)
    p.add_argument("checkpoint", nargs="?", type=Path, help="Hugging Face checkpoint folder (default: the built-in small model)")
    p.add_argument("-o", "--output", type=Path, help="bundle folder to write (default: bundles/default for the built-in model)")
    p.add_argument("--max-context", type=option(int, "--max-context", min=2), default=None, help="KV-cache capacity in tokens (default: 1024, or less if the model is shorter)")
    p.add_argument("--profile", default="host-cpu", help="device profile: a shipped name (host-cpu, host-cpu-vulkan, snapdragon-8-gen3, ...) or a .toml file (default host-cpu)")
    p.add_argument("--batch-sizes", type=_batch_sizes, default=None, help="decode batch sizes to compile, e.g. 1,2,4,8 (default: the profile's policy.decode_batch_sizes, else 1); the server batches concurrent requests up to the largest")
    p.add_argument("--report", action="store_true", help="print the partition plan (which part runs on which device, and why); plan.json and plan.svg are in the bundle")
    p.add_argument("--quant", default=None, help="weight quantization: none, int8 (per channel) or int4 (per group) (default none; with --fit-memory: chosen)")
    p.add_argument("--group-size", type=option(int, "--group-size", min=1), default=32, help="int4 group size: 32, 64 or 128 (default 32)")
    p.add_argument("--quant-head", default="int8", help="output head with --quant: none or int8 (default int8)")
    p.add_argument("--quant-embeddings", default="int8", help="token embeddings with --quant: int8 (rows, dequantized on gather) or none (fp32) (default int8)")
    p.add_argument("--prune", metavar="heads=R,ffn=R", help="remove the least important fraction R of attention heads / FFN channels (ratios in [0, 1))")
    p.add_argument("--calibration", type=Path, help="text file that ranks heads and channels for --prune (default: a sample of the default model's Python docs)")
    p.add_argument("--activation-dtype", help="f32, f16 or bf16: the dtype weights are stored in and activations and the KV cache computed in; norms, rotary frequencies and logits stay f32 (default: the profile's device activation_dtype, f32 on host-cpu)")
    p.add_argument("--compute-dtype", help="f32 or bf16: what the f32 matmuls multiply in; bf16 rounds their inputs to bf16 and accumulates in f32 (x86-64 with avx512bf16 only; weights, KV cache and everything else stay f32; logit error: docs/accuracy.md) (default: the profile's device compute_dtype, f32 on host-cpu)")
    p.add_argument("--no-embeddings", action="store_true", help="leave out the `embed` entry point (final-norm hidden states, served as /v1/embeddings)")
    p.add_argument("--int8-activations", help="with --quant int8: which matmuls also quantize their activations per row and multiply i8 x i8 -> i32: none, prefill (multi-token calls) or all (default: the profile's device int8_activations)")
    p.add_argument("--sparse-attention", metavar="local=W,global=G,block=B", help="block-sparse attention: each query sees the first G tokens and the last W, computed in query blocks of B (opt-in: changes the outputs of a dense-trained model; default: the profile's policy.sparse_attention; 'none' turns it off)")
    p.add_argument("--fit-memory", action="store_true", help="choose --quant and --max-context to fit the profile's memory (device memory minus reserve): the most exact weights with a useful context; --quant or --max-context, if given, fix or cap the choice")
    p.add_argument("--export-cache", type=Path, metavar="DIR", help="keep each export (torch -> MLIR, most of a build's time) in DIR by model shape, and reuse it for a model of the same shape and options, whatever its weights (default: $IREE_GLM_EXPORT_CACHE, else none)")
    p.add_argument("--min-context", type=option(int, "--min-context", min=2), default=None, help="with --fit-memory: the smallest context worth having (default 512, or --max-context if smaller)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from iree_glm.cli.progress import StepProgress
    from iree_glm.frontend import default_model
    from iree_glm.compiler.build import BuildOptions, build_bundle
    from iree_glm.errors import UserError
    from iree_glm.transforms.prune import parse_prune_spec
    from iree_glm.transforms.quantize import QuantSpec
    from iree_glm.planner.profile import load_profile

    profile = load_profile(args.profile)
    sparse = _sparse_pattern(args.sparse_attention, profile)
    args.batch_sizes = args.batch_sizes or profile.policy.decode_batch_sizes or (1,)
    if args.min_context is not None and not args.fit_memory:
        raise UserError("--min-context is only used with --fit-memory")
    prune = parse_prune_spec(args.prune) if args.prune is not None else None
    if args.calibration is not None and prune is None:
        raise UserError("--calibration is only used with --prune")
    out = args.output
    if out is None:
        if args.checkpoint is not None:
            raise UserError("-o BUNDLE is required when a checkpoint is given")
        out = default_model.DEFAULT_BUNDLE
    if args.checkpoint is None:
        print(f"no checkpoint given: building the {default_model.DESCRIPTION}", file=sys.stderr)
    progress = StepProgress("compile", 5, sys.stderr)

    quant_mode, max_context = args.quant or "none", args.max_context
    if args.fit_memory:
        quant_mode, max_context = _fit_memory(args, profile, sparse)
    quant = QuantSpec(quant_mode, args.group_size, args.quant_head, args.quant_embeddings)
    if sparse is not None and args.sparse_attention is None and max_context is not None:
        sparse.check(max_context, f"{profile.source}: policy.sparse_attention")  # name where it came from
    opts = BuildOptions(max_context=max_context, profile=args.profile, prune=prune, calibration=args.calibration, quant=quant,
                        decode_batch_sizes=args.batch_sizes, sparse_attention=sparse,
                        activation_dtype=args.activation_dtype, compute_dtype=args.compute_dtype, int8_activations=args.int8_activations,
                        embeddings=not args.no_embeddings, export_cache=args.export_cache)
    try:
        result = build_bundle(args.checkpoint, out, opts, progress)
    finally:
        progress.close()
    m = result.manifest
    timing = ", ".join(f"{k} {v:.1f}s" for k, v in result.seconds.items())
    print(f"wrote bundle {out} ({m.model.family}, {m.model.num_layers} layers, context {m.max_context}; {timing})")
    o = m.options
    print(f"weights: {o.parameter_bytes / 2**20:.1f} MiB, {o.compression_vs_fp32:.3f} of fp32 (quant {quant.mode})")
    if o.compute_dtype != "f32":
        print(f"matmuls: {o.compute_dtype} inputs, f32 accumulation (--compute-dtype {o.compute_dtype})")
    attention = o.attention_kernel
    if attention.ours:
        pattern = f", skipping the key blocks outside {attention.sparse}" if attention.sparse else ""
        print(f"attention: our {attention.kernel_set} flash-attention kernel{pattern} ({attention.rewritten} op(s); "
              f"{attention.left_to_iree} left to IREE)")
    else:
        print(f"attention: IREE's lowering ({attention.reason})")
    if o.kv_cache_slots != m.max_context:
        from iree_glm.planner.fit_memory import kv_cache_bytes

        cfg, mib = m.model, 2**20
        print(f"KV cache: sliding window of {o.kv_cache_slots} slots per sequence ({o.sparse_attention}), "
              f"{kv_cache_bytes(cfg, o.kv_cache_slots) / mib:.2f} MiB instead of {kv_cache_bytes(cfg, m.max_context) / mib:.2f} MiB "
              f"for the context of {m.max_context}")
    if args.report and result.plan is not None:
        from iree_glm.compiler.stages import stand_ins
        from iree_glm.planner.phases import plan_phases
        from iree_glm.planner.report import phase_report, plans_report, text_report
        from iree_glm.planner.scheduler import quant_dtypes

        print(text_report(result.plan, stand_ins(m.options.stages)))
        print(phase_report(plan_phases(m.model, profile, quant_dtypes(quant.mode, quant.head, quant.embeddings),
                                       m.options.kv_cache_slots)))
        print(plans_report(m.options.plans))
        print(f"plan picture: {out / 'plan.svg'}")
    if m.tokenizer is None:
        print("note: the checkpoint has no tokenizer; run it with --prompt-ids")
    print(f"run it: python -m iree_glm.run {out} --prompt 'Hello'")
    return 0


def _sparse_pattern(option: str | None, profile):
    """--sparse-attention, else the profile's default; 'none' turns either off."""
    from iree_glm.frontend.sparse_attention import parse_pattern

    if option is not None:
        return None if option.strip() == "none" else parse_pattern(option)
    if profile.policy.sparse_attention is None:
        return None
    pattern = parse_pattern(profile.policy.sparse_attention, f"{profile.source}: policy.sparse_attention")
    print(f"sparse attention {pattern}: the default of profile {profile.name} (--sparse-attention none turns it off)", file=sys.stderr)
    return pattern


def _fit_memory(args: argparse.Namespace, profile, sparse) -> tuple[str, int]:
    """Pick (quant mode, context) for --fit-memory and print what was chosen and why."""
    from iree_glm.frontend import default_model
    from iree_glm.planner import fit_memory
    from iree_glm.compiler.build import DEFAULT_MAX_CONTEXT
    from iree_glm.frontend.checkpoint import open_checkpoint
    from iree_glm.errors import UserError
    from iree_glm.transforms.quantize import QuantSpec

    template = QuantSpec(args.quant or "none", args.group_size, args.quant_head, args.quant_embeddings)
    template.check()
    cfg = default_model.CONFIG if args.checkpoint is None else open_checkpoint(args.checkpoint).config
    target = args.max_context if args.max_context is not None else min(DEFAULT_MAX_CONTEXT, cfg.max_position_embeddings)
    if target < 2:
        raise UserError(f"--max-context must be at least 2 (got {target})")
    if args.min_context is not None and args.min_context < 2:
        raise UserError(f"--min-context must be at least 2 (got {args.min_context})")
    choice = fit_memory.choose(
        cfg, profile, target, (args.quant,) if args.quant else fit_memory.QUANT_ORDER, template,
        streams=max(args.batch_sizes), min_context=args.min_context or fit_memory.MIN_USEFUL_CONTEXT,
        attended=fit_memory.attended_keys(sparse), cache_slots=sparse.ring_slots if sparse is not None and sparse.ring else None,
        chunk=sparse.call_tokens(profile.policy.prefill_chunk or 0) if sparse is not None else None,
    )
    print(f"fit-memory: profile {profile.name} leaves {choice.budget / fit_memory.MiB:.0f} MiB (memory minus reserve)"
          f"{'; estimate for the unpruned model' if args.prune else ''}")
    print("\n".join(choice.report))
    return choice.quant, choice.context


if __name__ == "__main__":
    sys.exit(run_cli(main))
