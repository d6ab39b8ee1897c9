"""Decode tok/s of the two one-row step functions a bundle has, side by side.

Where a bundle records `exact_rows` on its `verify` entry point (docs/speculative.md,
"Exactness"), plain decoding runs one-row `verify` calls instead of the `decode` function, so
that speculative decoding's checked rows are decode steps bit for bit. This measures what that
costs: for each quantization of a seeded random GLM-4 config (tools/bench.py's CONFIGS), greedy
decode steps through `decode` (before) and through what `Session.decode` runs now (after), each
run in its own child process, the two alternated within each round, medians over rounds.

    python tools/bench_exact_decode.py --config 330m --layers 2 --quant none,int8,int4 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (tools/bench.py: configs, checkpoints, cached bundles)

VARIANTS = ("decode", "session")  # the `decode` function; Session.decode (one-row verify where exact)


def _child(bundle: str, variant: str, prompt_len: int, tokens: int, threads: int) -> dict:
    import iree.runtime as rt

    rt.flags.parse_flags(f"--task_topology_group_count={threads}")
    from iree_glm.runtime import Session

    session = Session.load(bundle, verify=False)
    exact = session.exact_verify_rows
    if variant == "decode":
        session._exact_rows = 0  # the `decode` function, as before exact rows
    vocab = session.config.vocab_size
    prompt = [(i * 104729 + 7) % vocab for i in range(1, prompt_len + 1)]
    cache = session.new_cache(1)
    token = int(session.run_prefill(prompt, 0, cache).argmax())
    session.decode([token], [prompt_len], cache)  # warm-up
    t, cpu = time.perf_counter(), time.process_time()
    steps = []
    for i in range(tokens):
        s = time.perf_counter()
        token = int(session.decode([token], [prompt_len + 1 + i], cache)[0].argmax())
        steps.append(time.perf_counter() - s)
    # CPU time of the whole process (IREE's workers included): on a shared machine, descheduling
    # inflates wall time but not CPU time. The fastest tenth of the steps: those that ran
    # undisturbed, what a step costs on an idle machine (under a load of several jobs per core,
    # whole runs vary by 10x and medians of runs tell little).
    fast = sorted(steps)[: max(1, len(steps) // 10)]
    return {"tok_s": tokens / (time.perf_counter() - t), "tok_cpu_s": tokens / (time.process_time() - cpu),
            "fast_tok_s": len(fast) / sum(fast), "exact_rows": exact}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="330m", choices=sorted(bench.CONFIGS))
    p.add_argument("--layers", type=int, default=None, help="fewer layers than the config (same shapes)")
    p.add_argument("--quant", default="none,int8,int4")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--tokens", type=int, default=48)
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--folder", type=Path, default=Path.home() / ".cache" / "iree_glm" / "bench")
    p.add_argument("--child", nargs=2, metavar=("BUNDLE", "VARIANT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], args.child[1], args.prompt_len, args.tokens, args.threads)))
        return
    from iree_glm.transforms.quantize import QuantSpec

    args.folder.mkdir(parents=True, exist_ok=True)
    checkpoint = bench.make_checkpoint(args.config, args.folder, args.layers)
    context = args.prompt_len + args.tokens + 2
    print(f"CPU: {bench.cpu_model()}; {args.threads} threads; {bench._load()}")
    print(f"{args.config}{f' ({args.layers} layers)' if args.layers else ''}, prompt {args.prompt_len}, {args.tokens} decode steps, "
          f"medians of {args.rounds} rounds, one child process per run")
    print("| weights | exact rows | decode fn tok/s | plain decoding now tok/s | now / before | same, tokens per CPU second "
          "| same, fastest tenth of the steps |")
    print("|---|---|---|---|---|---|---|")
    for mode in args.quant.split(","):
        quant = QuantSpec() if mode == "none" else QuantSpec(mode, group_size=32)
        bundle = bench.make_bundle(checkpoint, args.folder, context, quant=quant)
        runs: dict[str, list[float]] = {v: [] for v in VARIANTS}
        cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
        fast: dict[str, list[float]] = {v: [] for v in VARIANTS}
        exact = None
        for r in range(args.rounds):
            for variant in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
                cmd = [sys.executable, __file__, "--child", str(bundle), variant, "--prompt-len", str(args.prompt_len),
                       "--tokens", str(args.tokens), "--threads", str(args.threads)]
                out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), check=True).stdout
                result = json.loads(out.strip().splitlines()[-1])
                runs[variant].append(result["tok_s"])
                cpu[variant].append(result["tok_cpu_s"])
                fast[variant].append(result["fast_tok_s"])
                exact = result["exact_rows"]
        before, now = statistics.median(runs["decode"]), statistics.median(runs["session"])
        cpu_ratio = statistics.median(cpu["session"]) / statistics.median(cpu["decode"])
        fast_ratio = statistics.median(fast["session"]) / statistics.median(fast["decode"])
        print(f"| {mode} | {exact or '-'} | {before:.1f} | {now:.1f} | {now / before:.3f} | {cpu_ratio:.3f} | {fast_ratio:.3f} |", flush=True)


if __name__ == "__main__":
    main()
