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
tokens can only shorten the run where every other request speculates too.

The whole run ends in a tail: once the queue is empty, requests that finish leave their slots
empty, and a variant whose requests finish at different times (speculation) decodes its last
ones in smaller steps than one whose requests finish together. A loaded server has no such
tail, so the steady column counts only the tokens made while every slot is busy and a request
waits: from the moment the first `--slots` requests have all started to the moment the last
request starts (their prefills included).

This machine's speed drifts between processes (on a shared 2-core VM the same 12 prefills took
11.2-12.6 s), often more than speculation changes. The prefills are the same work in both
variants, so they serve as a control: the last ratio is the decode calls' time over the
prefills' time, over plain's; below 1, the decode steps took less time than plain's at equal
machine speed (decode and prefill are bound by different things, so it is a control, not an
exact correction). Prints medians over
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

    times: list[list[float]] = [[] for _ in todo]  # each request's token times

    def sink(i: int):
        def put(item) -> None:
            if isinstance(item, (GenerationResult, Exception)):
                done.put((i, item))
            else:
                times[i].append(time.perf_counter())
        return put

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
    starts = sorted(t[0] for t in times)  # each request's first token: its prefill's end
    full, last = starts[min(slots, len(starts)) - 1], starts[-1]
    steady = sum(full < x <= last for t in times for x in t) / (last - full) if last > full else None
    return {"wall_s": wall, "tokens": made, "tok_s": made / wall, "steady_tok_s": steady,
            "calls_per_token": engine.stats.steps / (made - len(results)),
            "verify_calls": engine.stats.verify_calls, "prefill_s": sum(r.prefill_ms for r in results) / 1e3,
            "steps_s": engine.stats.step_s,
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
    print("| variant | tok/s (all requests, prefill included) | vs plain | steady tok/s (every slot busy) | vs plain | wall s: prefills + decode calls + the rest (medians of each) | decode time / prefill time vs plain | target calls per token | verify calls | acceptance per request | same tokens as plain |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    base = statistics.median(x["tok_s"] for x in got["plain"])
    steady = [x["steady_tok_s"] for x in got["plain"]]
    steady_base = statistics.median(steady) if None not in steady else None
    plain_ids = got["plain"][0]["ids"]
    control = statistics.median(x["steps_s"] / x["prefill_s"] for x in got["plain"])
    for v in VARIANTS:
        runs = got[v]
        rate = statistics.median(x["tok_s"] for x in runs)
        steady = [x["steady_tok_s"] for x in runs]
        steady = statistics.median(steady) if steady_base is not None and None not in steady else None
        steady_text = "- | -" if steady is None else f"{steady:.1f} | {steady / steady_base:.2f}x"
        acc = " ".join("-" if a is None else f"{a:.2f}" for a in runs[0]["acceptance"])
        same = sum(a == b for a, b in zip(runs[0]["ids"], plain_ids))
        wall, pre, steps = (statistics.median(x[key] for x in runs) for key in ("wall_s", "prefill_s", "steps_s"))
        rest = statistics.median(x["wall_s"] - x["prefill_s"] - x["steps_s"] for x in runs)
        split = f"{wall:.2f}: {pre:.2f} + {steps:.2f} + {rest:.2f}"
        controlled = statistics.median(x["steps_s"] / x["prefill_s"] for x in runs) / control
        print(f"| {v} | {rate:.1f} | {rate / base:.2f}x | {steady_text} | {split} | {controlled:.2f} | {statistics.median(x['calls_per_token'] for x in runs):.2f} | "
              f"{statistics.median(x['verify_calls'] for x in runs):.0f} | {acc} | {same}/{len(plain_ids)} |")


if __name__ == "__main__":
    main()
