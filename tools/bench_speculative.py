"""Speculative decoding: decode tok/s with and without drafts, side by side.

For each quantization of a seeded random GLM-4 config (tools/bench.py's CONFIGS) this builds
the target bundle and a pruned draft (`--prune`, default heads=0.5,ffn=0.5, of the same
checkpoint, same quantization), then times greedy decode in child processes (one engine per process), the
variants alternated within each round, medians over rounds:

  plain         no draft (on the repetitive prompt)
  prompt-lookup on a repetitive prompt (a block of tokens repeated, one token changed per copy:
                code under edit)
  agent         prompt lookup on an agent transcript (screens of text repeated with a few
                changes, each followed by a short action)
  pruned        the pruned draft bundle, on an ordinary (non-repeating) prompt
  wrong         a free draft whose every token is rejected (ordinary prompt): what adaptive k
                costs when drafts fail, against plain decode on the same prompt
  oracle        a draft that proposes the plain decode's own next tokens (acceptance 1, free):
                the ceiling of what verification in one call can give at this k

and the cost of one `verify` call of k+1 rows against one decode step; with a draft bundle, the
CPU time of its decode step and of its catch-up on a window, the share of the target's greedy
continuation it predicts from the same context, and what each k would give at that acceptance
and these costs (the arithmetic of whether a draft of this size can pay). Beside the wall and
CPU ratios of whole runs, "calls x cost" is plain decoding's time over a run's from the calls it
made (counted) and each call's CPU time measured alone: on a loaded machine the first two are
noise at the 5% level, the last is not. Every speculative run's
tokens are compared with the plain run's (greedy must be identical). Bytes per generated token
= weight bytes a step reads (the embedding table left out) x target calls per token (+ the
draft's per draft call); the bound is
this machine's read bandwidth (read_bandwidth: a 512 MB array streamed by --threads threads)
divided by the weight bytes: effective decode past 100% reads the weights less than once per
token.

    python tools/bench_speculative.py --config 330m --quant none,int8,int4
    python tools/bench_speculative.py --config 330m --layers 4 --quant int4 --rounds 2   # quick
    python tools/bench_speculative.py --config 330m --quant int4 --target BUNDLE --variants plain,agent,wrong
    # a trained target (the default model, a pruned copy as its draft), its kind of text as the prompt:
    python tools/bench_speculative.py --quant int4 --target DEFAULT --draft PRUNED --tokens 256
        --text iree_glm/frontend/default_model_files/heldout.txt --variants plain,pruned,wrong

Random weights make acceptance rates of the pruned draft and of prompt lookup properties of
this random model, not of a trained one: read them with the oracle row and the verify costs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (tools/bench.py: configs, checkpoints, cached bundles)

PRUNE = "heads=0.5,ffn=0.5"
BUNDLE_WINDOW = 64  # runtime.drafts.BundleDraft.WINDOW: the draft's catch-up is timed on this many tokens


def repetitive_prompt(vocab: int, length: int) -> list[int]:
    """A 'file' of 48 tokens repeated with one token edited per copy (code under edit)."""
    block = [(i * 7919 + 13) % vocab for i in range(48)]
    out = []
    copy = 0
    while len(out) < length:
        edited = list(block)
        edited[(copy * 11) % len(block)] = (copy * 31 + 5) % vocab
        out += edited
        copy += 1
    return out[:length]


def agent_prompt(vocab: int, length: int) -> list[int]:
    """An agent transcript: a 40-token screen (UI text) and a 6-token action per turn; each turn's
    screen is the last one with two tokens changed (a counter, a new line of text)."""
    screen = [(i * 104729 + 11) % vocab for i in range(40)]
    out = []
    turn = 0
    while len(out) < length:
        screen[(turn * 7) % 40] = (turn * 613 + 3) % vocab
        screen[(turn * 13 + 5) % 40] = (turn * 997 + 1) % vocab
        action = [(turn * 31 + j * 17 + 2) % vocab for j in range(6)]
        out += screen + action
        turn += 1
    return out[:length]


PROMPTS = {"repetitive": repetitive_prompt, "agent": agent_prompt}


def prompt_of(variant: str) -> str:
    return {"agent": "agent", "pruned": "ordinary", "wrong": "ordinary", "oracle": "ordinary"}.get(variant, "repetitive")


# A read loop with 8 independent 32-byte accumulators (AVX2, which every x86 kernel set needs):
# numpy's own sums (pairwise, ~5 GB/s a core) are bound by their arithmetic, well below what the
# int4 decode kernel streams (~16 GB/s).
READ_LOOP = r"""
#include <immintrin.h>
#include <stddef.h>
unsigned long long read_all(const unsigned long long *p, size_t n) {
  __m256i a[8];
  for (int j = 0; j < 8; ++j) a[j] = _mm256_setzero_si256();
  for (size_t i = 0; i + 32 <= n; i += 32)
    for (int j = 0; j < 8; ++j) a[j] = _mm256_xor_si256(a[j], _mm256_load_si256((const __m256i *)(p + i + 4 * j)));
  for (int j = 1; j < 8; ++j) a[0] = _mm256_xor_si256(a[0], a[j]);
  return (unsigned long long)_mm256_extract_epi64(a[0], 0);
}
"""


def read_bandwidth(threads: int, mb: int = 512) -> float:
    """Bytes per second this machine reads: the best of 5 passes over a `mb` MB array split over
    `threads` threads, each streaming its part through READ_LOOP (ctypes releases the GIL)."""
    import ctypes
    import subprocess
    import tempfile
    import threading
    import time

    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        src, lib = Path(tmp) / "read.c", Path(tmp) / "read.so"
        src.write_text(READ_LOOP)
        subprocess.run(["cc", "-O2", "-mavx2", "-shared", "-fPIC", str(src), "-o", str(lib)], check=True)
        read_all = ctypes.CDLL(str(lib)).read_all
    read_all.argtypes, read_all.restype = [ctypes.c_void_p, ctypes.c_size_t], ctypes.c_ulonglong
    a = np.ones(mb * 2**20 // 8 + 8, np.uint64)
    a = a[(-a.ctypes.data // 8) % 8 :][: mb * 2**20 // 8]  # 64-byte aligned
    parts = np.array_split(a, threads)
    best = float("inf")
    for _ in range(5):
        workers = [threading.Thread(target=read_all, args=(part.ctypes.data, part.size // 64 * 64)) for part in parts]
        t = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - t)
    return a.nbytes / best


def ordinary_prompt(vocab: int, length: int) -> list[int]:
    return [(i * 104729 + 7) % vocab for i in range(1, length + 1)]


def streamed_bytes(bundle: Path) -> int:
    """Weight bytes a decode step reads: the bundle's parameters less the embedding table, of
    which a step reads one row per token."""
    import iree.runtime as rt

    index = rt.ParameterIndex()
    index.load(str(bundle / "weights.irpa"))
    return sum(entry.length for key, entry in index.items() if not key.startswith("model.embed_tokens."))


def pruned_bundle(checkpoint: Path, folder: Path, context: int, quant, prune: str = PRUNE) -> Path:
    """The draft: `--prune PRUNE` of the checkpoint, ranked on ordinary-prompt token ids (the
    random checkpoint has no tokenizer for the calibration text), same quantization."""
    from iree_glm.compiler.build import BuildOptions, build_bundle
    from iree_glm.frontend.checkpoint import load_model, open_checkpoint, write_checkpoint
    from iree_glm.transforms.prune import parse_prune_spec, prune_model

    pruned = folder / f"{checkpoint.name}-pruned" if prune == PRUNE else folder / f"{checkpoint.name}-pruned-{prune.replace('=', '').replace(',', '-')}"
    if not (pruned / "model.safetensors").exists():
        model = load_model(open_checkpoint(checkpoint))
        model, _ = prune_model(model, parse_prune_spec(prune), ordinary_prompt(model.cfg.vocab_size, 512))
        write_checkpoint(model, pruned)
    tag = "none" if quant.mode == "none" else quant.mode
    out = folder / f"{pruned.name}-{tag}-{context}-{bench.source_hash()}"
    if not (out / "manifest.json").exists():
        build_bundle(pruned, out, BuildOptions(max_context=context, quant=quant))
    return out


class Oracle:
    """Proposes the recorded plain-decode continuation (bench only); with `wrong`, each of those
    tokens + 1, which the target always rejects."""

    name = "oracle"

    def __init__(self, prompt: list[int], tokens: list[int], vocab: int, wrong: bool = False):
        self.full, self.shift, self.vocab = prompt + tokens, int(wrong), vocab

    def start(self, sampling):
        return self

    def propose(self, context, k):
        from iree_glm.runtime.drafts import Proposal

        n = len(context)
        ahead = self.full[n : n + k] if self.full[:n] == context else []
        return Proposal([(t + self.shift) % self.vocab for t in ahead])

    def accepted(self, context_length, kept):
        pass


def _child(args) -> dict:
    import iree.runtime as rt

    rt.flags.parse_flags(f"--task_topology_group_count={args.threads}")
    from iree_glm.runtime import Session

    target = Session.load(args.bundle, verify=False)
    vocab = target.config.vocab_size
    if args.prompt == "ordinary" and args.text:  # a trained model's own kind of text, from its middle
        ids = target.encode(Path(args.text).read_text())
        prompt = ids[len(ids) // 2 :][: args.prompt_len]
    else:
        prompt = PROMPTS.get(args.prompt, ordinary_prompt)(vocab, args.prompt_len)
    if args.variant == "verify-cost":
        import time

        cache = target.new_cache()
        target.run_prefill(prompt, 0, cache)
        ks = [0] + [int(x) for x in args.ks.split(",")]
        times: dict[int, list[float]] = {k: [] for k in ks}
        cpu_times: dict[int, list[float]] = {k: [] for k in ks}
        t = time.perf_counter()
        target.decode([1], [len(prompt)], cache)
        reps = max(15, min(201, int(0.3 / (time.perf_counter() - t))))  # a small model's calls: more of them
        for _ in range(reps):  # the lengths interleaved, so that the load's drift falls on all alike
            for k in ks:
                t, c = time.perf_counter(), time.process_time()
                if k == 0:
                    target.decode([1], [len(prompt)], cache)
                else:
                    target.verify([1] * (k + 1), len(prompt), cache)
                times[k].append(time.perf_counter() - t)
                cpu_times[k].append(time.process_time() - c)
        out = {str(k): statistics.median(v) * 1e3 for k, v in times.items()}
        # CPU time: the fastest call, what it costs without contention (a loaded machine's
        # medians of millisecond calls hold other processes' time slices and spinning workers).
        cpu = {str(k): min(v) * 1e3 for k, v in cpu_times.items()}
        result = {"verify_ms": out, "verify_cpu_ms": cpu}
        if args.draft_bundle:
            draft = Session.load(args.draft_bundle, verify=False)
            result["draft_cpu_ms"] = draft_costs(draft, prompt, reps)
            result["agreement"] = agreement(target, draft, prompt, args.tokens)
        return result
    target.generate(prompt, 4, stop_ids=())  # warm-up
    plain, plain_cpu = timed_generate(target, prompt, args.tokens)
    if args.variant == "plain":
        result, cpu = plain, plain_cpu
    else:
        draft = {"prompt-lookup": "prompt-lookup", "agent": "prompt-lookup", "pruned": args.draft_bundle,
                 "oracle": Oracle(prompt, plain.generated_ids, vocab),
                 "wrong": Oracle(prompt, plain.generated_ids, vocab, wrong=True)}[args.variant]
        spec = Session.load(args.bundle, verify=False, draft=draft, draft_tokens=args.k)
        spec.generate(prompt, 8, stop_ids=())  # warm-up: after the plain first step, a round runs the draft
        calls = count_calls(spec)
        result, cpu = timed_generate(spec, prompt, args.tokens)
    same = [a == b for a, b in zip(result.generated_ids, plain.generated_ids)] + [False]
    return {"tok_s": result.decode_tok_s, "plain_tok_s": plain.decode_tok_s, "cpu_tok_s": cpu, "plain_cpu_tok_s": plain_cpu,
            "same_tokens": same.index(False), "acceptance": result.acceptance_rate, "per_call": result.tokens_per_target_call,
            "calls": calls if args.variant != "plain" else None}


def count_calls(spec) -> dict[str, list[int]]:
    """Record the calls `spec` makes from now on: the target's rows per call (1: a decode step),
    the draft bundle's decode steps and the tokens of its prefill calls (its catch-up)."""
    from iree_glm.runtime.drafts import BundleDraft

    calls: dict[str, list[int]] = {"target": [], "draft_steps": [], "draft_prefill": []}

    def wrap(session, name, record):
        real = getattr(session, name)
        setattr(session, name, lambda *a, **kw: record(a) or real(*a, **kw))

    # An exact bundle's one-row decode runs `verify`: count verify calls only, else both.
    wrap(spec, "verify", lambda a: calls["target"].append(len(a[0])))
    if not spec.exact_verify_rows:
        wrap(spec, "decode", lambda a: calls["target"].append(1))
    if isinstance(spec.draft, BundleDraft):
        wrap(spec.draft.session, "decode", lambda a: calls["draft_steps"].append(1))
        wrap(spec.draft.session, "run_prefill", lambda a: calls["draft_prefill"].append(len(a[0])))
    return calls


