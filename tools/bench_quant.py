"""Decode and prefill speed of quantized bundles (none / int8 / int4) against torch eager fp32
and llama.cpp on the same weights.

Uses tools/bench.py's seeded random GLM-4 checkpoints and its per-process measurements
(each engine in its own Python process, same thread count, medians of several runs), and
adds one bundle per quantization mode. With llama-cpp-python installed and its source given
(`--llama-src`, see tools/llamacpp.py), the same checkpoint converted to GGUF Q8_0 / Q4_0 by
llama.cpp's own converter is measured too; without it the llama.cpp rows are skipped with a note.

    python tools/bench_quant.py --config 330m --llama-src llama_cpp_python-X.tar.gz
    python tools/bench_quant.py --config 330m --layers 4      # same shapes, fewer layers (quick)

Prints a Markdown table: weight bytes, prefill ms, decode tok/s, and ratios to our fp32 bundle,
to torch eager fp32 and of our int8 / int4 to llama.cpp Q8_0 / Q4_0, with the machine load.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (tools/bench.py: checkpoints and per-process measurements)
import llamacpp  # noqa: E402  (tools/llamacpp.py: GGUF conversion and llama.cpp measurements)

LLAMA_TYPES = {k: v for k, v in bench.LLAMA_TYPES.items() if k != "none"}  # our mode -> llama.cpp's type of that width


def make_bundle(checkpoint: Path, folder: Path, context: int, mode: str, group: int) -> tuple[Path, dict]:
    """`mode` as `bench.parse_quant` reads it (`int8@prefill`: int8 with that --int8-activations)."""
    import json

    from iree_glm.transforms.quantize import QuantSpec

    quant, act = bench.parse_quant(mode)
    out = bench.make_bundle(checkpoint, folder, context, quant=QuantSpec(quant, group), int8_activations=act)
    return out, json.loads((out / "manifest.json").read_text())["options"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="330m", choices=sorted(bench.CONFIGS), help="seeded random GLM-4 size (tools/bench.py)")
    p.add_argument("--layers", type=int, help="override the number of layers (quick runs)")
    p.add_argument("--modes", default="none,int8,int4",
                   help="comma-separated quantization modes; int8@none|prefill|all: int8 with that --int8-activations")
    p.add_argument("--group-size", type=int, default=32, help="int4 group size")
    p.add_argument("--work", type=Path, default=Path("bench-work"), help="where checkpoints and bundles are kept")
    p.add_argument("--context", type=int, default=256, help="bundle KV capacity")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-torch", action="store_true", help="skip the torch eager baseline")
    p.add_argument("--llama-src", default=os.environ.get("LLAMA_CPP_SRC"),
                   help="llama-cpp-python sdist .tar.gz or its vendor/llama.cpp folder (llama.cpp's converter)")
    p.add_argument("--no-llama-cpp", action="store_true", help="skip the llama.cpp rows")
    args = p.parse_args()
    load_before = os.getloadavg()

    args.work.mkdir(parents=True, exist_ok=True)
    ckpt = bench.make_checkpoint(args.config, args.work, args.layers)
    rows = []
    for mode in args.modes.split(","):
        bundle, options = make_bundle(ckpt, args.work, args.context, mode, args.group_size)
        print(f"measuring {bundle.name}", file=sys.stderr)
        rows.append((mode, options, bench._child("iree", str(bundle), args)))
    torch_ = None if args.no_torch else bench._child("torch", str(ckpt), args)
    llama_rows, llama_note = [], None
    if args.no_llama_cpp:
        llama_note = "llama.cpp rows skipped (--no-llama-cpp)"
    elif not llamacpp.available():
        llama_note = "llama.cpp rows skipped: llama-cpp-python is not installed (pip install llama-cpp-python)"
    elif not args.llama_src:
        llama_note = "llama.cpp rows skipped: no --llama-src (llama-cpp-python's sdist, for llama.cpp's converter)"
    else:
        for mode in dict.fromkeys(bench.parse_quant(m)[0] for m in args.modes.split(",")):
            if mode in LLAMA_TYPES:
                gguf = llamacpp.convert(ckpt, LLAMA_TYPES[mode], args.work, args.llama_src)
                print(f"measuring {gguf.name}", file=sys.stderr)
                llama_rows.append((mode, LLAMA_TYPES[mode], llamacpp.measure(gguf, args.prompt_len, args.decode_tokens, args.runs, args.threads)))
    load_after = os.getloadavg()

    fp32 = next((r for m, _, r in rows if m == "none"), None)
    print(f"\n{ckpt.name}: prefill {args.prompt_len} tokens, decode {args.decode_tokens} tokens after it "
          f"(bundle context {args.context}); {args.threads} threads; median of {args.runs} runs; "
          f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after\n")
    print("| engine | weights MiB | of fp32 | prefill ms | decode tok/s | decode vs our fp32 | decode vs torch fp32 |")
    print("|---|---|---|---|---|---|---|")
    for mode, o, r in rows:
        vs_ours = f"{r['decode_tok_s'] / fp32['decode_tok_s']:.2f}x" if fp32 else "-"
        vs_torch = f"{r['decode_tok_s'] / torch_['decode_tok_s']:.2f}x" if torch_ else "-"
        name = bench.quant_label(mode, args.group_size)
        print(f"| {name} | {o['parameter_bytes'] / 2**20:.0f} | {o['compression_vs_fp32']:.3f} | {r['prefill_ms']:.1f} "
              f"| {r['decode_tok_s']:.1f} | {vs_ours} | {vs_torch} |")
    if torch_:
        vs_ours = f"{torch_['decode_tok_s'] / fp32['decode_tok_s']:.2f}x" if fp32 else "-"
        print(f"| torch eager fp32 | - | - | {torch_['prefill_ms']:.1f} | {torch_['decode_tok_s']:.1f} | {vs_ours} | 1.00x |")
    for mode, kind, r in llama_rows:
        vs_ours = f"{r['decode_tok_s'] / fp32['decode_tok_s']:.2f}x" if fp32 else "-"
        vs_torch = f"{r['decode_tok_s'] / torch_['decode_tok_s']:.2f}x" if torch_ else "-"
        print(f"| llama.cpp {kind.upper()} | {r['gguf_mib']:.0f} | - | {r['prefill_ms']:.1f} | {r['decode_tok_s']:.1f} | {vs_ours} | {vs_torch} |")
    if llama_note:
        print(f"\n{llama_note}")
    for mode, _, o in rows:
        for base, kind, r in llama_rows:
            if bench.parse_quant(mode)[0] == base:
                print(f"\n{bench.quant_label(mode, args.group_size)} vs llama.cpp {kind.upper()}: decode {o['decode_tok_s'] / r['decode_tok_s']:.2f}x, "
                      f"prefill {r['prefill_ms'] / o['prefill_ms']:.2f}x (above 1: IREE faster)")


if __name__ == "__main__":
    main()
