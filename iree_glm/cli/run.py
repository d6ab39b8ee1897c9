"""`python -m iree_glm.run BUNDLE --prompt TEXT`: generate from a bundle, streaming the text."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from iree_glm.cli.args import ArgumentParser
from iree_glm.errors import run_cli
from iree_glm.errors import UserError
from iree_glm.validation import option


def _ids(text: str) -> list[int]:
    items = text.replace(" ", "").split(",")
    if items == [""]:
        return []  # refused as an empty prompt, as an empty --prompt is
    try:
        return [int(x) for x in items]  # an empty item ("1,,2", "1,2,") is an error, not skipped
    except ValueError:
        raise UserError(f"--prompt-ids must be comma-separated integers (got '{text}')") from None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m iree_glm.run", description=__doc__)
    p.add_argument("bundle", type=Path, help="bundle folder written by iree_glm.compile")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="prompt text")
    src.add_argument("--prompt-ids", type=_ids, help="prompt as token ids, e.g. 1,2,3")
    p.add_argument("--max-new-tokens", type=option(int, "--max-new-tokens", min=0), default=64)
    p.add_argument("--temperature", type=option(float, "--temperature", min=0.0), default=0.0, help="0 (default) is greedy")
    p.add_argument("--top-k", type=option(int, "--top-k", min=0), default=0)
    p.add_argument("--top-p", type=option(float, "--top-p", max=1.0), default=1.0)
    p.add_argument("--seed", type=option(int, "--seed", min=0), default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streaming")
    p.add_argument("--no-verify", action="store_true", help="skip checking file hashes at load")
    p.add_argument("--prefix-cache-dir", type=Path, help="reuse (and save) the KV cache of prompt prefixes in this folder")
    p.add_argument("--prefix-cache-mb", type=option(float, "--prefix-cache-mb", min=0.0), help="prefix cache budget in MiB (default: the bundle's profile prefix_cache_mb, else 512)")
    p.add_argument("--normalize", nargs="?", const="default", metavar="STEPS",
                   help="rewrite the prompt text before tokenization so prompts differing only in form share cached prefixes: "
                        "steps from whitespace,nfkc,case (alone: whitespace,nfkc); changes what the model reads")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable); the text is cut before it")
    p.add_argument("--prefill-chunk", type=option(int, "--prefill-chunk", min=0), metavar="TOKENS",
                   help="prefill the prompt in calls of at most TOKENS tokens (0: one call; default: the bundle's profile prefill_chunk)")
    p.add_argument("--draft", metavar="prompt-lookup|BUNDLE",
                   help="speculative decoding: check draft tokens from prompt lookup or a smaller bundle with the same "
                        "tokenizer in one call of the bundle (same output, fewer passes over the weights)")
    p.add_argument("--draft-tokens", type=int, metavar="K", help="at most K draft tokens per call (default 8; adapts to the acceptance rate)")
    p.add_argument("--allow-stand-in", action="store_true", help="multi-device bundles: run a partition whose device driver is absent (an NPU) on the CPU, marked stand-in")
    plan = p.add_mutually_exclusive_group()
    plan.add_argument("--plan", metavar="NAME", help="run the bundle's plan NAME (e.g. phase-split, one-placement; default: its first that can run here)")
    plan.add_argument("--power-budget", type=option(float, "--power-budget", min=0.0), metavar="WATTS",
                      help="run the fastest of the bundle's plans estimated to draw at most WATTS")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from iree_glm.runtime import SamplingParams, Session

    from iree_glm.bundle.manifest import read_manifest
    from iree_glm.runtime.normalize import parse_normalize
    from iree_glm.runtime.pipeline import PipelineSession, is_multi_device
    from iree_glm.runtime.speculative import DEFAULT_DRAFT_TOKENS

    normalizer = parse_normalize(args.normalize)
    if args.prefix_cache_mb is not None and args.prefix_cache_mb < 0:
        raise UserError(f"--prefix-cache-mb must be >= 0 (got {args.prefix_cache_mb})")
    if args.prefix_cache_mb is not None and args.prefix_cache_dir is None:
        raise UserError("--prefix-cache-mb is only used with --prefix-cache-dir")
    if args.prefill_chunk is not None and args.prefill_chunk < 0:
        raise UserError(f"--prefill-chunk must be 0 (whole prompt) or a positive number of tokens (got {args.prefill_chunk})")
    if normalizer is not None and args.prompt is None:
        raise UserError("--normalize rewrites text: use it with --prompt, not --prompt-ids")
    if args.draft_tokens is not None and args.draft is None:
        raise UserError("--draft-tokens is only used with --draft")
    draft_tokens = DEFAULT_DRAFT_TOKENS if args.draft_tokens is None else args.draft_tokens
    if not 1 <= draft_tokens <= 64:
        raise UserError(f"--draft-tokens must be from 1 to 64 (got {draft_tokens})")
    stand_in = ""
    if is_multi_device(read_manifest(args.bundle, verify=False)):  # one module per device (plan stages)
        for option, value in (("--prefix-cache-dir", args.prefix_cache_dir), ("--prefix-cache-mb", args.prefix_cache_mb),
                              ("--normalize", normalizer), ("--draft", args.draft), ("--plan", args.plan),
                              ("--power-budget", args.power_budget)):
            if value is not None:
                raise UserError(f"{option} is not supported for multi-device bundles")
        session = PipelineSession.load(args.bundle, verify=not args.no_verify, allow_stand_in=args.allow_stand_in,
                                         prefill_chunk=args.prefill_chunk)
        stand_in = "".join(f"[STAND-IN: {d} runs on {drv}] " for d, drv in session.stand_ins.items())
    else:
        session = Session.load(args.bundle, verify=not args.no_verify, prefix_cache_dir=args.prefix_cache_dir,
                               prefix_cache_bytes=None if args.prefix_cache_mb is None else int(args.prefix_cache_mb * 2**20),
                               normalize=normalizer, prefill_chunk=args.prefill_chunk, draft=args.draft,
                               draft_tokens=draft_tokens, plan=args.plan, allow_stand_in=args.allow_stand_in)
        if args.power_budget is not None:
            session.set_power_budget(args.power_budget)
    prompt = args.prompt if args.prompt is not None else args.prompt_ids
    sampling = SamplingParams(args.temperature, args.top_k, args.top_p, args.seed)
    source = session.manifest.source.get("default_model")
    if args.json:
        result = session.generate(prompt, args.max_new_tokens, sampling, stop=tuple(args.stop))
        out = result.to_dict()
        if normalizer is not None:
            out["normalized"] = str(normalizer)
        if isinstance(session, PipelineSession):
            out["stand_in"] = session.stand_ins
        if session.plan is not None:
            out["plan"] = session.plan
        print(json.dumps(out))
        return 0
    if source:
        print(f"{stand_in}[{source}]", file=sys.stderr)
    elif stand_in:
        print(stand_in.strip(), file=sys.stderr)
    stream = session.stream(prompt, args.max_new_tokens, sampling, stop=tuple(args.stop))
    for event in stream:
        sys.stdout.write(event.text if session.tokenizer else f"{event.token_id} ")
        sys.stdout.flush()
    print()
    r = stream.result
    print(f"{stand_in}prefill {r.prefill_ms:.1f} ms, decode {r.decode_tok_s:.1f} tok/s "
          f"({len(r.generated_ids)} tokens, stopped: {r.stop_reason}"
          f"{f', {r.cached_tokens} prompt tokens from the prefix cache' if r.cached_tokens else ''}"
          f"{f', prompt normalized ({normalizer})' if normalizer else ''}"
          f"{f', plan {session.plan}' if session.plans is not None and len(session.plans.entries) > 1 else ''}"
          f"{f', draft acceptance {r.acceptance_rate:.0%}, {r.tokens_per_target_call:.2f} tokens per call' if r.acceptance_rate is not None else ''})",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