def modelled_ratio(calls: dict[str, list[int]], tokens: int, verify_cpu: dict[str, float], draft_cpu: dict[str, float] | None) -> float:
    """Plain decoding's time over the speculative run's, from the calls it made and each call's
    CPU time measured alone (verify rows interpolated between the measured counts): the load
    of a shared machine moves each call's cost much less than a whole run's."""
    import numpy as np

    rows = [int(k) + 1 for k in verify_cpu]
    per_call = [verify_cpu[k] / verify_cpu["0"] for k in verify_cpu]
    spent = float(np.interp(calls["target"], rows, per_call).sum()) if calls["target"] else 0.0
    if draft_cpu:
        # A prefill call of n tokens: n / 64 of the window's time, at least a decode step's.
        prefill = sum(max(draft_cpu["step"], n * draft_cpu["window"] / BUNDLE_WINDOW) for n in calls["draft_prefill"])
        spent += (len(calls["draft_steps"]) * draft_cpu["step"] + prefill) / verify_cpu["0"]
    return (tokens - 1) / spent


def agreement(target, draft, prompt: list[int], tokens: int) -> float:
    """The share of the target's greedy continuation of `prompt` that the draft predicts, each
    token from the same context (the draft's full context, not BundleDraft's window): the
    acceptance a greedy draft token has, whatever adaptive k does with it."""
    import numpy as np

    ids = prompt + target.generate(prompt, tokens, stop_ids=()).generated_ids
    cache, best = draft.new_cache(), []
    for start in range(0, len(ids), 16):
        best += list(np.argmax(draft.verify(ids[start : start + 16], start, cache), axis=-1))
    rows = range(len(prompt) - 1, len(ids) - 1)  # row i predicts ids[i + 1]
    return sum(int(best[i]) == ids[i + 1] for i in rows) / len(rows)


