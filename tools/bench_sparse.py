"""Block-sparse vs dense attention: prefill time and peak memory, in one run.

Every engine in its own process, processes alternated, medians of several runs, CPU printed:
- whole-model prefill of the default model (4 layers, hidden 256), compiled dense and with
  `--sparse-attention local=W,global=G,block=B`, both with a 4096-token KV cache (where our
  attention kernel is built, both call it: sparse is the kernel told the pattern);
- whole-model decode of the same two bundles, a conversation reaching each length;
- attention alone (one layer's attention, H=16 heads over 4 KV heads, head size 64, cache = S),
  dense vs sparse, both through our attention kernel (passes/attention_kernel.py); with
  `--attention-sets avx2,avx512`, each kernel set's form of it side by side;
- where each prefill's time goes: both bundles' prefills timed per dispatch by IREE's profiler
  (tools/bench.py's breakdown: the runtime's chunks, each attending the keys before it),
  alternated: the attention kernel's dispatches against every other dispatch, per dispatch
  side by side (the attribution of sparse vs dense), and from them the Amdahl bound on
  sparse/dense (attention free) and the ratio predicted with the sparse kernel's time;
- `--decode`: the sparse model with a KV cache indexed by position (one slot per
  position of the context) vs a sliding-window cache (`,ring`: G + W + B slots), a conversation
  reaching each context: KV-cache size, ms per token, peak RSS while decoding.
Peak memory: the IREE allocator's peak (buffers and transients of the call) and the worker's
peak RSS.

    python tools/bench_sparse.py                         # 2k/4k, W=256, G=16, B=64
    python tools/bench_sparse.py --lengths 1024 --runs 3
    python tools/bench_sparse.py --decode                # decode at 1k/4k/16k tokens of context
    python tools/bench_sparse.py --skip prefill,model-decode,before,decode,shares --attention-sets avx2,avx512
    python tools/bench_sparse.py --fidelity --lengths 1024,4096   # logits vs dense, no timing

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (tools/bench.py: code digest for cached builds)

CONTEXT = 4096
HEADS, KV_HEADS, HEAD_DIM = 16, 4, 64


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _peak_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- builds (cached in the work folder) ----------------------------------------------------


def build_model(work: Path, pattern: str | None, attention_kernel: bool = True) -> Path:
    """The default model, dense or sparse; `attention_kernel` False: a profile without our
    attention kernel (the sparse pattern then takes IREE's lowering of the gathers, as it did
    before the kernel was told the pattern)."""
    from iree_glm.compiler.build import BuildOptions, build_bundle
    from iree_glm.bundle.sparse_pattern import parse_pattern
    from importlib import resources

    out = work / (("model-dense" if pattern is None else "model-sparse") + ("" if attention_kernel else "-iree"))
    profile = "host-cpu"
    if not attention_kernel:
        text = (resources.files("iree_glm.planner.profiles") / "host-cpu.toml").read_text()
        profile = str(work / "host-cpu-no-attention-kernel.toml")
        Path(profile).write_text(text.replace('hal_driver = "local-task"', 'hal_driver = "local-task"\nattention_kernel = false', 1))
    if not (out / "manifest.json").exists():
        sparse = parse_pattern(pattern) if pattern else None
        build_bundle(None, out, BuildOptions(max_context=CONTEXT, sparse_attention=sparse, profile=profile))
    return out


@dataclass(frozen=True)
class Shape:
    """The heads of one attention layer."""

    heads: int
    kv_heads: int
    head_dim: int

    def __str__(self) -> str:
        return f"H={self.heads}, Hkv={self.kv_heads}, D={self.head_dim}"


WIDE = Shape(HEADS, KV_HEADS, HEAD_DIM)  # the attention-alone rows


def build_attention(work: Path, length: int, pattern: str | None, shape: Shape = WIDE, kernel_set: str | None = None) -> Path:
    """One attention (q over a cache of `length` positions) as its own module, in the model's
    form: query groups folded into rows, the mask causal (dense) or the pattern's, the op calling
    our attention kernel (with the pattern when sparse; `kernel_set`'s form, default the host's).
    Rows are ordered (position, query head) and S is dynamic, as in the model, so that the pass
    hands the kernel the mask before its broadcast over the query heads (otherwise the [H x S, S]
    mask is materialized and the kernel scans it: what this module timed before)."""
    import torch
    import torch.nn.functional as F

    from iree_glm.bundle.sparse_pattern import parse_pattern
    from iree_glm.frontend import sparse_attention as sa
    from iree_glm.compiler.iree_compile import compile_mlir
    from iree_glm.compiler.target import host_cpu_target
    from iree_glm.compiler.kernel_choice import kernel_set_for
    from iree_glm.passes.attention_kernel import DENSE, AttentionKernelPass, Window
    from iree_glm.passes.pipeline import PassPipeline

    if kernel_set is None:
        kernel_set = kernel_set_for(host_cpu_target(), ())[0].provider("attention").name
    tag = f"{shape.heads}-{shape.kv_heads}-{shape.head_dim}-{kernel_set}"
    out = work / f"attention-{'dense' if pattern is None else 'sparse'}-{length}-{tag}.vmfb"
    if out.exists():
        return out
    sparse = parse_pattern(pattern) if pattern else None

    class Attention(torch.nn.Module):
        def forward(self, q, k, v, positions):
            b, h, s, d = q.shape
            group = h // k.shape[1]
            keys = torch.arange(k.shape[2])
            visible = keys[None, None, :] <= positions[:, :, None]
            if sparse is not None:
                visible = visible & sa.in_pattern(keys, positions, sparse)
            n = k.shape[2]
            mask = torch.where(visible, 0.0, float("-inf"))[:, None, :, None].expand(b, 1, s, group, n).reshape(b, 1, s * group, n)
            rows = q.reshape(b, k.shape[1], group, s, d).transpose(2, 3).reshape(b, k.shape[1], s * group, d)
            out = F.scaled_dot_product_attention(rows, k, v, attn_mask=mask)
            return out.reshape(b, k.shape[1], s, group, d).transpose(2, 3).reshape(b, h, s, d)

    from iree.compiler import ir
    from iree.compiler.extras.fx_importer import FxImporter

    args = (torch.zeros(1, shape.heads, length, shape.head_dim), torch.zeros(1, shape.kv_heads, length, shape.head_dim),
            torch.zeros(1, shape.kv_heads, length, shape.head_dim), torch.arange(length)[None])
    with torch.no_grad():
        # S dynamic, as in the model: its exported mask broadcast is then the form the pass strips.
        dim = torch.export.Dim("s", min=2, max=length)
        prog = torch.export.export(Attention(), args, dynamic_shapes=({2: dim}, {2: dim}, {2: dim}, {1: dim}), strict=False)
        table = torch.export.default_decompositions()
        table.pop(torch.ops.aten.scaled_dot_product_attention.default, None)
        prog = prog.run_decompositions(table)
    importer = FxImporter(context=ir.Context())
    importer.import_frozen_program(prog, func_name="attention")
    src = work / f"{out.stem}.mlir"
    src.write_text(str(importer.module))
    window = Window(sparse.local, sparse.global_) if sparse is not None else DENSE
    compile_mlir(src, out, host_cpu_target(), pipeline=PassPipeline([AttentionKernelPass(window, kernel_set=kernel_set)]))
    return out


LONG_CONTEXT = 32768  # positions the decode benchmark's checkpoint allows


def long_checkpoint(work: Path) -> Path:
    """The default model with max_position_embeddings raised to LONG_CONTEXT: no weight depends
    on it (rotary is computed), and contexts past the shipped 4096 must compile."""
    from iree_glm.frontend import default_model

    path = work / "default-model-long"
    if not (path / "model.safetensors").exists():
        default_model.write_default_checkpoint(path)
        config = json.loads((path / "config.json").read_text())
        config["max_position_embeddings"] = LONG_CONTEXT
        (path / "config.json").write_text(json.dumps(config, indent=2))
    return path


def build_decode_bundle(work: Path, pattern: str, context: int | None, ring: str = "ring") -> Path:
    """The default model with `pattern`: a KV cache indexed by position of `context` slots, or
    (None) a sliding-window cache (`pattern` + ',' + `ring`) serving up to LONG_CONTEXT positions."""
    from iree_glm.compiler.build import BuildOptions, build_bundle
    from iree_glm.bundle.sparse_pattern import parse_pattern

    sparse = parse_pattern(pattern if context else f"{pattern},{ring}")
    out = work / (f"decode-position-{context}" if context else f"decode-ring-{sparse.ring}")
    if not (out / "manifest.json").exists():
        build_bundle(long_checkpoint(work), out, BuildOptions(max_context=context or LONG_CONTEXT, sparse_attention=sparse))
    return out


# -- measurements, each in a child process -------------------------------------------------


def _measure_model(bundle: str, length: int, runs: int) -> dict:
    import numpy as np

    from iree_glm.runtime import Session

    session = Session.load(bundle, verify=False)
    ids = np.asarray([[(i * 7919) % session.config.vocab_size for i in range(1, length + 1)]], np.int64)
    cache = session.new_cache()
    base = _rss_mb()
    times = []
    for i in range(runs + 1):
        t = time.perf_counter()
        session.run_prefill(ids[0].tolist(), 0, cache)
        if i:  # the first call is a warm-up
            times.append((time.perf_counter() - t) * 1e3)
    return _result(times, session._device, base)


def _result(times: list[float], device, base_rss: float) -> dict:
    """Median time; IREE's allocator peak (inputs, outputs, transients) and the process's peak RSS."""
    stats = device.allocator.statistics
    return {"ms": statistics.median(times), "times": times, "iree_peak_mb": stats["device_bytes_peak"] / 2**20,
            "peak_mb": _peak_mb(), "growth_mb": _peak_mb() - base_rss}


def _measure_attention(vmfb: str, length: int, runs: int, shape: Shape = WIDE) -> dict:
    import iree.runtime as rt
    import numpy as np

    module = rt.load_vm_flatbuffer_file(vmfb, driver="local-task")
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, shape.heads, length, shape.head_dim), dtype=np.float32)
    k = rng.standard_normal((1, shape.kv_heads, length, shape.head_dim), dtype=np.float32)
    v = rng.standard_normal((1, shape.kv_heads, length, shape.head_dim), dtype=np.float32)
    pos = np.arange(length, dtype=np.int64)[None]
    base = _rss_mb()
    times = []
    for i in range(runs + 1):
        t = time.perf_counter()
        module.attention(q, k, v, pos).to_host()
        if i:
            times.append((time.perf_counter() - t) * 1e3)
    return _result(times, rt.get_device("local-task"), base)


def _measure_decode(bundle: str, context: int, tokens: int) -> dict:
    """A conversation reaching `context`: a prompt of context - `tokens` tokens, then `tokens`
    greedy decode steps timed one by one. The peak RSS is reset after the prefill
    (/proc/self/clear_refs), so `peak_mb` is the decode's own peak."""
    import numpy as np

    from iree_glm.planner.fit_memory import kv_cache_bytes
    from iree_glm.runtime import Session

    session = Session.load(bundle, verify=False)
    ids = [(i * 7919) % session.config.vocab_size for i in range(1, context - tokens + 1)]
    cache = session.new_cache()
    t = time.perf_counter()
    logits = session.run_prefill(ids, 0, cache)
    prefill_ms, prefill_peak = (time.perf_counter() - t) * 1e3, _peak_mb()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    base = _rss_mb()
    times = []
    for i in range(tokens):
        t = time.perf_counter()
        logits = session.decode([int(np.argmax(logits))], [len(ids) + i], cache)[0]
        times.append((time.perf_counter() - t) * 1e3)
    out = _result(times[1:], session._device, base)  # the first step is a warm-up
    out.update(kv_mb=kv_cache_bytes(session.config, session.cache_slots) / 2**20, prefill_ms=prefill_ms,
               prefill_peak_mb=prefill_peak, slots=session.cache_slots)
    return out


