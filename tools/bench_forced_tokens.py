"""What checking a grammar's forced tokens in one call buys: constrained greedy decoding with
and without it, side by side.

    python tools/bench_forced_tokens.py --config 330m --quant int4 --rounds 5
    python tools/bench_forced_tokens.py --bundle BUNDLE --rounds 5     # e.g. the shipped model's int4 bundle

Three requests an agent makes, each in our server's JSON style (compact separators, no free
whitespace): a tool call (a function's name and typed arguments), a list of records, and a
reply whose only field is free text (almost nothing forced: what checking costs where it
cannot help). Rounds alternate child processes (one per setting, each loading the bundle
anew: `Session.load(..., forced_tokens=True|False)`), each timing every request greedily
after a warm-up (the median of `--reps` generations); the report gives per request the median
decode tok/s of both settings, the median of the per-round ratios, tokens per target call, the
share of tokens kept as checked forced tokens (a forced token in a call's last row comes as the
target's own), and whether both settings gave the same tokens. The 330M random-weight GLM-4 of tools/bench.py
gets the byte-level BPE tokenizer of tools/bench_constrained.py (trained on the standard
library's source, 32768 entries), so forced text is tokenized as a real vocabulary would; what
its random weights choose in the free parts is noise, what the grammar forces is not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402  (tools/bench.py: configs, checkpoints, cached bundles)
import bench_constrained  # noqa: E402  (its trained tokenizer)

STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}  # the server's JSON_STYLE
REQUESTS = {
    "tool call": ("The user asked: what is the weather in Paris tomorrow? Call a tool.\n", {
        "type": "object", "properties": {
            "name": {"const": "get_weather_forecast"},
            "arguments": {"type": "object", "properties": {
                "city": {"type": "string", "maxLength": 24}, "days_ahead": {"type": "integer", "minimum": 0, "maximum": 14},
                "unit": {"enum": ["celsius", "fahrenheit"]}, "include_hourly": {"type": "boolean"}},
                "required": ["city", "days_ahead", "unit", "include_hourly"], "additionalProperties": False}},
        "required": ["name", "arguments"], "additionalProperties": False}),
    "records": ("List the open tickets as JSON.\n", {
        "type": "array", "minItems": 3, "maxItems": 3, "items": {"type": "object", "properties": {
            "ticket_id": {"type": "integer", "minimum": 0, "maximum": 99999}, "priority": {"enum": ["low", "medium", "high"]},
            "assignee": {"type": ["string", "null"], "maxLength": 12}},
            "required": ["ticket_id", "priority", "assignee"], "additionalProperties": False}}),
    "free text": ("Summarize the screen.\n", {
        "type": "object", "properties": {"summary": {"type": "string", "maxLength": 400}},
        "required": ["summary"], "additionalProperties": False}),
}


def prepare(config: str, quant: str, folder: Path, context: int) -> Path:
    from iree_glm.transforms.quantize import QuantSpec

    checkpoint = bench.make_checkpoint(config, folder)
    target = checkpoint / "tokenizer.json"
    if not target.exists():
        vocab = bench.CONFIGS[config]["vocab_size"]
        target.write_text(bench_constrained.train_tokenizer(vocab, folder / f"bpe-{vocab}.json").read_text())
    return bench.make_bundle(checkpoint, folder, context, quant=QuantSpec(quant, group_size=32))


def child(bundle: str, forced: bool, tokens: int, reps: int) -> dict:
    from iree_glm.runtime import Session
    from iree_glm.runtime.constrained import Grammar

    session = Session.load(bundle, verify=False, forced_tokens=forced)
    out = {"exact_rows": session.exact_verify_rows}
    for name, (prompt, schema) in REQUESTS.items():
        grammar = Grammar.json_schema({**schema, "x-guidance": STYLE})
        session.generate(prompt, 8, grammar=grammar)  # warm-up: the grammar's first use, the calls' first shapes
        results = [session.generate(prompt, tokens, grammar=grammar) for _ in range(reps)]
        r = results[0]
        n = len(r.generated_ids)
        out[name] = {"tok_s": statistics.median(x.decode_tok_s for x in results), "ids": r.generated_ids, "stop": r.stop_reason,
                     "calls": r.target_calls if r.target_calls is not None else n - 1, "forced": r.forced_tokens or 0}
    return out


def run_child(bundle: Path, forced: bool, tokens: int, reps: int) -> dict:
    cmd = [sys.executable, __file__, "--child", "--bundle", str(bundle), "--tokens", str(tokens), "--reps", str(reps)]
    cmd += ["--forced"] if forced else []
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="330m", choices=sorted(bench.CONFIGS))
    p.add_argument("--quant", default="int4", choices=["int8", "int4"], help="forced tokens are checked where verify rows are exact: int8 / int4")
    p.add_argument("--bundle", type=Path, help="a bundle with a tokenizer (default: build the config's)")
    p.add_argument("--folder", type=Path, default=Path("/tmp/iree_glm_bench"))
    p.add_argument("--tokens", type=int, default=96, help="at most this many new tokens per request")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reps", type=int, default=3, help="generations of each request per process (their median)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--forced", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(str(args.bundle), args.forced, args.tokens, args.reps)))
        return
    args.folder.mkdir(parents=True, exist_ok=True)
    bundle = args.bundle or prepare(args.config, args.quant, args.folder, context=256 + args.tokens)
    runs: dict[bool, list[dict]] = {False: [], True: []}
    for i in range(args.rounds):  # alternate which setting goes first: a drift of the shared CPU hits both
        for forced in ((False, True) if i % 2 == 0 else (True, False)):
            runs[forced].append(run_child(bundle, forced, args.tokens, args.reps))
    rows = runs[True][0]["exact_rows"]
    print(f"# {bench.cpu_with_flags()}; {bundle.name}; verify rows exact: {rows} (forced tokens per call <= {max(rows - 1, 0)}); "
          f"greedy, <= {args.tokens} tokens; {args.rounds} rounds of alternating processes, median of {args.reps} "
          f"generations in each; {bench._load()}\n")
    print("| request | tokens | kept as forced tokens | tokens / call | decode tok/s, one step each | checked with the step before "
          "| ratio (median of rounds) | same tokens |")
    print("|---|---|---|---|---|---|---|---|")
    for name in REQUESTS:
        off, on = [r[name] for r in runs[False]], [r[name] for r in runs[True]]
        n = len(on[0]["ids"])
        same = all(r["ids"] == off[0]["ids"] for r in off + on)
        ratio = statistics.median(b["tok_s"] / a["tok_s"] for a, b in zip(off, on))
        print(f"| {name} | {n} | {on[0]['forced'] / n:.0%} | {(n - 1) / max(on[0]['calls'], 1):.2f} "
              f"| {statistics.median(r['tok_s'] for r in off):.1f} | {statistics.median(r['tok_s'] for r in on):.1f} "
              f"| {ratio:.2f}x | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
