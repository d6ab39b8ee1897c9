"""Prefill and decode speed of an iree_glm bundle against torch eager (fp32 and bf16) and
llama.cpp (F32 GGUF, where llama-cpp-python and tools/llamacpp.py are usable) on one checkpoint.

Each engine runs in its own process (torch's OpenMP threads slow IREE down when they share
one), with the same thread count; every number is the median of several runs. With
`--breakdown`, our prefill is also timed per dispatch by IREE's own tools
(`iree-benchmark-module --device_profiling_mode=host-execution`, then `iree-profile`), so the
slowest dispatches are visible.

    python tools/bench.py --config 330m --prompt-lens 128,512,2048 --breakdown 512
    python tools/bench.py --checkpoint path/to/hf_folder
    python tools/bench.py --config 330m --quant none,int8@none,int8@prefill   # quantized bundles, llama.cpp Q8_0
    python tools/bench.py --config 330m --quant none,none@bf16 --engines iree,torch-bf16   # fp32 weights, matmuls in bf16 (AVX-512 BF16)
    python tools/bench.py --config 330m --quant int4 --engines iree --bundle "main int4=../main/bench-work/BUNDLE"   # before / after
    python tools/bench.py ... --bundle "main int4=..." --rounds 8 --runs 3   # a noisy machine: alternate the bundles, 8 rounds

Prints Markdown tables with ratios measured side by side in this run, and the machine load.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# GLM-4 shapes with seeded random weights, named by their parameter count.
CONFIGS = {
    "85m": dict(hidden_size=768, intermediate_size=2048, num_layers=10, num_heads=12, num_kv_heads=4, head_dim=64, vocab_size=16384),
    "330m": dict(hidden_size=1024, intermediate_size=2816, num_layers=24, num_heads=16, num_kv_heads=2, head_dim=64, vocab_size=32768),
}


def make_checkpoint(name: str, folder: Path, layers: int | None = None) -> Path:
    """A seeded random GLM-4 checkpoint of a named size (optionally with fewer layers)."""
    from iree_glm.frontend.checkpoint import random_model, write_checkpoint
    from iree_glm.bundle.model_config import ModelConfig

    path = folder / (f"glm4-{name}" if layers is None else f"glm4-{name}-{layers}l")
    if not (path / "model.safetensors").exists():
        shape = dict(CONFIGS[name], **({} if layers is None else {"num_layers": layers}))
        cfg = ModelConfig(family="glm4", attention_bias=True, partial_rotary_factor=0.5, max_position_embeddings=4096, **shape)
        write_checkpoint(random_model(cfg, seed=0), path)
    return path


def source_hash() -> str:
    """A digest of iree_glm's code (Python, and the C and headers of our kernels), so a bundle
    built by older code is never reused."""
    import hashlib

    import iree_glm

    root = Path(iree_glm.__file__).parent
    files = sorted(f for pattern in ("*.py", "*.c", "*.h") for f in root.rglob(pattern))
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def profile_key(profile: str) -> str:
    """A bundle folder's profile part: the profile's name and a digest of what it says, so a
    profile given by path never becomes nested folders and an edited profile is rebuilt."""
    import hashlib

    from iree_glm.planner.profile import load_profile

    loaded = load_profile(profile)
    return f"{loaded.name}-{hashlib.sha256(repr(dataclasses.replace(loaded, source='')).encode()).hexdigest()[:6]}"


def make_bundle(checkpoint: Path, folder: Path, context: int, profile: str = "host-cpu", quant=None,
                int8_activations: str | None = None, compute_dtype: str | None = None) -> Path:
    """Build (or reuse, keyed by the code hash and options) a bundle of `checkpoint`;
    `quant` is an `iree_glm.quant.QuantSpec` (default: fp32 weights), `int8_activations` and
    `compute_dtype` the compile options of those names (None: the profile's)."""
    from iree_glm.compiler.build import BuildOptions, build_bundle
    from iree_glm.transforms.quantize import QuantSpec

    quant = quant or QuantSpec()
    tag = profile_key(profile) + ("" if quant.mode == "none" else f"-{quant.mode}" + (f"g{quant.group_size}" if quant.mode == "int4" else ""))
    tag += f"-act{int8_activations}" if int8_activations else ""
    tag += f"-compute{compute_dtype}" if compute_dtype else ""
    out = folder / f"{checkpoint.name}-{tag}-bundle-{context}-{source_hash()}"
    if not (out / "manifest.json").exists():
        build_bundle(checkpoint, out, BuildOptions(max_context=context, profile=profile, quant=quant, int8_activations=int8_activations,
                                                       compute_dtype=compute_dtype))
    return out


LLAMA_TYPES = {"none": "f32", "int8": "q8_0", "int4": "q4_0"}  # our weight format -> llama.cpp's of the same width


def parse_quant(text: str) -> tuple[str, str | None]:
    """A benchmark's quantization mode: `none`, `int8`, `int4`, `int8@none|prefill|all` for
    int8 with that `--int8-activations` (plain `int8`: the profile's), or `none@bf16` for fp32
    weights with `--compute-dtype bf16`. Returns (mode, the part after @)."""
    mode, _, act = text.partition("@")
    return mode, act or None


def quant_label(text: str, group_size: int = 32) -> str:
    mode, act = parse_quant(text)
    if mode == "none":
        return "IREE none" + (f" compute {act}" if act else "")
    return f"IREE {mode}" + (f" g{group_size}" if mode == "int4" else "") + (f" act {act}" if act else "")


# -- the measurements, each run in a child process --------------------------------------------


def _prompt(prompt_len: int, vocab: int) -> list[int]:
    return [(i * 7919) % vocab for i in range(1, prompt_len + 1)]


def _measure_iree(bundle: str, prompt_len: int, decode_tokens: int, runs: int, threads: int, chunk: int | None = None) -> dict:
    import iree.runtime as rt

    rt.flags.parse_flags(f"--task_topology_group_count={threads}")
    from iree_glm.runtime import Session

    session = Session.load(bundle, verify=False, prefill_chunk=chunk)
    prompt = _prompt(prompt_len, session.config.vocab_size)
    prefill, decode = [], []
    session.generate(prompt, max_new_tokens=4, stop_ids=())  # warm-up
    for _ in range(runs):
        r = session.generate(prompt, max_new_tokens=decode_tokens + 1, stop_ids=())
        if r.stop_reason != "max_new_tokens":  # e.g. a full context: the decode speed would be of fewer tokens
            raise SystemExit(f"error: {bundle}: generation after {prompt_len} tokens stopped early ({r.stop_reason})")
        prefill.append(r.prefill_ms)
        decode.append(r.decode_tok_s)
    return {"prefill_ms": statistics.median(prefill), "decode_tok_s": statistics.median(decode)}


def _measure_torch(checkpoint: str, prompt_len: int, decode_tokens: int, runs: int, threads: int,
                   dtype: str = "float32") -> dict:
    import torch
    import transformers

    torch.set_num_threads(threads)
    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint, torch_dtype=getattr(torch, dtype)).eval()
    ids = torch.tensor([_prompt(prompt_len, model.config.vocab_size)])
    prefill, decode = [], []

    def once():
        with torch.no_grad():
            t = time.perf_counter()
            out = model(ids, use_cache=True)
            token = out.logits[:, -1:].argmax(-1)
            t_prefill = time.perf_counter() - t
            past = out.past_key_values
            t = time.perf_counter()
            for _ in range(decode_tokens):
                out = model(token, past_key_values=past, use_cache=True)
                past = out.past_key_values
                token = out.logits[:, -1:].argmax(-1)
            return t_prefill * 1e3, decode_tokens / (time.perf_counter() - t)

    once()  # warm-up
    for _ in range(runs):
        p, d = once()
        prefill.append(p)
        decode.append(d)
    return {"prefill_ms": statistics.median(prefill), "decode_tok_s": statistics.median(decode)}


