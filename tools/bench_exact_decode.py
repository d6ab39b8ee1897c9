"""Decode tok/s of the two one-row step functions a bundle has, side by side.

Where a bundle records `exact_rows` on its `verify` entry point (docs/speculative.md,
"Exactness"), plain decoding runs one-row `verify` calls instead of the `decode` function, so
that speculative decoding's checked rows are decode steps bit for bit. This measures what that
costs: for each quantization of a seeded random GLM-4 config (tools/bench.py's CONFIGS), greedy
decode steps through `decode` (before) and through what `Session.decode` runs now (after), each
run in its own child process, the two alternated within each round, medians over rounds.

With `--interleaved`, also a table for a loaded machine, where whole runs vary several-fold
with what else runs: one child per bundle alternates the two step by step (same session, same
positions of the same cache; which goes first alternates too) and compares the step times'
minimum, 10th percentile and median, so that both see the same load.

With `--verify-rows 2,3,5`, also what a verify call of that many rows costs in decode steps (the
`decode` function's), every call alternated in one process per bundle.

    python tools/bench_exact_decode.py --config 330m --layers 2 --quant none,int8,int4 --rounds 5 [--interleaved] [--verify-rows 2,3,5]
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


def _prefilled(bundle: str, prompt_len: int, threads: int):
    """(session, its exact_verify_rows, a cache holding a seeded prompt, the first token)."""
    import iree.runtime as rt

    rt.flags.parse_flags(f"--task_topology_group_count={threads}")
    from iree_glm.runtime import Session

    session = Session.load(bundle, verify=False)
    vocab = session.config.vocab_size
    prompt = [(i * 104729 + 7) % vocab for i in range(1, prompt_len + 1)]
    cache = session.new_cache(1)
    return session, session.exact_verify_rows, cache, int(session.run_prefill(prompt, 0, cache).argmax())


def _child(bundle: str, variant: str, prompt_len: int, tokens: int, threads: int) -> dict:
    session, exact, cache, token = _prefilled(bundle, prompt_len, threads)
    if variant == "decode":
        session._exact_rows = 0  # the `decode` function, as before exact rows
    session.decode([token], [prompt_len], cache)  # warm-up
    t, cpu = time.perf_counter(), time.process_time()
    for i in range(tokens):
        token = int(session.decode([token], [prompt_len + 1 + i], cache)[0].argmax())
    # CPU time of the whole process (IREE's workers included): on a shared machine, descheduling
    # inflates wall time but not CPU time.
    return {"tok_s": tokens / (time.perf_counter() - t), "tok_cpu_s": tokens / (time.process_time() - cpu), "exact_rows": exact}


def _interleaved_child(bundle: str, prompt_len: int, tokens: int, threads: int, rounds: int) -> dict:
    """Step times of both variants, alternated step by step: each position is decoded by the
    `decode` function and by Session.decode (exact bundles write the same KV bits either way)."""
    session, exact, cache, first = _prefilled(bundle, prompt_len, threads)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(rounds + 1):  # round 0 warms up
        token = first
        for i in range(tokens):
            for variant in VARIANTS if (i + r) % 2 == 0 else VARIANTS[::-1]:
                session._exact_rows = 0 if variant == "decode" else exact
                t = time.perf_counter()
                logits = session.decode([token], [prompt_len + i], cache)[0]
                if r:
                    times[variant].append(time.perf_counter() - t)
            token = int(logits.argmax())
    return {"times": times, "exact_rows": exact}


def _verify_cost_child(bundle: str, prompt_len: int, threads: int, rounds: int, rows: list[int]) -> dict:
    """Call times of the `decode` function and of verify calls of each row count at one position
    (the calls rewrite the same KV positions), alternated call by call."""
    session, exact, cache, first = _prefilled(bundle, prompt_len, threads)
    tokens = [(first + 31 * i) % session.config.vocab_size for i in range(max(rows))]
    variants = [0, *rows]  # 0: the decode function
    times: dict[int, list[float]] = {v: [] for v in variants}
    for r in range(rounds * 16 + 1):  # the first pass warms up
        for v in variants[r % len(variants):] + variants[:r % len(variants)]:
            t = time.perf_counter()
            if v == 0:
                session._exact_rows = 0
                session.decode(tokens[:1], [prompt_len], cache)
            else:
                session._exact_rows = exact
                session.verify(tokens[:v], prompt_len, cache)
            if r:
                times[v].append(time.perf_counter() - t)
    return {"times": {str(v): t for v, t in times.items()}}


def _verify_cost_table(bundles: dict[str, Path], args) -> None:
    rows = [int(r) for r in args.verify_rows.split(",")]
    print(f"\nVerify call of R rows in decode steps (`decode` fn call time), calls alternated in one process, "
          f"{args.rounds * 16} calls each, {bench._load()}: median (at min)")
    print("| weights | decode fn ms, median (min) | " + " | ".join(f"{r} rows" for r in rows) + " |")
    print("|---|---|" + "---|" * len(rows))
    for mode, bundle in bundles.items():
        cmd = [sys.executable, __file__, "--verify-cost-child", str(bundle), "--prompt-len", str(args.prompt_len),
               "--threads", str(args.threads), "--rounds", str(args.rounds), "--verify-rows", args.verify_rows]
        out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), check=True).stdout
        times = json.loads(out.strip().splitlines()[-1])["times"]
        med, low = statistics.median(times["0"]), min(times["0"])
        cells = [f"{statistics.median(times[str(r)]) / med:.2f} ({min(times[str(r)]) / low:.2f})" for r in rows]
        print(f"| {mode} | {1e3 * med:.2f} ({1e3 * low:.2f}) | " + " | ".join(cells) + " |", flush=True)


def _ms(values) -> str:
    return " / ".join(f"{1e3 * v:.2f}" for v in values)


def _interleaved_table(bundles: dict[str, Path], args) -> None:
    print(f"\nStep by step in one process ({args.rounds} x {args.tokens} steps of each), {bench._load()}: step ms, "
          "min / p10 / median; speed ratio = decode fn time / Session.decode time")
    print("| weights | exact rows | decode fn step ms | Session.decode step ms | ratio at min | at p10 | at median |")
    print("|---|---|---|---|---|---|---|")
    for mode, bundle in bundles.items():
        cmd = [sys.executable, __file__, "--interleaved-child", str(bundle), "--prompt-len", str(args.prompt_len),
               "--tokens", str(args.tokens), "--threads", str(args.threads), "--rounds", str(args.rounds)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), check=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        stats = {}
        for variant in VARIANTS:
            t = sorted(result["times"][variant])
            stats[variant] = (t[0], t[len(t) // 10], statistics.median(t))
        d, n = stats["decode"], stats["session"]
        print(f"| {mode} | {result['exact_rows'] or '-'} | {_ms(d)} | {_ms(n)} | {d[0] / n[0]:.3f} | {d[1] / n[1]:.3f} | {d[2] / n[2]:.3f} |",
              flush=True)


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
    p.add_argument("--interleaved", action="store_true", help="also the step-by-step comparison (a loaded machine)")
    p.add_argument("--child", nargs=2, metavar=("BUNDLE", "VARIANT"), help=argparse.SUPPRESS)
    p.add_argument("--interleaved-child", metavar="BUNDLE", help=argparse.SUPPRESS)
    p.add_argument("--verify-rows", metavar="R,R,...", help="also the cost of verify calls of these row counts")
    p.add_argument("--verify-cost-child", metavar="BUNDLE", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], args.child[1], args.prompt_len, args.tokens, args.threads)))
        return
    if args.verify_cost_child:
        rows = [int(r) for r in args.verify_rows.split(",")]
        print(json.dumps(_verify_cost_child(args.verify_cost_child, args.prompt_len, args.threads, args.rounds, rows)))
        return
    if args.interleaved_child:
        print(json.dumps(_interleaved_child(args.interleaved_child, args.prompt_len, args.tokens, args.threads, args.rounds)))
        return
    from iree_glm.transforms.quantize import QuantSpec

    args.folder.mkdir(parents=True, exist_ok=True)
    checkpoint = bench.make_checkpoint(args.config, args.folder, args.layers)
    context = args.prompt_len + args.tokens + 2
    print(f"CPU: {bench.cpu_model()}; {args.threads} threads; {bench._load()}")
    print(f"{args.config}{f' ({args.layers} layers)' if args.layers else ''}, prompt {args.prompt_len}, {args.tokens} decode steps, "
          f"medians of {args.rounds} rounds, one child process per run")
    print("| weights | exact rows | decode fn tok/s | plain decoding now tok/s | now / before | same, tokens per CPU second |")
    print("|---|---|---|---|---|---|")
    bundles = {}
    for mode in args.quant.split(","):
        quant = QuantSpec() if mode == "none" else QuantSpec(mode, group_size=32)
        bundle = bundles[mode] = bench.make_bundle(checkpoint, args.folder, context, quant=quant)
        runs: dict[str, list[float]] = {v: [] for v in VARIANTS}
        cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
        exact = None
        for r in range(args.rounds):
            for variant in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
                cmd = [sys.executable, __file__, "--child", str(bundle), variant, "--prompt-len", str(args.prompt_len),
                       "--tokens", str(args.tokens), "--threads", str(args.threads)]
                out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), check=True).stdout
                result = json.loads(out.strip().splitlines()[-1])
                runs[variant].append(result["tok_s"])
                cpu[variant].append(result["tok_cpu_s"])
                exact = result["exact_rows"]
        before, now = statistics.median(runs["decode"]), statistics.median(runs["session"])
        cpu_ratio = statistics.median(cpu["session"]) / statistics.median(cpu["decode"])
        print(f"| {mode} | {exact or '-'} | {before:.1f} | {now:.1f} | {now / before:.3f} | {cpu_ratio:.3f} |", flush=True)
    if args.interleaved:
        _interleaved_table(bundles, args)
    if args.verify_rows:
        _verify_cost_table(bundles, args)


if __name__ == "__main__":
    main()
