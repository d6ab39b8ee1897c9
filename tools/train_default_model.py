"""Train the default model: a small GLM-4 on Python's documentation and stdlib docstrings.

Every Debian machine has this text offline (the stdlib source; the manual from `apt-get install
python3-doc`), so the model and its tokenizer can be rebuilt anywhere from a seed (no model
hub). Steps (the text: tools/default_model_corpus.py):
  1. collect stdlib docstrings, the manual's prose pages as plain text, and chat pairs (a
     question about a stdlib name, its docstring as the answer, in GLM-4's chat layout);
  2. hold out ~5% of sources (a hash of the module path / manual page; a held-out module's
     manual page too) for evaluation;
  3. train a byte-level BPE tokenizer (`tokenizers`) on the training text, or with --init keep
     the tokenizer of the model it starts from;
  4. train `iree_glm.model.CausalLM` (family glm4, parameter names as in transformers) on
     random 128-token windows of the shuffled training stream, one CPU thread, until --steps or
     --budget-minutes runs out (the learning rate decays over whichever ends first; the best
     held-out probe checkpoint ships);
  5. write weights (fp16 safetensors), config.json, tokenizer.json, a held-out text sample and a
     calibration text sample into iree_glm/frontend/default_model_files/.

    python tools/train_default_model.py [--steps N] [--seed S] [--budget-minutes M] [--bf16]
        [--init MODEL_DIR] [--compare-text OLD_HELDOUT.txt] [--out DIR]
    python tools/train_default_model.py --eval-only MODEL_DIR --compare-text TEXT

Bits per byte (--compare-text, --eval-only) compare models whose tokenizers differ. The result
depends on the Python version's stdlib and the manual's package version (both in training.json).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import sysconfig
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from iree_glm.frontend.checkpoint import hf_config_dict  # noqa: E402
from iree_glm.bundle.model_config import ModelConfig  # noqa: E402
from iree_glm.frontend.model import CausalLM  # noqa: E402

sys.path.insert(0, str(REPO / "tools"))
import default_model_corpus as corpus_text  # noqa: E402

EOS = "<|endoftext|>"


def config(vocab_size: int) -> ModelConfig:
    return ModelConfig(
        family="glm4",
        vocab_size=vocab_size,
        hidden_size=256,
        intermediate_size=768,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        head_dim=64,
        attention_bias=True,
        partial_rotary_factor=0.5,
        rms_norm_eps=1e-5,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        eos_token_ids=(0,),  # the tokenizer's first special token
    )


def train_tokenizer(docs: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer)
    return tok


def token_stream(tok, docs: list[str]) -> torch.Tensor:
    """All documents, each followed by the end-of-text token, as one id tensor."""
    eos = tok.token_to_id(EOS)
    ids: list[int] = []
    for enc in tok.encode_batch(docs, add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def loss_on(model: CausalLM, batch: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of a [B, S+1] batch (the cache is just the window)."""
    x, y = batch[:, :-1], batch[:, 1:]
    k, v = model.empty_cache(x.shape[0], x.shape[1])
    if torch.is_autocast_enabled("cpu"):  # values come out of a bf16 matmul; keys out of fp32 rotary
        v = v.to(torch.get_autocast_dtype("cpu"))
    if torch.is_grad_enabled():  # autograd refuses in-place writes into views of a leaf tensor
        k, v = k.requires_grad_() * 1, v.requires_grad_() * 1
    logits, _, _ = model.all_logits(x, torch.zeros(x.shape[0], dtype=torch.long), k, v)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))