CHILDREN = {
    "iree": _measure_iree,
    "torch": _measure_torch,
    "torch-bf16": lambda *a: _measure_torch(*a, dtype="bfloat16"),
}


def _child(engine: str, target: str, args, prompt_len: int | None = None, extra: tuple[str, ...] = ()) -> dict:
    """Run one engine's measurement in a fresh Python process and return its JSON result."""
    prompt_len = args.prompt_len if prompt_len is None else prompt_len
    cmd = [sys.executable, __file__, "--child", engine, target, "--prompt-len", str(prompt_len), *extra,
           "--decode-tokens", str(args.decode_tokens), "--runs", str(args.runs), "--threads", str(args.threads)]
    # Passive OpenMP waiting, as tools/llamacpp.py does: torch's busy-waiting threads prefilled 15-30x slower on
    # a shared, oversubscribed machine (IREE's workers do not use OpenMP).
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OMP_WAIT_POLICY="passive")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{engine} benchmark failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _llama_cpp():
    """tools/llamacpp.py (convert + measure), or None where it or llama-cpp-python is missing."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        import llamacpp
    except ImportError:
        return None
    return llamacpp if llamacpp.available() else None


# -- per-dispatch breakdown with IREE's own tools -------------------------------------------


def _iree_tool(name: str) -> str:
    """An IREE runtime tool shipped by the iree-base-runtime wheel (or found on PATH)."""
    import shutil

    import iree.runtime

    shipped = Path(iree.runtime.__file__).resolve().parent.parent / "_runtime_libs" / name
    found = str(shipped) if shipped.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"error: {name} not found (it ships with iree-base-runtime)")
    return found


# A library whose constructor asks Linux for the AMX tile state: iree-benchmark-module does not
# (our runtime does, bundle/cpu_features.request_amx), and the permission does not survive exec.
AMX_SHIM = """#include <sys/syscall.h>
#include <unistd.h>
__attribute__((constructor)) static void request_amx(void) { syscall(SYS_arch_prctl, 0x1023, 18); }
"""


def _tool_env(manifest: dict, work: Path) -> dict:
    """The environment for IREE's tools on `manifest`'s bundle: with AMX_SHIM preloaded where its
    kernels use AMX tiles (the first tile instruction without the permission is SIGILL)."""
    from iree_glm.bundle.cpu_features import needs_amx

    options = manifest.get("options", {})
    features = [f for name, o in options.items() if name.endswith("_kernel") and isinstance(o, dict) for f in o.get("features") or []]
    if not needs_amx(features):
        return dict(os.environ)
    (work / "amx_shim.c").write_text(AMX_SHIM)
    subprocess.run(["cc", "-shared", "-fPIC", str(work / "amx_shim.c"), "-o", str(work / "amx_shim.so")], check=True)
    return {**os.environ, "LD_PRELOAD": str(work / "amx_shim.so")}


def _profile_call(bundle: Path, manifest: dict, tokens: int, start: int, keys: int, threads: int, runs: int) -> tuple[dict, float]:
    """One prefill call (`tokens` at positions start.., attending keys 0..keys-1) timed per
    dispatch: {dispatch: (ms per call, dispatches per call)} and the call's median wall time."""
    import re
    import tempfile

    import numpy as np

    cfg, capacity = manifest["model"], manifest["max_context"]
    module = next(m for m in manifest["modules"] if m["partition"] == "all")
    cache = f"--input=1x{cfg['num_kv_heads']}x{capacity}x{cfg['head_dim']}xf32=0"
    with tempfile.TemporaryDirectory(prefix="iree_glm-profile-") as work:
        profile = Path(work) / "prefill.ireeprof"
        key_positions = Path(work) / "key_positions.npy"
        np.save(key_positions, np.arange(keys, dtype=np.int64))
        cmd = [_iree_tool("iree-benchmark-module"), f"--module={bundle / module['file']}",
               f"--parameters={manifest['parameter_scope']}={bundle / manifest['parameters']}",
               "--device=local-task", f"--task_topology_group_count={threads}", "--function=prefill",
               f"--input=1x{tokens}xi64=1", f"--input=1xi64={start}", "--input=1xi64=0", f"--input=@{key_positions}",
               *[cache] * (2 * cfg["num_layers"]),
               f"--benchmark_repetitions={runs}", "--benchmark_min_time=1x",
               "--device_profiling_mode=host-execution", f"--device_profiling_output={profile}"]
        bench = subprocess.run(cmd, capture_output=True, text=True, env=_tool_env(manifest, Path(work)))
        if bench.returncode != 0:
            raise SystemExit(f"iree-benchmark-module failed:\n{bench.stderr[-2000:]}")
        # One repetition prints no aggregates: then the single run's line is the median.
        wall = (re.search(r"real_time_median\s+([\d.]+) (ms|us|s)\b", bench.stdout)
                or re.search(r"/real_time\s+([\d.]+) (ms|us|s)\b", bench.stdout))
        report = subprocess.run([_iree_tool("iree-profile"), "dispatch", "--format=jsonl", str(profile)],
                                capture_output=True, text=True, check=True).stdout
    groups = [json.loads(line) for line in report.splitlines()]
    groups = [g for g in groups if g.get("type") == "host_dispatch_group"]
    calls = min(g["count"] for g in groups)  # calls profiled (warm-up included): every dispatch runs at least once each
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    return ({g["key"].split("$", 1)[-1]: (g["total_ns"] / 1e6 / calls, g["count"] / calls) for g in groups},
            float(wall.group(1)) * scale[wall.group(2)] if wall else float("nan"))