ATTENTION = "attention kernel"  # our kernel's dispatches, under one name (each bundle's function has its own hash)


def _profile(bundle: Path, length: int, runs: int) -> dict[str, tuple[float, int]]:
    """A prefill of `length` tokens as the runtime chunks it, per dispatch: {name: (ms, calls per
    chunk)} (tools/bench.py's breakdown; iree-benchmark-module runs in its own process)."""
    rows, _, _ = bench.dispatch_breakdown(bundle, length, 2, runs, 10**6)
    out: dict[str, tuple[float, int]] = {}
    for row in rows:
        name = ATTENTION if row["dispatch"].startswith("iree_glm_attention_") else row["dispatch"]
        ms, calls = out.get(name, (0.0, 0))
        out[name] = (ms + row["ms"], calls + row["per_call"])
    return out


def _profile_compare(bundles: dict[str, Path], length: int, runs: int, rounds: int) -> dict[str, dict[str, tuple[float, int]]]:
    """`_profile` of each bundle, alternated over `rounds`; each dispatch's median over them."""
    got: dict[str, list[dict]] = {name: [] for name in bundles}
    for _ in range(rounds):
        for name, path in bundles.items():
            got[name].append(_profile(path, length, runs))
    return {name: {k: (statistics.median(r.get(k, (0.0, 0))[0] for r in rs), rs[0].get(k, (0.0, 0))[1])
                   for k in set().union(*rs)} for name, rs in got.items()}


