"""What constrained decoding costs: a decode step with and without a grammar, side by side.

    python tools/bench_constrained.py --config 330m --tokens 48 --rounds 3
    python tools/bench_constrained.py --config 330m --compare-libraries   # llguidance vs xgrammar vs outlines-core

The 330M random-weight GLM-4 of tools/bench.py gets a byte-level BPE tokenizer of its vocabulary
size (32768), trained on the Python standard library's source (random checkpoints have none),
so the grammar works over a realistic vocabulary. Rounds alternate unconstrained and
constrained generations of the same prompt and length (the CPU is shared: alternating keeps
drifts out of the ratio) and report median ms per decode step, the ratio, and the grammar's own
time per step (computing the mask and applying it), for the one-at-a-time loop and for
concurrent requests in the batching engine (as many as its largest compiled decode batch). The
grammar is a JSON string that cannot end within the run, so every step is constrained and both
sides take the same number of steps.

`--compare-libraries` walks the three libraries over the same tokenizer, schema and token
sequence (a valid JSON document, tokenized): compile time, mask + advance time per token, and
what each installs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import sysconfig
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402  (tools/bench.py: the 330m config, checkpoints and cached bundles)

SCHEMA = {  # a tool call's arguments: what agents constrain most
    "type": "object",
    "properties": {
        "action": {"enum": ["Tap", "Swipe", "Type", "Back", "Home"]},
        "element": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 999}, "minItems": 2, "maxItems": 2},
        "text": {"type": "string"},
    },
    "required": ["action", "element", "text"],
    "additionalProperties": False,
}
JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}  # as json.dumps writes
DOCUMENT = json.dumps({"action": "Type", "element": [512, 88], "text": "open the settings app and turn on the wifi, then go back " * 4})


def train_tokenizer(vocab_size: int, path: Path) -> Path:
    """A byte-level BPE tokenizer.json of `vocab_size` entries trained on the stdlib's source."""
    if path.exists():
        return path
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(str(p) for p in stdlib.glob("*.py"))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train(files, trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def prepare(config: str, folder: Path, context: int) -> Path:
    checkpoint = bench.make_checkpoint(config, folder)
    vocab = bench.CONFIGS[config]["vocab_size"]
    target = checkpoint / "tokenizer.json"
    if not target.exists():
        target.write_text(train_tokenizer(vocab, folder / f"bpe-{vocab}.json").read_text())
    out = folder / f"{checkpoint.name}-b1-4-bundle-{context}-{bench.source_hash()}"
    if not (out / "manifest.json").exists():
        from iree_glm.compiler.build import BuildOptions, build_bundle

        build_bundle(checkpoint, out, BuildOptions(max_context=context, decode_batch_sizes=(1, 4)))
    return out


LONG_TEXT = {  # a JSON object whose string cannot end within the run: every step is constrained, and
    # constrained runs take as many steps as free ones (inside a string nearly every token is allowed:
    # the mask is at its largest)
    "type": "object", "properties": {"text": {"type": "string", "minLength": 2000}}, "required": ["text"],
}


def bench_session(bundle: Path, tokens: int, rounds: int) -> dict:
    from iree_glm.runtime import SamplingParams, Session
    from iree_glm.runtime.constrained import Grammar

    session = Session.load(bundle, verify=False)
    grammar = Grammar.json_schema({**LONG_TEXT, "x-guidance": JSON_STYLE})
    prompt = session.encode("Act on the phone screen. Reply with JSON.\n")
    sampling = SamplingParams(temperature=1.0, seed=0)
    out: dict[str, list[float]] = {"free": [], "constrained": [], "grammar_ms": []}

    def free() -> None:
        r = session.generate(prompt, tokens, sampling, stop_ids=())
        out["free"].append(1e3 / r.decode_tok_s)

    def constrained() -> None:
        gen = session.stream(prompt, tokens, sampling, stop_ids=(), grammar=grammar)
        steps = sum(1 for _ in gen)
        assert steps == tokens, steps
        out["constrained"].append(1e3 / gen.result.decode_tok_s)
        out["grammar_ms"].append(gen._state.constraint.mask_s * 1e3 / steps)  # mask computed + applied, per token

    session.generate(prompt, 4)  # warm-up
    for i in range(rounds):  # alternate the order: a drift of the shared CPU hits both sides
        for run in ((free, constrained) if i % 2 == 0 else (constrained, free)):
            run()

    rows = max(session.decode_batch_sizes)  # the batching engine, as many rows as its largest decode batch
    batch: dict[str, list[float]] = {"free": [], "constrained": []}

    async def engine_run(constrained: bool) -> float:
        engine = session.engine
        steps0 = engine.stats.steps
        gens = [session.stream_async(prompt, tokens, SamplingParams(temperature=1.0, seed=i), stop_ids=(),
                                     grammar=grammar if constrained else None) for i in range(rows)]
        results = await asyncio.gather(*(g.collect() for g in gens))
        assert all(len(r.generated_ids) == tokens for r in results)
        decode_s = max(r.decode_tok_s and (len(r.generated_ids) - 1) / r.decode_tok_s for r in results)
        return decode_s * 1e3 / max(engine.stats.steps - steps0, 1)

    asyncio.run(engine_run(False))
    for i in range(rounds):
        for c in ((False, True) if i % 2 == 0 else (True, False)):
            batch["constrained" if c else "free"].append(asyncio.run(engine_run(c)))
    session.close()
    med = {k: statistics.median(v) for k, v in out.items()}
    bf, bc = statistics.median(batch["free"]), statistics.median(batch["constrained"])
    return {
        "decode_ms_free": round(med["free"], 2), "decode_ms_constrained": round(med["constrained"], 2),
        "ratio": round(med["constrained"] / med["free"], 3), "grammar_ms_per_step": round(med["grammar_ms"], 3),
        "grammar_share_of_free_step": round(med["grammar_ms"] / med["free"], 4),
        "engine_rows": rows, "engine_ms_per_step_free": round(bf, 2), "engine_ms_per_step_constrained": round(bc, 2),
        "engine_ratio": round(bc / bf, 3), "runs": {**out, "engine_free": batch["free"], "engine_constrained": batch["constrained"]},
    }


# -- the three libraries ----------------------------------------------------------------------


def _site_size(*names: str) -> float:
    root = Path(sysconfig.get_paths()["purelib"])
    total = 0
    for name in names:
        for p in root.glob(name):
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
    return round(total / 2**20, 1)


def compare_libraries(tokenizer_json: Path, vocab_size: int) -> dict:
    import numpy as np
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    ids = tok.encode(DOCUMENT, add_special_tokens=False).ids
    eos = tok.token_to_id("<|endoftext|>")
    schema = json.dumps(SCHEMA)
    results = {}

    # llguidance
    import llguidance
    import llguidance.numpy as lnp

    t = time.perf_counter()
    lltok = llguidance.LLTokenizer(str(tokenizer_json), n_vocab=vocab_size, eos_token=eos)
    vocab_s = time.perf_counter() - t
    t = time.perf_counter()
    grammar = llguidance.LLMatcher.grammar_from_json_schema(SCHEMA, overrides=JSON_STYLE)
    m = llguidance.LLMatcher(lltok, grammar, log_level=0)
    mask = lnp.allocate_token_bitmask(1, vocab_size)
    lnp.fill_next_token_bitmask(m, mask)
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    for i in ids:
        lnp.fill_next_token_bitmask(m, mask)
        assert m.consume_token(i), m.get_error()
    per = (time.perf_counter() - t) / len(ids)
    results["llguidance"] = dict(version=_version("llguidance"), vocab_s=vocab_s,
                                 compile_s=compile_s, us_per_token=per * 1e6, install_mb=_site_size("llguidance"),
                                 dependencies="none")

    # xgrammar (needs torch, transformers, triton, apache-tvm-ffi)
    try:
        import torch
        import xgrammar as xgr

        encoded = [b""] * vocab_size
        vocab = tok.get_vocab(with_added_tokens=True)
        for s, i in vocab.items():
            encoded[i] = s
        t = time.perf_counter()
        info = xgr.TokenizerInfo(encoded, vocab_type=xgr.VocabType.BYTE_LEVEL, vocab_size=vocab_size, stop_token_ids=[eos])
        compiler = xgr.GrammarCompiler(info)
        vocab_s = time.perf_counter() - t
        t = time.perf_counter()
        compiled = compiler.compile_json_schema(schema, any_whitespace=False)
        matcher = xgr.GrammarMatcher(compiled)
        bitmask = xgr.allocate_token_bitmask(1, vocab_size)
        matcher.fill_next_token_bitmask(bitmask)
        compile_s = time.perf_counter() - t
        t = time.perf_counter()
        for i in ids:
            matcher.fill_next_token_bitmask(bitmask)
            assert matcher.accept_token(i)
        per = (time.perf_counter() - t) / len(ids)
        results["xgrammar"] = dict(version=_version("xgrammar"), vocab_s=vocab_s, compile_s=compile_s, us_per_token=per * 1e6,
                                   install_mb=_site_size("xgrammar", "tvm_ffi"), dependencies="torch, transformers, triton, apache-tvm-ffi")
        del torch
    except Exception as e:  # noqa: BLE001 - reported, the others still compare
        results["xgrammar"] = dict(error=f"{type(e).__name__}: {e}")

    # outlines-core (regular expressions only: the schema becomes a regex, then a token index)
    try:
        from outlines_core import Guide, Index, Vocabulary
        from outlines_core.json_schema import build_regex_from_schema

        byte_decoder = {c: b for b, c in _bytes_to_unicode().items()}
        by_text: dict[str, list[int]] = {}
        for s, i in tok.get_vocab(with_added_tokens=False).items():
            if i == eos:
                continue
            try:
                text = bytes(byte_decoder[c] for c in s).decode("utf-8")
            except (KeyError, UnicodeDecodeError):
                continue  # outlines-core's Vocabulary takes str tokens: partial UTF-8 ones drop out
            by_text.setdefault(text, []).append(i)
        t = time.perf_counter()
        vocabulary = Vocabulary(eos, by_text)
        vocab_s = time.perf_counter() - t
        t = time.perf_counter()
        index = Index(build_regex_from_schema(schema, whitespace_pattern=" ?"), vocabulary)
        guide = Guide(index)
        compile_s = time.perf_counter() - t
        mask = np.zeros((vocab_size + 31) // 32, np.int32)
        t = time.perf_counter()
        ok = True
        for i in ids:
            guide.write_mask_into(mask.ctypes.data, mask.size, 4)
            try:
                guide.advance(i)
            except Exception:  # noqa: BLE001 - a token its vocabulary dropped
                ok = False
                break
        per = (time.perf_counter() - t) / len(ids)
        results["outlines-core"] = dict(version=_version("outlines-core"), vocab_s=vocab_s, compile_s=compile_s,
                                        us_per_token=per * 1e6, install_mb=_site_size("outlines_core"), dependencies="none",
                                        walked_all_tokens=ok)
    except Exception as e:  # noqa: BLE001
        results["outlines-core"] = dict(error=f"{type(e).__name__}: {e}")
    return {"tokens_walked": len(ids), "vocab_size": vocab_size, "libraries": results}


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (the ByteLevel pre-tokenizer's alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="330m", choices=sorted(bench.CONFIGS))
    p.add_argument("--folder", type=Path, default=Path("/tmp/iree_glm_bench"))
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--tokens", type=int, default=48, help="new tokens per generation")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compare-libraries", action="store_true")
    p.add_argument("--bundle", type=Path, help="a bundle this tool built before (default: build or reuse the one of this code)")
    args = p.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    vocab = bench.CONFIGS[args.config]["vocab_size"]
    if args.compare_libraries:
        print(json.dumps(compare_libraries(train_tokenizer(vocab, args.folder / f"bpe-{vocab}.json"), vocab), indent=1))
        return
    bundle = args.bundle or prepare(args.config, args.folder, args.context)
    print(json.dumps({"config": args.config, "bundle": str(bundle), **bench_session(bundle, args.tokens, args.rounds)}, indent=1))


if __name__ == "__main__":
    main()