def draft_costs(draft, prompt: list[int], reps: int) -> dict[str, float]:
    """CPU ms of the draft's decode step and of its catch-up on BundleDraft's window of the
    prompt (what a first proposal, or one after a pause, feeds it), the fastest of `reps`."""
    import time

    cache = draft.new_cache()
    window = prompt[-BUNDLE_WINDOW:]
    out: dict[str, list[float]] = {"step": [], "window": []}
    for _ in range(reps):
        c = time.process_time()
        draft.run_prefill(window, 0, cache)
        out["window"].append(time.process_time() - c)
        c = time.process_time()
        draft.decode([1], [len(window)], cache)
        out["step"].append(time.process_time() - c)
    return {name: min(v) * 1e3 for name, v in out.items()}


def timed_generate(session, prompt: list[int], tokens: int):
    """(The greedy result, decode tokens per second of this process's CPU time): tokens after the
    first (the prompt's) over the CPU time of all threads between them. A loaded machine
    deschedules the process, which wall time counts and CPU time does not."""
    import time

    gen = session.stream(prompt, tokens, stop_ids=())
    count, start = 0, 0.0
    for _ in gen:
        count += 1
        if count == 1:
            start = time.process_time()
    return gen.result, (count - 1) / max(time.process_time() - start, 1e-9)


