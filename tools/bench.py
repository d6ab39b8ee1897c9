"""Prefill and decode speed of an iree_glm bundle against torch eager on the same checkpoint.

Each engine runs in its own process (torch's OpenMP threads slow IREE down when they share
one), with the same thread count; every number is the median of several runs.

    python tools/bench.py --config 85m --config 330m        # seeded random GLM-4 checkpoints
    python tools/bench.py --checkpoint path/to/hf_folder

Prints a Markdown table with IREE / torch ratios.
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

# GLM-4 shapes with seeded random weights, named by their parameter count.
CONFIGS = {
    "85m": dict(hidden_size=768, intermediate_size=2048, num_layers=10, num_heads=12, num_kv_heads=4, head_dim=64, vocab_size=16384),
    "330m": dict(hidden_size=1024, intermediate_size=2816, num_layers=24, num_heads=16, num_kv_heads=2, head_dim=64, vocab_size=32768),
}


def make_checkpoint(name: str, folder: Path, layers: int | None = None) -> Path:
    """A seeded random GLM-4 checkpoint of a named size (optionally with fewer layers)."""
    from iree_glm.checkpoint import random_model, write_checkpoint
    from iree_glm.config import ModelConfig

    path = folder / (f"glm4-{name}" if layers is None else f"glm4-{name}-{layers}l")
    if not (path / "model.safetensors").exists():
        shape = dict(CONFIGS[name], **({} if layers is None else {"num_layers": layers}))
        cfg = ModelConfig(family="glm4", attention_bias=True, partial_rotary_factor=0.5, max_position_embeddings=4096, **shape)
        write_checkpoint(random_model(cfg, seed=0), path)
    return path


def source_hash() -> str:
    """A digest of iree_glm's code, so a bundle built by older code is never reused."""
    import hashlib

    import iree_glm

    root = Path(iree_glm.__file__).parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def make_bundle(checkpoint: Path, folder: Path, context: int) -> Path:
    from iree_glm.build import BuildOptions, build_bundle

    out = folder / f"{checkpoint.name}-bundle-{context}-{source_hash()}"
    if not (out / "manifest.json").exists():
        build_bundle(checkpoint, out, BuildOptions(max_context=context))
    return out


# -- the measurements, each run in a child process --------------------------------------------


def _measure_iree(bundle: str, prompt_len: int, decode_tokens: int, runs: int, threads: int) -> dict:
    import iree.runtime as rt

    rt.flags.parse_flags(f"--task_topology_group_count={threads}")
    from iree_glm.runtime import Session

    session = Session.load(bundle, verify=False)
    prompt = [(i * 7919) % session.config.vocab_size for i in range(1, prompt_len + 1)]
    prefill, decode = [], []
    session.generate(prompt, max_new_tokens=4, stop_ids=())  # warm-up
    for _ in range(runs):
        r = session.generate(prompt, max_new_tokens=decode_tokens + 1, stop_ids=())
        prefill.append(r.prefill_ms)
        decode.append(r.decode_tok_s)
    return {"prefill_ms": statistics.median(prefill), "decode_tok_s": statistics.median(decode)}


def _measure_torch(checkpoint: str, prompt_len: int, decode_tokens: int, runs: int, threads: int) -> dict:
    import torch
    import transformers

    torch.set_num_threads(threads)
    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint, torch_dtype=torch.float32).eval()
    vocab = model.config.vocab_size
    ids = torch.tensor([[(i * 7919) % vocab for i in range(1, prompt_len + 1)]])
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


def _child(engine: str, target: str, args) -> dict:
    """Run one engine's measurement in a fresh Python process and return its JSON result."""
    cmd = [sys.executable, __file__, "--child", engine, target, "--prompt-len", str(args.prompt_len),
           "--decode-tokens", str(args.decode_tokens), "--runs", str(args.runs), "--threads", str(args.threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{engine} benchmark failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", choices=sorted(CONFIGS), help="seeded random GLM-4 size")
    p.add_argument("--checkpoint", type=Path, action="append", help="a Hugging Face checkpoint folder")
    p.add_argument("--work", type=Path, default=Path("bench-work"), help="where checkpoints and bundles are kept")
    p.add_argument("--context", type=int, default=256, help="bundle KV capacity")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", nargs=2, metavar=("ENGINE", "TARGET"), help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        engine, target = args.child
        fn = _measure_iree if engine == "iree" else _measure_torch
        print(json.dumps(fn(target, args.prompt_len, args.decode_tokens, args.runs, args.threads)))
        return

    args.work.mkdir(parents=True, exist_ok=True)
    checkpoints = [make_checkpoint(c, args.work) for c in (args.config or [])] + list(args.checkpoint or [])
    if not checkpoints:
        checkpoints = [make_checkpoint("85m", args.work)]
    rows = []
    for ckpt in checkpoints:
        bundle = make_bundle(ckpt, args.work, args.context)
        iree = _child("iree", str(bundle), args)
        torch_ = _child("torch", str(ckpt), args)
        rows.append((ckpt.name, iree, torch_))
    print(f"\nprefill {args.prompt_len} tokens, decode {args.decode_tokens} tokens after it; "
          f"{args.threads} threads; median of {args.runs} runs; fp32\n")
    print("| model | IREE prefill ms | torch prefill ms | prefill torch/IREE | IREE decode tok/s | torch decode tok/s | decode IREE/torch |")
    print("|---|---|---|---|---|---|---|")
    for name, i, t in rows:
        print(f"| {name} | {i['prefill_ms']:.1f} | {t['prefill_ms']:.1f} | {t['prefill_ms'] / i['prefill_ms']:.2f}x "
              f"| {i['decode_tok_s']:.1f} | {t['decode_tok_s']:.1f} | {i['decode_tok_s'] / t['decode_tok_s']:.2f}x |")


if __name__ == "__main__":
    main()
