"""Speculative decoding beside other requests: the batching engine's throughput with and
without a prompt-lookup draft when several requests decode at once.

    python tools/bench_concurrent_speculation.py BUNDLE --requests 12 --slots 4 --prompts agent --rounds 3
    python tools/bench_concurrent_speculation.py BUNDLE --prompts mixed   # half agent, half ordinary

The bundle needs `decode_b{N}` entry points (compile --batch-sizes 1,2,4,...) and `verify`.
Each variant runs in its own process, the two alternated every round: a process submits all
requests at once (greedy, `--tokens` each, distinct prompts) to one batching engine that runs
at most `--slots` of them at a time, the rest waiting in its queue as on a loaded server, and
reports the wall time from their submission to the last result (their prefills included), so
the tokens per second are the engine's throughput. A request that finishes sooner lets a
waiting one in: with as many requests as slots there is no queue, and a speculating request's
tokens can only shorten the run where every other request speculates too. Prints medians over
the rounds, the ratio, target calls per generated token, each variant's acceptance (the first
requests'), the CPU and the load. Prompts are token ids (bench_speculative.py's agent
transcript, or an ordinary non-repeating sequence), each request's shifted by its index.
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
from bench_speculative import agent_prompt, ordinary_prompt  # noqa: E402

VARIANTS = ("plain", "prompt-lookup")


def prompts(kind: str, requests: int, vocab: int, length: int) -> list[list[int]]:
    out = []
    for i in range(requests):
        agent = kind == "agent" or (kind == "mixed" and i % 2 == 0)
        base = agent_prompt(vocab, length) if agent else ordinary_prompt(vocab, length + i)[i:]
        out.append([(t + 97 * i) % vocab for t in base])
    return out


def measure(bundle: Path, variant: str, kind: str, requests: int, slots: int, length: int, tokens: int, k: int) -> dict:
    """One process: the engine's wall time for `requests` requests submitted at once, and their counts."""
    import queue

    from iree_glm.runtime import Session
    from iree_glm.runtime.batching import BatchEngine
    from iree_glm.runtime.request import GenerationResult

    draft = None if variant == "plain" else variant
    session = Session.load(bundle, verify=False, draft=draft, draft_tokens=k)
    sizes = session.decode_batch_sizes
    if slots > sizes[-1]:
        raise SystemExit(f"{bundle}: decode batch sizes {sizes}: at most {sizes[-1]} slots")
    todo = prompts(kind, requests, session.config.vocab_size, length)
    session.generate(todo[0], 4, stop_ids=())  # warm-up
    done: queue.SimpleQueue = queue.SimpleQueue()
    engine = BatchEngine(session, gather_ms=2000, max_batch=slots)  # the first `slots` start together
    start = time.perf_counter()
    results: list = [None] * len(todo)

    def sink(i: int):
        return lambda item: isinstance(item, (GenerationResult, Exception)) and done.put((i, item))

    with engine._cond:  # submitted together
        for i, ids in enumerate(todo):
            engine.submit(session.new_request(ids, tokens, stop_ids=()), sink(i))
    for _ in todo:
        i, item = done.get()
        results[i] = item
    wall = time.perf_counter() - start
    engine.close()
    for r in results:
        if isinstance(r, Exception):
            raise r
    made = sum(len(r.generated_ids) for r in results)
    return {"wall_s": wall, "tokens": made, "tok_s": made / wall,
            "calls_per_token": engine.stats.steps / (made - len(results)),
            "verify_calls": engine.stats.verify_calls,
            "acceptance": [r.acceptance_rate for r in results], "ids": [r.generated_ids for r in results]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", type=Path)
    p.add_argument("--requests", type=int, default=12)
    p.add_argument("--slots", type=int, default=4, help="requests decoding at once (the engine's max batch)")
    p.add_argument("--prompts", choices=("agent", "ordinary", "mixed"), default="agent")
    p.add_argument("--prompt-len", type=int, default=256)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--k", type=int, default=8, help="--draft-tokens")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.bundle, args.child, args.prompts, args.requests, args.slots, args.prompt_len, args.tokens, args.k)))
        return
    load = Path("/proc/loadavg").read_text().split()[:3]
    got: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
        for v in VARIANTS[r % 2 :] + VARIANTS[: r % 2]:
            out = subprocess.run([sys.executable, __file__, str(args.bundle), "--child", v, "--requests", str(args.requests), "--slots", str(args.slots),
                                  "--prompts", args.prompts, "--prompt-len", str(args.prompt_len), "--tokens", str(args.tokens),
                                  "--k", str(args.k)], check=True, capture_output=True, text=True).stdout
            got[v].append(json.loads(out.strip().splitlines()[-1]))
    print(f"{bench.cpu_with_flags()}; {args.bundle.name}: {args.requests} greedy requests at once, {args.slots} decoding at a time, {args.prompts} prompts of "
          f"{args.prompt_len} tokens, {args.tokens} tokens each, k <= {args.k}; medians of {args.rounds} processes per variant; "
          f"load {' '.join(load)} -> {' '.join(Path('/proc/loadavg').read_text().split()[:3])}\n")
    print("| variant | tok/s (all requests, prefill included) | vs plain | target calls per token | verify calls | acceptance per request | same tokens as plain |")
    print("|---|---|---|---|---|---|---|")
    base = statistics.median(x["tok_s"] for x in got["plain"])
    plain_ids = got["plain"][0]["ids"]
    for v in VARIANTS:
        runs = got[v]
        rate = statistics.median(x["tok_s"] for x in runs)
        acc = " ".join("-" if a is None else f"{a:.2f}" for a in runs[0]["acceptance"])
        same = sum(a == b for a, b in zip(runs[0]["ids"], plain_ids))
        print(f"| {v} | {rate:.1f} | {rate / base:.2f}x | {statistics.median(x['calls_per_token'] for x in runs):.2f} | "
              f"{statistics.median(x['verify_calls'] for x in runs):.0f} | {acc} | {same}/{len(plain_ids)} |")


if __name__ == "__main__":
    main()
