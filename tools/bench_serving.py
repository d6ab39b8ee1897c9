"""Serving benchmark: prefix-cache TTFT, batched decode throughput, batching overhead.

    python tools/bench_serving.py [--bundle bundles/bench-serving] [--reps 5]

Without an existing bundle it first builds one: a seeded-random GLM-4 (hidden 768, 8 layers,
12 heads over 2 KV heads, vocab 8192; ~61M parameters, fp32) with context 1536 and decode
batch sizes 1, 2, 4, 8. Prompts are random token ids. Reported numbers are medians over
`--reps` runs in this one process (one engine: IREE on local-task); the machine is shared,
so compare ratios within one run.

1. TTFT (prefill + first token) of a request whose first 1,024 tokens were sent before,
   with the prefix cache, vs the same request cold.
2. Aggregate decode throughput of 8 concurrent streams vs 1 through the batching engine
   (decode steps only: rows decoded / time in decode calls).
3. End-to-end latency of a lone request through the batching engine (10 ms gathering
   window) vs a direct `Session.generate`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

BENCH_CONFIG = dict(
    family="glm4", vocab_size=8192, hidden_size=768, intermediate_size=2048, num_layers=8, num_heads=12,
    num_kv_heads=2, head_dim=64, attention_bias=True, partial_rotary_factor=0.5, max_position_embeddings=4096,
    eos_token_ids=(8191,),
)


def build(out: Path) -> None:
    import tempfile

    from iree_glm.compiler.build import BuildOptions, build_bundle
    from iree_glm.frontend.checkpoint import random_model, write_checkpoint
    from iree_glm.bundle.model_config import ModelConfig

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "ckpt"
        write_checkpoint(random_model(ModelConfig(**BENCH_CONFIG), seed=7), ckpt)
        t = time.perf_counter()
        build_bundle(ckpt, out, BuildOptions(max_context=1536, decode_batch_sizes=(1, 2, 4, 8)), lambda s: print(f"  {s}", file=sys.stderr))
        print(f"built {out} in {time.perf_counter() - t:.0f} s", file=sys.stderr)


def ttft(session, ids) -> float:
    t = time.perf_counter()
    gen = session.stream(ids, max_new_tokens=1, stop_ids=())
    next(gen)
    return time.perf_counter() - t


def bench_prefix(session, rng, reps: int, prefix_len: int = 1024, suffix_len: int = 16) -> dict:
    vocab = session.config.vocab_size - 1
    cold, warm = [], []
    for _ in range(reps):
        prefix = [int(t) for t in rng.integers(0, vocab, prefix_len)]
        first = prefix + [int(t) for t in rng.integers(0, vocab, suffix_len)]
        second = prefix + [int(t) for t in rng.integers(0, vocab, suffix_len)]
        cold.append(ttft(session, first))  # nothing of this prefix is cached yet
        warm.append(ttft(session, second))  # shares 1,024 tokens with `first`
    c, w = statistics.median(cold), statistics.median(warm)
    return {"ttft_cold_ms": c * 1e3, "ttft_warm_ms": w * 1e3, "speedup": c / w}


def run_streams(engine, session, n: int, prompt_len: int, new_tokens: int, rng) -> dict:
    vocab = session.config.vocab_size - 1
    prompts = [[int(t) for t in rng.integers(0, vocab, prompt_len)] for _ in range(n)]
    before = (engine.stats.steps, engine.stats.rows_decoded, engine.stats.step_s)
    threads = [threading.Thread(target=lambda p=p: list(engine.run(session.new_request(p, new_tokens, stop_ids=()))))
               for p in prompts]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    steps = engine.stats.steps - before[0]
    rows = engine.stats.rows_decoded - before[1]
    step_s = engine.stats.step_s - before[2]
    return {"streams": n, "decode_tok_s": rows / step_s, "wall_tok_s": n * new_tokens / wall, "steps": steps,
            "ms_per_step": step_s / steps * 1e3}


def bench_batching(session, rng, reps: int, new_tokens: int = 64) -> dict:
    from iree_glm.runtime.batching import BatchEngine

    engine = BatchEngine(session, gather_ms=10)
    out = {}
    try:
        run_streams(engine, session, 2, 32, 4, rng)  # warm-up of every entry point used below
        for n in (1, 8):
            runs = [run_streams(engine, session, n, 64, new_tokens, rng) for _ in range(reps)]
            out[n] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        out["throughput_ratio_8_vs_1"] = out[8]["decode_tok_s"] / out[1]["decode_tok_s"]
        # A lone request: direct vs through the engine (same prompt and length).
        prompt = [int(t) for t in rng.integers(0, session.config.vocab_size - 1, 64)]
        direct, batched = [], []
        for _ in range(reps):
            t = time.perf_counter()
            session.generate(prompt, new_tokens, stop_ids=())
            direct.append(time.perf_counter() - t)
            t = time.perf_counter()
            list(engine.run(session.new_request(prompt, new_tokens, stop_ids=())))
            batched.append(time.perf_counter() - t)
        d, b = statistics.median(direct), statistics.median(batched)
        out["lone"] = {"direct_ms": d * 1e3, "engine_ms": b * 1e3, "overhead_pct": (b / d - 1) * 100}
    finally:
        engine.close()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=Path("bundles") / "bench-serving")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    if not (args.bundle / "manifest.json").exists():
        build(args.bundle)
    from iree_glm.runtime import Session

    session = Session.load(args.bundle, verify=False, prefix_cache=True, prefix_cache_bytes=2 << 30)
    rng = np.random.default_rng(0)
    ttft(session, [1, 2, 3])  # warm-up
    prefix = bench_prefix(session, rng, args.reps)
    batching = bench_batching(session, rng, args.reps)
    results = {"bundle": str(args.bundle), "config": BENCH_CONFIG, "prefix_cache": prefix, "batching": batching}
    print(json.dumps(results, indent=2, default=str))
    b1, b8, lone = batching[1], batching[8], batching["lone"]
    print(f"""
| measure | value | target |
|---|---|---|
| TTFT, 1,024-token cached prefix + 16 new tokens | {prefix['ttft_warm_ms']:.1f} ms | |
| TTFT, same request cold | {prefix['ttft_cold_ms']:.1f} ms | |
| TTFT speed-up from the prefix cache | {prefix['speedup']:.1f}x | >= 10x |
| decode, 1 stream | {b1['decode_tok_s']:.1f} tok/s ({b1['ms_per_step']:.1f} ms/step) | |
| decode, 8 streams (aggregate) | {b8['decode_tok_s']:.1f} tok/s ({b8['ms_per_step']:.1f} ms/step) | |
| aggregate decode 8 vs 1 | {batching['throughput_ratio_8_vs_1']:.2f}x | >= 4x |
| lone request, direct / through the engine | {lone['direct_ms']:.0f} / {lone['engine_ms']:.0f} ms | |
| batching overhead for a lone request | {lone['overhead_pct']:+.1f}% | < 5% |""")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    session.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