def dispatch_breakdown(bundle: Path, prompt_len: int, threads: int, runs: int, top: int) -> tuple[list[dict], float, int]:
    """Time our prefill of `prompt_len` tokens per dispatch, in the calls the runtime makes (the
    bundle's prefill chunks, each attending the keys written before it): rows sorted by total
    time (ms per prefill), the calls' summed median wall time, and the number of calls."""
    from iree_glm.bundle.kv_layout import attended_keys
    from iree_glm.runtime.session import chunks

    manifest = json.loads((bundle / "manifest.json").read_text())
    pieces = chunks(prompt_len, manifest.get("options", {}).get("prefill_chunk", 0))
    per_dispatch, wall = {}, 0.0
    for first, end in pieces:
        times, call_wall = _profile_call(bundle, manifest, end - first, first, attended_keys(end - 1, manifest["max_context"]),
                                         threads, runs)
        wall += call_wall
        for name, (ms, count) in times.items():
            ms0, count0 = per_dispatch.get(name, (0.0, 0.0))
            per_dispatch[name] = (ms0 + ms, count0 + count)
    total = sum(ms for ms, _ in per_dispatch.values())
    rows = [{"dispatch": name, "ms": ms, "share": ms / total, "per_call": round(count)}
            for name, (ms, count) in sorted(per_dispatch.items(), key=lambda kv: -kv[1][0])[:top]]
    return rows, wall, len(pieces)


