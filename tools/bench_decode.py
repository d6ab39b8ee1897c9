"""Decode and prefill speed of several bundles side by side: each measurement in its own
process (tools/bench.py's child), the bundles alternated in a rotating order every round,
medians over the rounds. For options that should not change speed (e.g. int4 group sizes).

    python tools/bench_decode.py B_g32 B_g64 B_g128 --rounds 5

Prints a Markdown table with the load average before and after.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (tools/bench.py: per-process measurements)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundles", nargs="+", type=Path)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runs", type=int, default=3, help="generations per process (median)")
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    load = Path("/proc/loadavg").read_text().split()[:3]
    got: dict[Path, list[dict]] = {b: [] for b in args.bundles}
    for r in range(args.rounds):
        order = args.bundles[r % len(args.bundles):] + args.bundles[: r % len(args.bundles)]
        for b in order:
            got[b].append(bench._child("iree", str(b), args))
    print(f"prompt {args.prompt_len}, {args.decode_tokens} decode tokens, {args.threads} threads, "
          f"medians of {args.rounds} processes; load {' '.join(load)} -> {' '.join(Path('/proc/loadavg').read_text().split()[:3])}\n")
    print("| bundle | prefill ms | decode tok/s |\n|---|---|---|")
    for b, rows in got.items():
        print(f"| {b.name} | {statistics.median(x['prefill_ms'] for x in rows):.1f} | {statistics.median(x['decode_tok_s'] for x in rows):.0f} |")


if __name__ == "__main__":
    main()