def _split(profile: dict[str, tuple[float, int]]) -> tuple[float, float]:
    """(attention ms, every other dispatch's ms)."""
    att = profile.get(ATTENTION, (0.0, 0))[0]
    return att, sum(ms for name, (ms, _) in profile.items() if name != ATTENTION)


def _child(kind: str, path: Path, length: int, runs: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, str(path), str(length), str(runs)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _compare(kind: str, paths: dict[str, Path], length: int, runs: int, rounds: int) -> dict[str, dict]:
    """Alternate the engines' processes (dense, sparse, dense, ...) so that a change in machine
    load hits both; the median is over every run of every round, peaks are the maxima."""
    results: dict[str, list[dict]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, path in paths.items():
            results[name].append(_child(kind, path, length, runs))
    merged = {}
    for name, rs in results.items():
        merged[name] = {**rs[0], "ms": statistics.median([t for r in rs for t in r["times"]]),
                        "peak_mb": max(r["peak_mb"] for r in rs), "iree_peak_mb": max(r["iree_peak_mb"] for r in rs)}
        if "prefill_ms" in rs[0]:  # decode runs
            merged[name].update(prefill_ms=statistics.median(r["prefill_ms"] for r in rs),
                                prefill_peak_mb=max(r["prefill_peak_mb"] for r in rs))
    return merged


def fidelity(lengths: list[int], pattern: str) -> None:
    """Logits of the default model with the sparse pattern vs dense attention (torch eager; the
    compiled kernel matches eager to fp32 rounding, see tests/passes/test_sparse_attention.py), on the
    shipped held-out text."""
    import torch

    from iree_glm.frontend import default_model
    from iree_glm.bundle.sparse_pattern import parse_pattern
    from iree_glm.frontend import sparse_attention as sa
    from iree_glm.frontend.checkpoint import load_model, open_checkpoint
    from iree_glm.bundle.tokenizer import TextTokenizer

    ckpt = open_checkpoint(default_model.FILES)
    model = load_model(ckpt)
    ids = TextTokenizer(default_model.FILES / "tokenizer.json").encode(default_model.HELDOUT_TEXT.read_text())
    print(f"\nfidelity: {default_model.DESCRIPTION}; held-out text; sparse = {pattern}\n")
    print("| tokens | max abs logit error | mean abs logit error | top-1 agreement | agreement beyond the window | perplexity dense / sparse |")
    print("|---|---|---|---|---|---|")
    pat = parse_pattern(pattern)
    for n in lengths:
        if len(ids) < n + 1:
            ids = ids * (n // len(ids) + 2)  # repeat the text to reach long contexts
        tokens = torch.tensor([ids[:n]])
        target = torch.tensor(ids[1 : n + 1])
        out = {}
        for name, p in (("dense", None), ("sparse", pat)):
            sa.enable(model, p)
            k, v = model.empty_cache(1, n)
            with torch.no_grad():
                out[name] = model.all_logits(tokens, torch.zeros(1, dtype=torch.int64), k, v)[0][0]
        d, s = out["dense"], out["sparse"]
        err = (d - s).abs()
        agree = d.argmax(-1) == s.argmax(-1)
        far = agree[pat.local + pat.global_ :]
        ppl = [torch.exp(torch.nn.functional.cross_entropy(x, target)).item() for x in (d, s)]
        print(f"| {n} | {err.max():.3g} | {err.mean():.3g} | {agree.float().mean():.4f} | {far.float().mean():.4f} | {ppl[0]:.1f} / {ppl[1]:.1f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", default="2048,4096")
    p.add_argument("--pattern", default="local=256,global=16,block=64")
    p.add_argument("--runs", type=int, default=3, help="timed runs per process (after a warm-up)")
    p.add_argument("--rounds", type=int, default=2, help="processes per engine, alternated")
    p.add_argument("--work", type=Path, default=Path("bench-work") / "sparse")
    p.add_argument("--skip", default="", help="comma list of parts to skip: model, prefill, model-decode, before (the sparse "
                   "bundle without our attention kernel), attention, shares (both prefills per dispatch: attention vs the rest), decode")
    p.add_argument("--attention-sets", default="", help="comma list of kernel sets' short names (avx2,avx512): attention alone "
                   "through each set's form, side by side (default: the host's set only)")
    p.add_argument("--decode", action="store_true", help="only the decode part: sliding-window vs position-indexed KV cache")
    p.add_argument("--decode-contexts", default="1024,4096,16384")
    p.add_argument("--ring", default="ring", help="the sliding-window option: ring (W + B slots) or ring=N")
    p.add_argument("--decode-tokens", type=int, default=128, help="decode steps timed per process (the last reach the context)")
    p.add_argument("--fidelity", action="store_true", help="compare logits with dense attention instead of timing")
    p.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.fidelity:
        fidelity([int(n) for n in args.lengths.split(",")], args.pattern)
        return
    if args.worker:
        kind, path, length, runs = args.worker
        fn = {"model": _measure_model, "attention": _measure_attention, "decode": _measure_decode}[kind]
        print(json.dumps(fn(path, int(length), int(runs))))
        return

    from iree_glm.tuning.calibrate import machine_summary

    print(f"machine: {machine_summary()}")
    load_at_start = os.getloadavg()[0]
    if args.decode:
        args.skip += ",model,attention"
    skip = set(args.skip.split(","))  # whole names: "model" is not "model-decode"
    # Builds are cached under a digest of iree_glm's code: a bundle of older code is never reused.
    args.work = args.work / bench.source_hash()
    args.work.mkdir(parents=True, exist_ok=True)
    lengths = [int(n) for n in args.lengths.split(",")]
    rows = []
    prefill: dict[int, dict] = {}  # whole-model prefill results by length
    if "model" not in skip:
        bundles = {name: build_model(args.work, pat) for name, pat in (("dense", None), ("sparse", args.pattern))}
        if "before" not in skip:  # the sparse pattern lowered by IREE (no attention kernel)
            bundles["before"] = build_model(args.work, args.pattern, attention_kernel=False)
        for n in lengths if "prefill" not in skip else []:
            r = _compare("model", bundles, n, args.runs, args.rounds)
            rows.append(("whole-model prefill (default model, cache 4096)", n, r))
            prefill[n] = r
            print(f"model {n}: {r}", file=sys.stderr)
        if "model-decode" not in skip:
            for n in lengths:
                r = _compare("decode", bundles, min(n, CONTEXT - 1), args.decode_tokens, args.rounds)
                rows.append((f"whole-model decode, ms per token ({args.decode_tokens} steps reaching)", n, r))
                print(f"model decode {n}: {r}", file=sys.stderr)
    if "attention" not in skip:
        for n in lengths:
            mods = {name: build_attention(args.work, n, pat) for name, pat in (("dense", None), ("sparse", args.pattern))}
            r = _compare("attention", mods, n, args.runs, args.rounds)
            rows.append((f"attention alone (H={HEADS}, Hkv={KV_HEADS}, D={HEAD_DIM}, cache = S)", n, r))
            print(f"attention {n}: {r}", file=sys.stderr)
    shares = []
    if "shares" not in skip and "model" not in skip:
        for n in lengths:
            shares.append((n, _profile_compare({"dense": bundles["dense"], "sparse": bundles["sparse"]}, n, args.runs, args.rounds)))
            print(f"profile {n}: {shares[-1][1]}", file=sys.stderr)
    set_rows = []
    if args.attention_sets:
        from iree_glm.kernels.toolchain import KERNEL_SETS

        names = {s.short: s.name for s in KERNEL_SETS}
        for n in lengths:
            mods = {(kind, short): build_attention(args.work, n, pat, kernel_set=names[short])
                    for short in args.attention_sets.split(",") for kind, pat in (("dense", None), ("sparse", args.pattern))}
            r = _compare("attention", {f"{k} {s}": path for (k, s), path in mods.items()}, n, args.runs, args.rounds)
            set_rows.append((n, r))
            print(f"attention by set {n}: {r}", file=sys.stderr)

    decode_rows = []
    if "decode" not in skip:
        ring = build_decode_bundle(args.work, args.pattern, None, args.ring)
        for n in [int(c) for c in args.decode_contexts.split(",")]:
            paths = {"dense": build_decode_bundle(args.work, args.pattern, n), "sparse": ring}
            r = _compare("decode", paths, n, args.decode_tokens, args.rounds)
            decode_rows.append((n, r))
            print(f"decode {n}: {r}", file=sys.stderr)

    if rows:
        print(f"\nsparse = {args.pattern}; medians of {args.rounds} x {args.runs} runs; each engine in its own "
              "processes, alternated\n")
        print("| what | tokens | dense ms | sparse ms | speed-up | sparse without our attention kernel ms | speed-up "
              "| IREE peak MB dense / sparse | peak RSS MB dense / sparse |")
        print("|---|---|---|---|---|---|---|---|---|")
    for what, n, r in rows:
        d, s = r["dense"], r["sparse"]
        before = f"{r['before']['ms']:.1f} | {d['ms'] / r['before']['ms']:.2f}x" if "before" in r else "- | -"
        print(f"| {what} | {n} | {d['ms']:.1f} | {s['ms']:.1f} | {d['ms'] / s['ms']:.2f}x | {before} | "
              f"{d['iree_peak_mb']:.0f} / {s['iree_peak_mb']:.0f} | {d['peak_mb']:.0f} / {s['peak_mb']:.0f} |")

    if shares:
        print("\nwhere each prefill's time goes: both bundles' prefills timed per dispatch by IREE's profiler (the "
              "runtime's chunks), medians over the rounds; attention = our kernel's dispatches, rest = every other "
              "dispatch; bound = dense / rest (sparse attention free), predicted = dense / (dense rest + sparse "
              "attention), profiled = dense / sparse summed over dispatches; measured = the whole-prefill ratio above\n")
        print("| tokens | dense ms | attention dense ms (share) | rest dense ms | sparse ms | attention sparse ms | rest sparse ms "
              "| bound | predicted | profiled | measured |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for n, r in shares:
            (att, rest), (att_s, rest_s) = (_split(r["dense"]), _split(r["sparse"]))
            total, total_s = att + rest, att_s + rest_s
            measured = f"{prefill[n]['dense']['ms'] / prefill[n]['sparse']['ms']:.2f}x" if n in prefill else "-"
            print(f"| {n} | {total:.1f} | {att:.1f} ({att / total:.0%}) | {rest:.1f} | {total_s:.1f} | {att_s:.1f} | {rest_s:.1f} "
                  f"| {total / rest:.2f}x | {total / (rest + att_s):.2f}x | {total / total_s:.2f}x | {measured} |")
        print("\nsparse vs dense per dispatch (the largest differences; every dispatch but the attention kernel's has the "
              "same name, count and code in both bundles)\n")
        print("| tokens | dispatch | per call | dense ms | sparse ms | sparse - dense ms |")
        print("|---|---|---|---|---|---|")
        for n, r in shares:
            names = sorted(set(r["dense"]) | set(r["sparse"]),
                           key=lambda k: -abs(r["sparse"].get(k, (0, 0))[0] - r["dense"].get(k, (0, 0))[0]))
            for name in names[:8]:
                (d_ms, calls), s_ms = r["dense"].get(name, (0.0, 0)), r["sparse"].get(name, (0.0, 0))[0]
                print(f"| {n} | {name} | {calls or r['sparse'][name][1]} | {d_ms:.1f} | {s_ms:.1f} | {s_ms - d_ms:+.1f} |")
            rest_diff = _split(r["sparse"])[1] - _split(r["dense"])[1]
            print(f"| {n} | every dispatch but attention | | {_split(r['dense'])[1]:.1f} | {_split(r['sparse'])[1]:.1f} | {rest_diff:+.1f} |")

    if set_rows:
        sets = args.attention_sets.split(",")
        print(f"\nattention alone ({WIDE}, cache = S) through each kernel set's form; speed-up against {sets[0]}\n")
        print("| tokens | " + " | ".join(f"dense {s} ms | sparse {s} ms" for s in sets) + " | " +
              " | ".join(f"{s} dense / sparse speed-up" for s in sets[1:]) + " |")
        print("|---|" + "---|---|" * len(sets) + "---|" * (len(sets) - 1))
        for n, r in set_rows:
            cells = [f"{r[f'{k} {s}']['ms']:.2f}" for s in sets for k in ("dense", "sparse")]
            ups = [f"{r[f'dense {sets[0]}']['ms'] / r[f'dense {s}']['ms']:.2f}x / {r[f'sparse {sets[0]}']['ms'] / r[f'sparse {s}']['ms']:.2f}x"
                   for s in sets[1:]]
            print(f"| {n} | " + " | ".join(cells + ups) + " |")

    if decode_rows:
        print(f"\ndecode: {args.pattern}; KV cache indexed by position (as many slots as the context) vs sliding window "
              f"(globals + ring); a prompt of context - {args.decode_tokens} tokens, then {args.decode_tokens} decode steps; "
              "decode peak RSS measured after the prefill\n")
        print("| context | KV cache MB position / ring | saved | ms/token position / ring | decode peak RSS MB position / ring "
              "| prefill ms position / ring | peak RSS with prefill MB position / ring |")
        print("|---|---|---|---|---|---|---|")
        for n, r in decode_rows:
            d, s = r["dense"], r["sparse"]
            print(f"| {n} | {d['kv_mb']:.1f} / {s['kv_mb']:.2f} | {1 - s['kv_mb'] / d['kv_mb']:.1%} | {d['ms']:.2f} / {s['ms']:.2f} | "
                  f"{d['peak_mb']:.0f} / {s['peak_mb']:.0f} | {d['prefill_ms']:.0f} / {s['prefill_ms']:.0f} | "
                  f"{d['prefill_peak_mb']:.0f} / {s['prefill_peak_mb']:.0f} |")
    print(f"\nmachine load (1 min): {load_at_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
