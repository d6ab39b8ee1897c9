"""`python -m iree_glm.run BUNDLE --prompt TEXT`: generate from a bundle, streaming the text."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .cli import run_cli
from .errors import UserError


def _ids(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise UserError(f"--prompt-ids must be comma-separated integers (got '{text}')") from None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m iree_glm.run", description=__doc__)
    p.add_argument("bundle", type=Path, help="bundle folder written by iree_glm.compile")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="prompt text")
    src.add_argument("--prompt-ids", type=_ids, help="prompt as token ids, e.g. 1,2,3")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default) is greedy")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streaming")
    p.add_argument("--no-verify", action="store_true", help="skip checking file hashes at load")
    p.add_argument("--prefix-cache-dir", type=Path, help="reuse (and save) the KV cache of prompt prefixes in this folder")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable); the text is cut before it")
    p.add_argument("--allow-stand-in", action="store_true", help="multi-device bundles: run a partition whose device driver is absent (an NPU) on the CPU, marked stand-in")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from .runtime import SamplingParams, Session

    from .bundle import read_manifest
    from .runtime.pipeline import PipelineSession, is_multi_device

    stand_in = ""
    if is_multi_device(read_manifest(args.bundle, verify=False)):  # one module per device (plan stages)
        if args.prefix_cache_dir is not None:
            raise UserError("--prefix-cache-dir is not supported for multi-device bundles")
        session = PipelineSession.load(args.bundle, verify=not args.no_verify, allow_stand_in=args.allow_stand_in)
        stand_in = "".join(f"[STAND-IN: {d} runs on {drv}] " for d, drv in session.stand_ins.items())
    else:
        session = Session.load(args.bundle, verify=not args.no_verify, prefix_cache_dir=args.prefix_cache_dir)
    prompt = args.prompt if args.prompt is not None else args.prompt_ids
    sampling = SamplingParams(args.temperature, args.top_k, args.top_p, args.seed)
    source = session.manifest.source.get("default_model")
    if args.json:
        result = session.generate(prompt, args.max_new_tokens, sampling, stop=tuple(args.stop))
        out = result.to_dict()
        if isinstance(session, PipelineSession):
            out["stand_in"] = session.stand_ins
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
          f"{f', {r.cached_tokens} prompt tokens from the prefix cache' if r.cached_tokens else ''})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
