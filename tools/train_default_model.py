"""Train the default model: a small GLM-4 on the Python standard library's docstrings.

Every machine with Python has this text offline, so the model and its tokenizer can be rebuilt
anywhere from a seed (no model hub). Steps:
  1. walk the stdlib source in sorted order and collect module/class/function docstrings;
  2. split by module (a hash of the file path): ~5% of modules are held out for evaluation;
  3. train a byte-level BPE tokenizer (`tokenizers`) on the training docstrings;
  4. train `iree_glm.model.CausalLM` (family glm4, parameter names as in transformers) on
     random 128-token windows of the training stream, one CPU thread, fixed step count;
  5. write weights (fp16 safetensors), config.json, tokenizer.json, a held-out text sample and a
     calibration text sample into iree_glm/default_model_files/.

    python tools/train_default_model.py [--steps N] [--seed S] [--out DIR]

The result depends on the Python version's stdlib text (recorded in training.json).
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import sys
import sysconfig
import time
import warnings
import zlib
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from iree_glm.frontend.checkpoint import hf_config_dict  # noqa: E402
from iree_glm.bundle.model_config import ModelConfig  # noqa: E402
from iree_glm.frontend.model import CausalLM  # noqa: E402

EOS = "<|endoftext|>"
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "lib2to3"}
HELDOUT_EVERY = 20  # modules with crc32(path) % 20 == 0 are held out


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


def stdlib_docstrings(root: Path) -> list[tuple[str, list[str]]]:
    """(relative path, [docstrings]) for every parseable stdlib module, sorted by path."""
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if SKIP_DIRS & set(rel.parts[:-1]) or rel.name.startswith("test_"):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        docs = []
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=True)
                if doc and len(doc) >= 20 and doc.isascii():
                    docs.append(doc.strip())
        if docs:
            out.append((rel.as_posix(), docs))
    return out


def split(modules: list[tuple[str, list[str]]]) -> tuple[list[str], list[str]]:
    train, heldout = [], []
    for rel, docs in modules:
        (heldout if zlib.crc32(rel.encode()) % HELDOUT_EVERY == 0 else train).extend(docs)
    return train, heldout


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
    logits, _, _ = model.all_logits(x, torch.zeros(x.shape[0], dtype=torch.long), k, v)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


@torch.no_grad()
def perplexity(model: CausalLM, ids: torch.Tensor, seq: int, max_windows: int = 10_000) -> float:
    n = min((len(ids) - 1) // seq, max_windows)
    windows = torch.stack([ids[i * seq : i * seq + seq + 1] for i in range(n)])
    total = 0.0
    for chunk in windows.split(16):
        total += loss_on(model, chunk).item() * chunk.shape[0]
    return math.exp(total / n)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=REPO / "iree_glm" / "default_model_files")
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    root = Path(sysconfig.get_paths()["stdlib"])
    modules = stdlib_docstrings(root)
    train_docs, heldout_docs = split(modules)
    print(f"{len(modules)} modules: {len(train_docs)} train / {len(heldout_docs)} held-out docstrings, "
          f"{sum(map(len, train_docs)) / 1e6:.1f} / {sum(map(len, heldout_docs)) / 1e6:.2f} MB")

    tok = train_tokenizer(train_docs, args.vocab)
    train_ids = token_stream(tok, train_docs)
    heldout_ids = token_stream(tok, heldout_docs)
    print(f"tokens: {len(train_ids)} train, {len(heldout_ids)} held-out")

    cfg = config(tok.get_vocab_size())
    assert tok.token_to_id(EOS) == cfg.eos_token_ids[0]
    model = CausalLM(cfg)
    with torch.no_grad():  # small init, GPT-2 style; norms start at one
        for name, prm in model.named_parameters():
            if name.endswith("norm.weight"):
                prm.fill_(1.0)
            elif name.endswith("bias"):
                prm.zero_()
            else:
                prm.normal_(0.0, 0.02)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f} M parameters")

    decay = [p for n, p in model.named_parameters() if p.ndim == 2]
    other = [p for n, p in model.named_parameters() if p.ndim != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    warmup = max(1, args.steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        t = (step - warmup) / max(1, args.steps - warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    gen = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    model.train()
    for step in range(args.steps):
        offsets = torch.randint(0, len(train_ids) - args.seq - 1, (args.batch,), generator=gen)
        batch = torch.stack([train_ids[o : o + args.seq + 1] for o in offsets.tolist()])
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = loss_on(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == args.steps - 1:
            el = time.perf_counter() - start
            print(f"step {step:5d} loss {loss.item():.3f} lr {lr_at(step):.2e} {el:.0f}s", flush=True)
    train_seconds = time.perf_counter() - start
    model.eval()

    # Ship fp16 weights (half the size); evaluate exactly what ships, loaded back as fp32.
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    ppl_fp32 = perplexity(model, heldout_ids, args.seq)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    ppl = perplexity(model, heldout_ids, args.seq)
    print(f"held-out perplexity: {ppl:.2f} (fp32 before rounding {ppl_fp32:.2f}; vocab {cfg.vocab_size})")

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    hf = hf_config_dict(cfg)
    hf["torch_dtype"] = "float16"
    (out / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    tok.save(str(out / "tokenizer.json"))
    # Text samples for evaluation (held-out modules) and pruning calibration (training modules).
    (out / "heldout.txt").write_text(_sample(heldout_docs, 60_000))
    (out / "calibration.txt").write_text(_sample(train_docs[:: max(1, len(train_docs) // 400)], 30_000))
    (out / "training.json").write_text(json.dumps({
        "python": sys.version.split()[0],
        "seed": args.seed, "steps": args.steps, "batch": args.batch, "seq": args.seq, "lr": args.lr,
        "threads": args.threads, "parameters": n_params, "train_tokens": len(train_ids),
        "heldout_tokens": len(heldout_ids), "train_seconds": round(train_seconds),
        "heldout_perplexity": round(ppl, 3), "heldout_perplexity_before_fp16": round(ppl_fp32, 3),
    }, indent=2) + "\n")
    print(f"wrote {out} ({n_params / 1e6:.2f} M params, {train_seconds / 60:.1f} min training)")
    return 0


def _sample(docs: list[str], max_chars: int) -> str:
    """Whole documents, each followed by the end-of-text token as in training, up to max_chars."""
    parts, n = [], 0
    for d in docs:
        if n + len(d) > max_chars:
            break
        parts.append(d)
        n += len(d) + len(EOS) + 2
    return EOS.join(parts) + EOS


if __name__ == "__main__":
    sys.exit(main())