# -- the report -------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), for the report."""
    info = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in info.read_text().splitlines() if line.startswith("model name")] if info.exists() else []
    return names[0] if names else "unknown CPU"


# The instruction sets that choose our kernels (x86 /proc/cpuinfo "flags", aarch64 "Features").
KERNEL_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "asimddp", "i8mm")


def cpu_with_flags() -> str:
    """The CPU's model name and which of KERNEL_FLAGS it has, for the report."""
    info = Path("/proc/cpuinfo")
    text = info.read_text() if info.exists() else ""
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith(("flags", "Features"))), [])
    return f"{cpu_model()} ({' '.join(f for f in KERNEL_FLAGS if f in flags) or 'none of ' + ','.join(KERNEL_FLAGS)})"


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min) on {os.cpu_count()} cores"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", choices=sorted(CONFIGS), help="seeded random GLM-4 size")
    p.add_argument("--layers", type=int, help="override the number of layers of --config (quick runs)")
    p.add_argument("--checkpoint", type=Path, action="append", help="a Hugging Face checkpoint folder")
    p.add_argument("--work", type=Path, default=Path("bench-work"), help="where checkpoints and bundles are kept")
    p.add_argument("--prompt-lens", default="128,512,2048", help="comma-separated prompt lengths to prefill")
    p.add_argument("--context", type=int, help="bundle KV capacity (default: longest prompt + decode tokens)")
    p.add_argument("--decode-tokens", type=int, default=32)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--rounds", type=int, default=1,
                   help="measure every engine this many times per prompt length, alternating the bundles' order; "
                        "report the median (a noisy machine: before / after comparisons with --bundle)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--profile", default="host-cpu",
                   help="device profile the bundles are compiled for; comma-separated: one column per profile and "
                        "format (e.g. host-cpu,avx2.toml with kernel_set = \"x86_64_avx2\": kernel sets side by side)")
    p.add_argument("--quant", default="none",
                   help="comma-separated weight formats of our bundles: none, int8, int4, int8@none|prefill|all (int8 with that "
                        "--int8-activations); llama.cpp runs the GGUF type of the same width (F32, Q8_0, Q4_0)")
    p.add_argument("--engines", default="iree,torch,torch-bf16,llama.cpp",
                   help="comma-separated: iree, torch, torch-bf16, llama.cpp (skipped where not installed)")
    p.add_argument("--llama-src", help="llama-cpp-python source for its GGUF converter (see tools/llamacpp.py)")
    p.add_argument("--prefill-chunks", default="",
                   help="also time our prefill with these chunk sizes (comma-separated tokens per call, 0: the whole prompt "
                        "in one call); the plain IREE column uses the profile's policy.prefill_chunk")
    p.add_argument("--bundle", action="append", default=[], metavar="LABEL=PATH",
                   help="also measure this built bundle, a column of its own (e.g. one another checkout's kernels compiled)")
    p.add_argument("--breakdown", type=int, metavar="TOKENS", help="also time our prefill of TOKENS tokens per dispatch")
    p.add_argument("--top", type=int, default=12, help="dispatches shown by --breakdown")
    p.add_argument("--prompt-len", type=int, default=128, help=argparse.SUPPRESS)  # child processes
    p.add_argument("--chunk", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--child", nargs=2, metavar=("ENGINE", "TARGET"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rounds < 1:
        p.error(f"--rounds {args.rounds}: at least 1")

    if args.child:
        engine, target = args.child
        extra = (args.chunk,) if engine == "iree" else ()
        print(json.dumps(CHILDREN[engine](target, args.prompt_len, args.decode_tokens, args.runs, args.threads, *extra)))
        return

    extra_bundles = {}
    for item in args.bundle:
        label, _, path = item.partition("=")
        if not label or not (Path(path) / "manifest.json").exists():
            raise SystemExit(f"error: --bundle {item}: expected LABEL=PATH of a built bundle")
        extra_bundles[label] = Path(path)
    lens = [int(x) for x in args.prompt_lens.split(",") if x.strip()]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    chunk_sizes = [int(x) for x in args.prefill_chunks.split(",") if x.strip()]
    context = args.context or max(lens) + args.decode_tokens
    if context < max(lens) + args.decode_tokens:  # every prompt and decode position must fit the bundle's KV cache
        raise SystemExit(f"error: --context {context} cannot hold a {max(lens)}-token prompt and {args.decode_tokens} decode tokens "
                         f"(needs {max(lens) + args.decode_tokens})")
    args.work.mkdir(parents=True, exist_ok=True)
    checkpoints = [make_checkpoint(c, args.work, args.layers) for c in (args.config or [])] + list(args.checkpoint or [])
    if not checkpoints:
        checkpoints = [make_checkpoint("85m", args.work, args.layers)]
    llama = _llama_cpp() if "llama.cpp" in engines else None
    if "llama.cpp" in engines and llama is None:
        print("llama.cpp: skipped (tools/llamacpp.py or llama-cpp-python not available)", file=sys.stderr)
    if llama is not None:  # before the bundles compile: a missing converter source fails in seconds
        llama.find_source(args.llama_src, args.work)
    loads = [_load()]
    for ckpt in checkpoints:
        columns: dict[str, dict[int, dict]] = {}  # engine label -> prompt length -> result
        bundles = {}
        quants = [q.strip() for q in args.quant.split(",") if q.strip()]
        if "iree" in engines:
            from iree_glm.transforms.quantize import QuantSpec

            profiles = [x.strip() for x in args.profile.split(",") if x.strip()]
            for prof in profiles:
                for q in quants:
                    mode, act = parse_quant(q)
                    label = "IREE" if quants == ["none"] else quant_label(q)
                    label += f" [{Path(prof).stem}]" if len(profiles) > 1 else ""
                    bundles[label] = make_bundle(ckpt, args.work, context, prof, QuantSpec(mode), *((None, act) if mode == "none" else (act,)))
        bundles.update(extra_bundles)
        ggufs = {}
        if llama is not None:
            for kind in dict.fromkeys(LLAMA_TYPES[parse_quant(q)[0]] for q in quants):
                ggufs[kind] = llama.convert(ckpt, kind, args.work, args.llama_src)
        for n in lens:  # engines interleaved per length, so each ratio comes from one stretch of time
            print(f"measuring {ckpt.name} at {n} tokens", file=sys.stderr)
            samples: dict[str, list[dict]] = {}
            for r in range(args.rounds):  # each round runs every engine once, the bundles in alternating order
                for label, bundle in (list(bundles.items()) if r % 2 == 0 else list(bundles.items())[::-1]):
                    samples.setdefault(label, []).append(_child("iree", str(bundle), args, n))
                    for c in chunk_sizes:
                        samples.setdefault(f"{label} chunk {c or 'off'}", []).append(_child("iree", str(bundle), args, n, ("--chunk", str(c))))
                for engine, label in (("torch", "torch fp32"), ("torch-bf16", "torch bf16")):
                    if engine in engines:
                        samples.setdefault(label, []).append(_child(engine, str(ckpt), args, n))
                for kind, gguf in ggufs.items():
                    samples.setdefault(f"llama.cpp {kind.upper()}", []).append(llama.measure(gguf, n, args.decode_tokens, args.runs, args.threads))
            for label, runs in samples.items():  # the median over rounds of each round's median
                columns.setdefault(label, {})[n] = {key: statistics.median(run[key] for run in runs) for key in ("prefill_ms", "decode_tok_s")}
            loads.append(_load())
        _print_table(ckpt.name, columns, lens, context, args)
        if args.breakdown and bundles:
            label, bundle = next(iter(bundles.items()))
            rows, wall, calls = dispatch_breakdown(bundle, args.breakdown, args.threads, args.runs, args.top)
            print(f"\n{label} prefill of {args.breakdown} tokens per dispatch, in {calls} call{'s' * (calls > 1)} as the runtime "
                  f"makes them (iree-benchmark-module --device_profiling_mode=host-execution + iree-profile; "
                  f"calls' median wall times summed: {wall:.1f} ms):\n")
            print("| dispatch | ms per prefill | share | dispatches |")
            print("|---|---|---|---|")
            for r in rows:
                print(f"| `{r['dispatch']}` | {r['ms']:.1f} | {100 * r['share']:.1f}% | {r['per_call']} |")
    print(f"\nmachine load while measuring: {loads[0]} at start, {loads[-1]} at the end")


def _print_table(name: str, columns: dict, lens: list[int], context: int, args) -> None:
    labels = list(columns)
    ours = next((l for l in labels if l.startswith("IREE")), None)
    rounds = f", median of {args.rounds} rounds with the bundles in alternating order" if args.rounds > 1 else ""
    print(f"\n{name}: prefill ms (median of {args.runs}{rounds}), {args.threads} threads, our bundle's context {context}\n")
    print("| tokens | " + " | ".join(labels) + (" | " + " | ".join(f"{l} / {ours}" for l in labels if l != ours) if ours else "") + " |")
    print("|---" * (1 + len(labels) + (len(labels) - 1 if ours else 0)) + "|")
    for n in lens:
        cells = [f"{columns[l][n]['prefill_ms']:.1f}" for l in labels]
        if ours:
            cells += [f"{columns[l][n]['prefill_ms'] / columns[ours][n]['prefill_ms']:.2f}x" for l in labels if l != ours]
        print(f"| {n} | " + " | ".join(cells) + " |")
    print(f"\ndecode tok/s after the prompt ({args.decode_tokens} tokens):\n")
    print("| tokens | " + " | ".join(labels) + " |")
    print("|---" * (1 + len(labels)) + "|")
    for n in lens:
        print(f"| {n} | " + " | ".join(f"{columns[l][n]['decode_tok_s']:.1f}" for l in labels) + " |")


if __name__ == "__main__":
    from iree_glm.errors import UserError

    try:
        main()
    except UserError as e:  # a bad argument: one line, exit 2
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
