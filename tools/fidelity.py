"""What each accuracy-for-speed option costs: perplexity, top-1 agreement, size and speed.

Every row is one build option applied to a model (default: the shipped default model),
compiled into a bundle and measured through the IREE runtime, each bundle in its own process:
  - perplexity on held-out text (stdlib modules the default model never saw), teacher-forced
    through the bundle's `decode` entry point, one token at a time, in windows of --window;
  - top-1 agreement: how often the row's most likely next token equals the fp32 torch
    reference's, on the same positions, and the max and mean |logit - reference logit|;
  - rows whose option changes only multi-token calls (int8 with integer prefill matmuls) are
    teacher-forced through the `prefill` entry point instead, one token per call, so every
    position goes through the path a prompt takes;
  - weight bytes (the parameter archive), median prefill time of a --window token prompt and
    median decode tokens/s.
Rows whose option is not in this build of iree_glm are listed as skipped, not faked.

    python tools/fidelity.py                          # all rows available in this build
    python tools/fidelity.py --rows fp32,prune-h50    # a selection
    python tools/fidelity.py --checkpoint path/to/hf_folder --text held_out.txt

A checkpoint without tokenizer.json (tools/bench.py's seeded random ones) is fed a fixed
pseudo-random token stream instead of text: its perplexity means nothing, the agreement and
logit errors still do.

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


@dataclasses.dataclass
class Row:
    name: str
    describe: str
    options: Callable[[], dict[str, Any]]  # BuildOptions fields; raises ImportError if absent
    entry: str = "decode"  # the entry point positions are teacher-forced through (see the module doc)


def _prune(heads: float, ffn: float) -> Callable[[], dict[str, Any]]:
    def options():
        from iree_glm.transforms.prune import PruneSpec

        return {"prune": PruneSpec(heads, ffn)}
    return options


def _quant(mode: str, group: int = 32, embeddings: str = "int8") -> Callable[[], dict[str, Any]]:
    def options():
        from iree_glm.transforms.quantize import QuantSpec

        return {"quant": QuantSpec(mode=mode, group_size=group, embeddings=embeddings)}
    return options


def _sparse(pattern: str) -> Callable[[], dict[str, Any]]:
    def options():
        from iree_glm.bundle.sparse_pattern import parse_pattern

        return {"sparse_attention": parse_pattern(pattern)}
    return options


ROWS = [
    Row("fp32", "fp32 reference build", lambda: {}),
    Row("int8", "int8 weights, per channel (weight-only matmuls; on x86-64 AVX2 decode's kernel quantizes x per block of 32)",
        lambda: {**_quant("int8")(), "int8_activations": "none"}),
    Row("int8-emb-fp32", "int8 weights (weight-only matmuls), fp32 embeddings (--quant-embeddings none)",
        lambda: {**_quant("int8", embeddings="none")(), "int8_activations": "none"}),
    Row("int8-act", "int8 weights + int8 activations per row (prefill's i8 x i8 matmuls)",
        lambda: {**_quant("int8")(), "int8_activations": "prefill"}, entry="prefill"),
    Row("bf16-compute", "fp32 weights, matmul inputs rounded to bf16 (--compute-dtype bf16; AVX-512 BF16 CPUs only)",
        lambda: {"compute_dtype": "bf16"}),
    Row("int4-g32", "int4 weights, group 32", _quant("int4", 32)),
    Row("int4-g64", "int4 weights, group 64", _quant("int4", 64)),
    Row("int4-g128", "int4 weights, group 128", _quant("int4", 128)),
    Row("sparse", "block-sparse attention local=64,global=16,block=32", _sparse("local=64,global=16,block=32")),
    Row("prune-f25", "--prune ffn=0.25", _prune(0.0, 0.25)),
    Row("prune-f50", "--prune ffn=0.5", _prune(0.0, 0.5)),
    Row("prune-h50", "--prune heads=0.5", _prune(0.5, 0.0)),
    Row("prune-h50-f50", "--prune heads=0.5,ffn=0.5", _prune(0.5, 0.5)),
    Row("int8+prune-f50", "int8 + --prune ffn=0.5", lambda: {**_quant("int8")(), **_prune(0.0, 0.5)()}),
    Row("int4-g32+prune-f50", "int4 g32 + --prune ffn=0.5", lambda: {**_quant("int4", 32)(), **_prune(0.0, 0.5)()}),
]


def row_options(row: Row) -> dict[str, Any] | None:
    """The row's BuildOptions fields, or None when this build has no such option."""
    from iree_glm.compiler.build import BuildOptions

    try:
        opts = row.options()
    except (ImportError, AttributeError, TypeError):
        return None
    fields = {f.name for f in dataclasses.fields(BuildOptions)}
    return opts if set(opts) <= fields else None