@torch.no_grad()
def perplexity(model: CausalLM, ids: torch.Tensor, seq: int, max_windows: int = 10_000) -> float:
    n = min((len(ids) - 1) // seq, max_windows)
    windows = torch.stack([ids[i * seq : i * seq + seq + 1] for i in range(n)])
    total = 0.0
    for chunk in windows.split(16):
        total += loss_on(model, chunk).item() * chunk.shape[0]
    return math.exp(total / n)


@torch.no_grad()
def bits_per_byte(model: CausalLM, tok, text: str, seq: int) -> tuple[float, float]:
    """(bits per UTF-8 byte, per-token perplexity) of `text` under the model: every token after
    the first is predicted once, from up to `seq` tokens before it. Bits per byte compares
    models whose tokenizers differ."""
    ids = torch.tensor(tok.encode(text, add_special_tokens=False).ids, dtype=torch.long)
    nll, count = 0.0, 0
    for start in range(0, len(ids) - 1, seq):
        w = ids[start : start + seq + 1].unsqueeze(0)
        n = w.shape[1] - 1
        nll += loss_on(model, w).item() * n
        count += n
    return nll / math.log(2) / len(text.encode("utf-8")), math.exp(nll / count)


def eval_only(model_dir: Path, texts: list[Path], seq: int) -> int:
    """Score a shipped model folder on text files (to compare a new model with an old one)."""
    from tokenizers import Tokenizer

    from iree_glm.frontend.checkpoint import load_model, open_checkpoint

    model = load_model(open_checkpoint(model_dir))
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    for t in texts:
        bpb, ppl = bits_per_byte(model, tok, t.read_text(), seq)
        print(f"{model_dir} on {t}: {bpb:.4f} bits/byte, token perplexity {ppl:.2f}")
    return 0


def stream(tok, texts: list[str], seed: int) -> torch.Tensor:
    """The documents in a seeded shuffled order (the mix of manual, docstrings and chat evenly
    spread), as one id stream."""
    order = list(texts)
    random.Random(seed).shuffle(order)
    return token_stream(tok, order)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for matmuls (fast on CPUs with AMX)")
    p.add_argument("--budget-minutes", type=float, default=0.0,
                   help="stop training after this wall time (0: none); the best checkpoint so far ships")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--no-manual", action="store_true", help="leave out the python3-doc manual")
    p.add_argument("--compare-text", type=Path, action="append", default=[],
                   help="also report bits/byte on this text file (e.g. an older heldout.txt)")
    p.add_argument("--init", type=Path,
                   help="start from this model folder (weights and tokenizer) instead of from scratch")
    p.add_argument("--eval-only", type=Path, help="score this model folder on --compare-text files and exit")
    p.add_argument("--out", type=Path, default=REPO / "iree_glm" / "frontend" / "default_model_files")
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    if args.eval_only:
        return eval_only(args.eval_only, args.compare_text, args.seq)
    compare = {str(t): t.read_text() for t in args.compare_text}  # read before --out is rewritten
    doc_root = None if args.no_manual else corpus_text.manual_root()
    if not args.no_manual and doc_root is None:
        print("no Python manual under /usr/share/doc (apt-get install python3-doc), or pass --no-manual",
              file=sys.stderr)
        return 2
    corpus = corpus_text.build(Path(sysconfig.get_paths()["stdlib"]), doc_root, args.seed)
    train_docs, heldout_docs = corpus.train + corpus.chat_train, corpus.heldout + corpus.chat_heldout
    print(f"{corpus.sources}: {len(train_docs)} train / {len(heldout_docs)} held-out documents, "
          f"{sum(map(len, train_docs)) / 1e6:.1f} / {sum(map(len, heldout_docs)) / 1e6:.2f} MB")

    if args.init:  # go on from a shipped model, with its tokenizer
        from tokenizers import Tokenizer

        from iree_glm.frontend.checkpoint import load_model, open_checkpoint

        tok = Tokenizer.from_file(str(args.init / "tokenizer.json"))
        model = load_model(open_checkpoint(args.init)).train()
        cfg = model.cfg
        init_sha = hashlib.sha256((args.init / "model.safetensors").read_bytes()).hexdigest()
        init_info = json.loads((args.init / "training.json").read_text()) if (args.init / "training.json").is_file() else {}
    else:
        tok = train_tokenizer(train_docs, args.vocab)
        cfg = config(tok.get_vocab_size())
        model = CausalLM(cfg)
        with torch.no_grad():  # small init, GPT-2 style; norms start at one
            for name, prm in model.named_parameters():
                if name.endswith("norm.weight"):
                    prm.fill_(1.0)
                elif name.endswith("bias"):
                    prm.zero_()
                else:
                    prm.normal_(0.0, 0.02)
        init_info = None
    assert tok.token_to_id(EOS) == cfg.eos_token_ids[0]
    train_ids = stream(tok, train_docs, args.seed)
    heldout_ids = stream(tok, heldout_docs, args.seed)
    print(f"tokens: {len(train_ids)} train, {len(heldout_ids)} held-out")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f} M parameters")

    decay = [p for n, p in model.named_parameters() if p.ndim == 2]
    other = [p for n, p in model.named_parameters() if p.ndim != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    warmup = max(1, min(100, args.steps // 20))

    def lr_at(step: int, elapsed: float = 0.0) -> float:
        """Warmup, then cosine decay to a tenth over the steps or the time budget, whichever
        runs out first: a run cut short by its budget still ends at a low rate."""
        if step < warmup:
            return args.lr * (step + 1) / warmup
        t = min(1.0, max((step - warmup) / max(1, args.steps - warmup), elapsed / budget))
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    # A fixed slice of held-out windows picks the best checkpoint (the full set is scored at the end).
    probe = heldout_ids[: 64 * args.seq + 1]
    gen = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    budget = args.budget_minutes * 60 or math.inf
    best = (math.inf, -1, None)
    steps_done = 0
    model.train()
    for step in range(args.steps):
        offsets = torch.randint(0, len(train_ids) - args.seq - 1, (args.batch,), generator=gen)
        batch = torch.stack([train_ids[o : o + args.seq + 1] for o in offsets.tolist()])
        lr = lr_at(step, time.perf_counter() - start)
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            loss = loss_on(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        steps_done = step + 1
        el = time.perf_counter() - start
        last = step == args.steps - 1 or el >= budget
        if step % 50 == 0 or last:
            print(f"step {step:5d} loss {loss.item():.3f} lr {lr:.2e} {el:.0f}s", flush=True)
        if (step + 1) % args.eval_every == 0 or last:
            model.eval()
            ppl = perplexity(model, probe, args.seq)
            model.train()
            print(f"step {step:5d} held-out probe perplexity {ppl:.2f}", flush=True)
            if ppl < best[0]:
                best = (ppl, steps_done, {k: v.detach().clone() for k, v in model.state_dict().items()})
        if last:
            break
    train_seconds = time.perf_counter() - start
    model.load_state_dict(best[2])
    model.eval()
    print(f"best probe perplexity {best[0]:.2f} at step {best[1]} of {steps_done} done ({args.steps} planned)")

    # Ship fp16 weights (half the size); evaluate exactly what ships, loaded back as fp32.
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    ppl_fp32 = perplexity(model, heldout_ids, args.seq, max_windows=300)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    ppl = perplexity(model, heldout_ids, args.seq, max_windows=300)
    print(f"held-out perplexity: {ppl:.2f} (fp32 before rounding {ppl_fp32:.2f}; vocab {cfg.vocab_size})")
    heldout_sample = _sample(random.Random(args.seed).sample(heldout_docs, len(heldout_docs)), 60_000)
    scores = {"heldout.txt": bits_per_byte(model, tok, heldout_sample, args.seq)[0]}
    for name, text in compare.items():
        scores[name] = bits_per_byte(model, tok, text, args.seq)[0]
    for name, bpb in scores.items():
        print(f"{name}: {bpb:.4f} bits/byte")

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    hf = hf_config_dict(cfg)
    hf["torch_dtype"] = "float16"
    (out / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    tok.save(str(out / "tokenizer.json"))
    # Text samples for evaluation (held-out sources) and pruning calibration (training sources).
    (out / "heldout.txt").write_text(heldout_sample)
    (out / "calibration.txt").write_text(_sample(train_docs[:: max(1, len(train_docs) // 400)], 30_000))
    (out / "training.json").write_text(json.dumps({
        "python": sys.version.split()[0], "manual": corpus_text.manual_version(doc_root) if doc_root else "",
        "init": None if init_info is None else {"sha256": init_sha, "training": init_info},
        "sources": corpus.sources,
        "seed": args.seed, "steps": args.steps, "steps_done": steps_done, "best_step": best[1],
        "batch": args.batch, "seq": args.seq, "lr": args.lr, "bf16": args.bf16,
        "threads": args.threads, "parameters": n_params, "train_tokens": len(train_ids),
        "heldout_tokens": len(heldout_ids), "train_seconds": round(train_seconds),
        "heldout_perplexity": round(ppl, 3), "heldout_perplexity_before_fp16": round(ppl_fp32, 3),
        "bits_per_byte": {k: round(v, 4) for k, v in scores.items()},
    }, indent=2) + "\n")
    print(f"wrote {out} ({n_params / 1e6:.2f} M params, {train_seconds / 60:.1f} min training)")
    return 0


def _sample(docs: list[str], max_chars: int) -> str:
    """Whole documents, each followed by the end-of-text token as in training, up to max_chars."""
    parts, n = [], 0
    for d in docs:
        if n + len(d) > max_chars:
            continue
        parts.append(d)
        n += len(d) + len(EOS) + 2
    return EOS.join(parts) + EOS


if __name__ == "__main__":
    sys.exit(main())