def run_child(**kw) -> dict:
    argv = [sys.executable, __file__, "--child"] + [f"--{k.replace('_', '-')}={v}" for k, v in kw.items() if v is not None]
    out = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=os.environ.get("PYTHONPATH", "")))
    if out.returncode != 0:
        raise SystemExit(f"child {kw} failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="330m", choices=sorted(bench.CONFIGS))
    p.add_argument("--layers", type=int)
    p.add_argument("--quant", default="none,int8,int4")
    p.add_argument("--work", type=Path, default=Path("bench-work"))
    p.add_argument("--prompt-len", type=int, default=256)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--ks", default="1,2,4,8")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variants", default="plain,prompt-lookup,agent,pruned,wrong,oracle")
    p.add_argument("--prune", default=PRUNE, help="the pruned draft's --prune recipe")
    p.add_argument("--target", type=Path, help="use this built bundle as the target (one --quant; default: build)")
    p.add_argument("--draft", type=Path, help="use this built bundle as the pruned draft (default: build)")
    p.add_argument("--text", type=Path, help="the ordinary prompt: this text in the target's tokenizer (a trained target)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--bundle", help=argparse.SUPPRESS)
    p.add_argument("--draft-bundle", help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--prompt", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(_child(args)))
        return
    from iree_glm.transforms.quantize import QuantSpec

    args.work.mkdir(parents=True, exist_ok=True)
    variants = args.variants.split(",")
    built = args.target is None or ("pruned" in variants and args.draft is None)
    ckpt = bench.make_checkpoint(args.config, args.work, args.layers) if built else None
    context = args.prompt_len + args.tokens + args.k + 8
    bandwidth = read_bandwidth(args.threads)
    model = args.target or f"{args.config}{f' ({args.layers} layers)' if args.layers else ''}"
    print(f"# {bench.cpu_with_flags()}; {model}, prompt {args.prompt_len}{f' tokens of {args.text}' if args.text else ''}, "
          f"{args.tokens} tokens, k <= {args.k}, {args.threads} threads, {args.rounds} rounds; "
          f"read bandwidth {bandwidth / 1e9:.1f} GB/s ({args.threads} threads); {bench._load()}")
    for q in args.quant.split(","):
        quant = QuantSpec(mode=q)
        target = args.target or bench.make_bundle(ckpt, args.work, context, quant=quant)
        draft = (args.draft or pruned_bundle(ckpt, args.work, context, quant, args.prune)) if "pruned" in variants else None
        weight = streamed_bytes(target)
        draft_weight = streamed_bytes(draft) if draft else 0
        runs: dict[str, list[dict]] = {v: [] for v in variants}
        prompts = {v: "ordinary" if args.text and v == "plain" else prompt_of(v) for v in variants}
        for _ in range(args.rounds):
            for v in variants:
                runs[v].append(run_child(bundle=target, draft_bundle=draft, variant=v, prompt=prompts[v], text=args.text,
                                         prompt_len=args.prompt_len, tokens=args.tokens, k=args.k, threads=args.threads, ks=args.ks))
        costs = run_child(bundle=target, draft_bundle=draft, variant="verify-cost", prompt="ordinary", text=args.text,
                          prompt_len=args.prompt_len, tokens=args.tokens, k=args.k, threads=args.threads, ks=args.ks)
        cost, cost_cpu = costs["verify_ms"], costs["verify_cpu_ms"]
        print(f"\n## {q}: {weight / 1e6:.0f} MB of weights read per step (draft {draft_weight / 1e6:.0f} MB; "
              f"embedding tables left out), {bench._load()}\n")
        print(f"bandwidth bound: {bandwidth / weight:.1f} tok/s ({bandwidth / 1e9:.1f} GB/s / {weight / 1e6:.0f} MB)\n")
        print("| draft | prompt | decode tok/s | vs plain (same process) | tok / CPU s | vs plain (CPU) | vs plain (calls x cost) "
              "| acceptance | tokens / target call | MB read / token | effective GB/s | % of bound | tokens equal to plain |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for v in variants:
            tok_s = statistics.median(r["tok_s"] for r in runs[v])
            ratio = statistics.median(r["tok_s"] / r["plain_tok_s"] for r in runs[v])  # plain decode in the same process
            cpu = statistics.median(r["cpu_tok_s"] for r in runs[v])
            cpu_ratio = statistics.median(r["cpu_tok_s"] / r["plain_cpu_tok_s"] for r in runs[v])
            accepted = [r["acceptance"] for r in runs[v] if r["acceptance"] is not None]
            acc = statistics.median(accepted) if accepted else None
            per_call = statistics.median(r["per_call"] or 1.0 for r in runs[v])  # medians of the rounds, as the other columns
            read = weight / per_call + (draft_weight * (1 - 1 / per_call) if v == "pruned" else 0)
            model = statistics.median(modelled_ratio(r["calls"], args.tokens, cost_cpu, costs.get("draft_cpu_ms")) if r["calls"] else 1.0
                                      for r in runs[v])
            print(f"| {v} | {prompts[v]} | {tok_s:.1f} | "
                  f"{ratio:.2f}x | {cpu:.1f} | {cpu_ratio:.2f}x | {model:.3f}x | {'-' if acc is None else f'{acc:.2f}'} | {per_call:.2f} | "
                  f"{read / 1e6:.0f} | {weight * tok_s / 1e9:.1f} | {100 * weight * tok_s / bandwidth:.0f}% | "
                  f"{min(r['same_tokens'] for r in runs[v])}/{args.tokens} |")
        print("\n| rows (k+1) | " + " | ".join(str(int(k) + 1) for k in cost) + " |")
        print("|---|" + "---|" * len(cost))
        print("| ms per call | " + " | ".join(f"{ms:.1f}" for ms in cost.values()) + " |")
        print("| CPU ms per call, fastest (x decode) | " + " | ".join(f"{ms:.1f} ({ms / cost_cpu['0']:.2f}x)" for ms in cost_cpu.values()) + " |")
        if "draft_cpu_ms" in costs:
            d = costs["draft_cpu_ms"]
            step = d["step"] / cost_cpu["0"]
            print(f"\ndraft, CPU ms: decode step {d['step']:.2f} ({step:.2f}x the target's), "
                  f"catch-up on a {min(args.prompt_len, 64)}-token window {d['window']:.2f} ({d['window'] / cost_cpu['0']:.2f}x)")
            a = min(costs["agreement"], 0.999)
            print(f"draft predicts {100 * costs['agreement']:.1f}% of the target's greedy tokens (same context); at that "
                  "acceptance a round of k draft tokens yields (1 - a^(k+1)) / (1 - a) tokens for (verify of k+1 rows + "
                  "k draft steps) of CPU time:")
            for k in (k for k in cost_cpu if k != "0"):
                made, spent = (1 - a ** (int(k) + 1)) / (1 - a), cost_cpu[k] / cost_cpu["0"] + int(k) * step
                print(f"  k = {k}: {made:.2f} tokens / {spent:.2f} decode steps = {made / spent:.2f}x plain")


if __name__ == "__main__":
    main()