# -- reference (torch, fp32) ---------------------------------------------------------------------


def held_out_windows(tokenizer_json: Path, text: Path, window: int, tokens: int) -> np.ndarray:
    """Token windows of the held-out text, or of a fixed pseudo-random stream without a tokenizer."""
    if not tokenizer_json.exists():
        vocab = json.loads((tokenizer_json.parent / "config.json").read_text())["vocab_size"]
        ids = np.random.default_rng(0).integers(0, vocab, max(tokens, window)).tolist()
        return np.asarray(ids[: max(1, tokens // window) * window], np.int64).reshape(-1, window)
    from iree_glm.bundle.tokenizer import TextTokenizer

    ids = TextTokenizer(tokenizer_json).encode(text.read_text(encoding="utf-8"))
    n = min(len(ids) // window, max(1, tokens // window))
    return np.asarray(ids[: n * window], np.int64).reshape(n, window)


def reference(checkpoint: Path, windows: np.ndarray) -> dict[str, Any]:
    """fp32 torch logits on every window: top-1 ids and perplexity."""
    import torch

    from iree_glm.frontend.checkpoint import load_model, open_checkpoint

    torch.set_num_threads(1)
    model = load_model(open_checkpoint(checkpoint))
    top1, nll, logits_all = [], [], []
    with torch.no_grad():
        for w in windows:
            x = torch.from_numpy(w)[None]
            k, v = model.empty_cache(1, x.shape[1])
            logits = model.all_logits(x, torch.zeros(1, dtype=torch.long), k, v)[0][0]
            logp = torch.log_softmax(logits[:-1].double(), -1)
            nll.append(-logp.gather(1, x[0, 1:, None]).mean().item())
            top1.append(logits[:-1].argmax(-1).numpy())
            logits_all.append(logits[:-1].numpy())
    return {"top1": np.stack(top1), "logits": np.stack(logits_all), "perplexity": math.exp(float(np.mean(nll)))}


# -- one bundle, measured in a child process (no torch loaded) -------------------------------


def measure_bundle(bundle: Path, data: Path, repeats: int, entry: str = "decode") -> dict[str, Any]:
    from iree_glm.runtime import Session

    d = np.load(data)
    windows, ref_top1, ref_logits = d["windows"], d["top1"], d["logits"]
    s = Session.load(bundle)
    nll, agree, count, err_max, err_sum = 0.0, 0, 0, 0.0, 0.0
    for w, ref, ref_rows in zip(windows, ref_top1, ref_logits):
        cache = s.new_cache()
        for t in range(len(w) - 1):
            if entry == "prefill":  # a one-token prompt extending the cache: the prompt's code path
                row = s.run_prefill([int(w[t])], t, cache).astype(np.float64)
            else:
                row = s.decode([int(w[t])], [t], cache)[0].astype(np.float64)
            m = row.max()
            nll += m + math.log(np.exp(row - m).sum()) - row[w[t + 1]]
            agree += int(row.argmax() == ref[t])
            diff = np.abs(row - ref_rows[t])
            err_max, err_sum = max(err_max, float(diff.max())), err_sum + float(diff.mean())
            count += 1
    prompt = [int(i) for i in windows[0]]
    prefill_ms, tok_s = [], []
    for _ in range(repeats):
        r = s.generate(prompt, max_new_tokens=32, stop_ids=())
        prefill_ms.append(r.prefill_ms)
        tok_s.append(r.decode_tok_s)
    return {
        "perplexity": math.exp(nll / count),
        "top1_agreement": agree / count,
        "logit_err_max": err_max,
        "logit_err_mean": err_sum / count,
        "positions": count,
        "weight_bytes": (bundle / s.manifest.parameters).stat().st_size,
        "prefill_ms": statistics.median(prefill_ms),
        "decode_tok_s": statistics.median(tok_s),
    }


def measure_in_child(bundle: Path, data: Path, repeats: int, entry: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", str(bundle), "--data", str(data), "--repeats", str(repeats), "--entry", entry],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the table -------------------------------------------------------------------------------


def table(results: list[tuple[Row, dict[str, Any]]], ref_ppl: float) -> str:
    base = results[0][1]
    lines = [
        f"torch fp32 reference perplexity: {ref_ppl:.3f}",
        "",
        "| option | weights MB | size ratio | perplexity | ppl vs fp32 | top-1 agree | max / mean logit err | prefill ms | decode tok/s | decode speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row, r in results:
        lines.append(
            f"| {row.describe} | {r['weight_bytes'] / 1e6:.2f} | {base['weight_bytes'] / r['weight_bytes']:.2f}x "
            f"| {r['perplexity']:.3f} | {100 * (r['perplexity'] / base['perplexity'] - 1):+.2f}% "
            f"| {100 * r['top1_agreement']:.2f}% | {r['logit_err_max']:.4f} / {r['logit_err_mean']:.5f} "
            f"| {r['prefill_ms']:.1f} | {r['decode_tok_s']:.0f} "
            f"| {r['decode_tok_s'] / base['decode_tok_s']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, help="Hugging Face checkpoint folder (default: the shipped default model)")
    p.add_argument("--text", type=Path, help="held-out text (default: the default model's held-out Python docs)")
    p.add_argument("--rows", help=f"comma-separated rows (default: all available; known: {', '.join(r.name for r in ROWS)})")
    p.add_argument("--window", type=int, default=128, help="tokens per evaluation window (default 128)")
    p.add_argument("--tokens", type=int, default=2048, help="held-out tokens to evaluate (default 2048)")
    p.add_argument("--repeats", type=int, default=5, help="timing repeats, median reported (default 5)")
    p.add_argument("--keep", type=Path, help="keep the compiled bundles in this folder and reuse them on the next run (empty it when the model or the rows change)")
    p.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # child-process mode
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--entry", default="decode", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.measure:
        print(json.dumps(measure_bundle(args.measure, args.data, args.repeats, args.entry)))
        return 0

    from iree_glm.frontend import default_model
    from iree_glm.compiler.build import BuildOptions, build_bundle

    checkpoint = args.checkpoint or default_model.FILES
    text = args.text or default_model.HELDOUT_TEXT
    wanted = args.rows.split(",") if args.rows else [r.name for r in ROWS]
    unknown = set(wanted) - {r.name for r in ROWS}
    if unknown:
        p.error(f"--rows: unknown row(s) {', '.join(sorted(unknown))}")
    rows = [r for r in ROWS if r.name in wanted]
    if rows[0].name != "fp32":
        rows.insert(0, ROWS[0])  # ratios are relative to fp32

    windows = held_out_windows(checkpoint / "tokenizer.json", text, args.window, args.tokens)
    ref = reference(checkpoint, windows)
    results, skipped = [], []
    with tempfile.TemporaryDirectory(prefix="fidelity-") as tmp:
        folder = args.keep or Path(tmp)
        data = Path(tmp) / "reference.npz"
        np.savez(data, windows=windows, top1=ref["top1"], logits=ref["logits"])
        for row in rows:
            opts = row_options(row)
            if opts is None:
                skipped.append(row.name)
                continue
            bundle = folder / row.name
            t = time.perf_counter()
            if not (args.keep and (bundle / "manifest.json").exists()):
                build_bundle(checkpoint, bundle, BuildOptions(max_context=2 * args.window, **opts))
            compile_s = time.perf_counter() - t
            r = measure_in_child(bundle, data, args.repeats, row.entry)
            print(f"{row.name}: compiled in {compile_s:.0f}s, perplexity {r['perplexity']:.3f}", file=sys.stderr)
            results.append((row, r))
    print(f"{len(windows)} held-out windows of {args.window} tokens; bundles with context {2 * args.window}")
    print(table(results, ref["perplexity"]))
    if skipped:
        print(f"\nskipped (option not in this build): {', '.join(skipped)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
