"""Batched decode steps of several bundles side by side: the time of one `decode_bN` call per
batch size, and how far each row's logits are from the same request decoding alone.

    python tools/bench_batched_decode.py OLD NEW --sizes 1,2,4,8 --rounds 5

Each bundle is measured in its own process, the bundles alternated in a rotating order every
round; a process prefills N prompts into N cache rows and times `--calls` steps of each size
(the fastest, the least disturbed by other work on the machine). Prints medians over the
rounds, each bundle's ratio to the first, the CPU and the load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (tools/bench.py: the CPU's name and flags)


def _prompt(i: int, length: int, vocab: int) -> list[int]:
    return [(j * 7919 + 104729 * (i + 1)) % vocab for j in range(length)]


def measure(bundle: Path, sizes: list[int], prompt_len: int, calls: int) -> dict:
    """One process: {"ms": {N: fastest step}, "diff": {N: largest |batched - alone| over the rows' logits}}."""
    import numpy as np

    from iree_glm.runtime import Session

    session = Session.load(bundle, verify=False)
    vocab = session.config.vocab_size
    prompts = [_prompt(i, prompt_len, vocab) for i in range(max(sizes))]
    alone = []
    for prompt in prompts:  # each request's next-step logits decoding alone (a one-row step)
        cache = session.new_cache(1)
        session.run_prefill(prompt, 0, cache, 0)
        alone.append(session.decode([prompt[-1]], [prompt_len], cache, [0])[0])
    ms, diff = {}, {}
    for n in sizes:
        cache = session.new_cache(n)
        for i in range(n):
            session.run_prefill(prompts[i], 0, cache, i)
        tokens, positions, slots = [p[-1] for p in prompts[:n]], [prompt_len] * n, list(range(n))
        logits = session.decode(tokens, positions, cache, slots)  # rewrites position prompt_len: same result each call
        diff[n] = float(max(np.abs(logits[i] - alone[i]).max() for i in range(n)))
        best = float("inf")
        for _ in range(calls):
            t = time.perf_counter()
            session.decode(tokens, positions, cache, slots)
            best = min(best, time.perf_counter() - t)
        ms[n] = best * 1e3
    return {"ms": ms, "diff": diff}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundles", nargs="+", type=Path)
    p.add_argument("--sizes", default="1,2,4,8", help="batch sizes (each compiled in every bundle)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=15, help="steps timed per size and process (the fastest counts)")
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    if args.child:
        print(json.dumps(measure(args.bundles[0], sizes, args.prompt_len, args.calls)))
        return
    load = Path("/proc/loadavg").read_text().split()[:3]
    got: dict[Path, list[dict]] = {b: [] for b in args.bundles}
    for r in range(args.rounds):
        order = args.bundles[r % len(args.bundles):] + args.bundles[: r % len(args.bundles)]
        for b in order:
            out = subprocess.run([sys.executable, __file__, str(b), "--child", "--sizes", args.sizes, "--calls", str(args.calls),
                                  "--prompt-len", str(args.prompt_len)], check=True, capture_output=True, text=True).stdout
            got[b].append(json.loads(out.strip().splitlines()[-1]))
    print(f"{bench.cpu_with_flags()}; prompt {args.prompt_len}, fastest of {args.calls} steps a process, medians of "
          f"{args.rounds} processes; load {' '.join(load)} -> {' '.join(Path('/proc/loadavg').read_text().split()[:3])}\n")
    first = args.bundles[0]
    median = {b: {n: statistics.median(x["ms"][str(n)] for x in rows) for n in sizes} for b, rows in got.items()}
    print("| bundle | " + " | ".join(f"b{n} ms (vs {first.name})" for n in sizes) + " | largest logit difference from decoding alone |")
    print("|---|" + "---|" * (len(sizes) + 1))
    for b, rows in got.items():
        cells = [f"{median[b][n]:.2f} ({median[first][n] / median[b][n]:.2f}x)" for n in sizes]
        worst = max(x["diff"][str(n)] for x in rows for n in sizes if n > 1) if any(n > 1 for n in sizes) else 0.0
        print(f"| {b.name} | " + " | ".join(cells) + f" | {worst:.2g} |")


if __name__ == "__main__":
    main()
