"""What prompt normalization (`--normalize`) costs and what it buys, on the default model.

Texts: the first --texts documents of the default model's held-out stdlib docs that are long
enough; each is cut into a prompt (its first --prompt-chars characters, at a space) and a
continuation (the next --continuation tokens). Each prompt comes in three forms:
  - natural: as written (the held-out text has its own double spaces and line breaks);
  - varied: the natural prompt retyped by a seeded perturbation that normalization undoes
    (doubled spaces, tabs, no-break spaces, CRLF, trailing spaces, "ﬁ" ligatures,
    full-width digits), i.e. what another client might send;
  - normalized: `Normalizer(--steps)` of the varied form (equal to that of the natural form).
Cost: the fp32 model's logits over the continuation given each prompt (teacher-forced, torch,
same weights as the bundle): top-1 agreement, max / mean logit difference and continuation
perplexity, normalized vs the raw forms. Through the compiled bundle: how often 16 greedy
tokens are identical, and the prompt tokens a prefix cache holding one form reuses for the
other, without and with normalization.

    python -m iree_glm.compile                      # bundles/default
    python tools/normalize_fidelity.py --bundle bundles/default
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def vary(text: str, rng: random.Random) -> str:
    """Retype `text` with differences that whitespace + NFKC normalization undo."""
    out = []
    i = 0
    while i < len(text):
        ch = text[i]
        r = rng.random()
        if ch == " ":
            out.append("  " if r < 0.15 else "\t" if r < 0.2 else "\u00a0" if r < 0.25 else " ")
        elif ch == "\n":
            out.append("\r\n" if r < 0.3 else " \n" if r < 0.45 else "\n")
        elif text.startswith("fi", i) and r < 0.5:
            out.append("\ufb01")
            i += 1
        elif ch.isdigit() and r < 0.5:
            out.append(chr(ord("０") + int(ch)))
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def texts(heldout: Path, n: int, prompt_chars: int) -> list[tuple[str, str]]:
    """(prompt, continuation text) pairs from held-out documents."""
    pairs = []
    for doc in heldout.read_text(encoding="utf-8").split("<|endoftext|>"):
        if len(doc) < prompt_chars + 150:
            continue
        cut = doc.rfind(" ", 0, prompt_chars)
        pairs.append((doc[:cut], doc[cut:]))
        if len(pairs) == n:
            break
    return pairs


def continuation_logits(model, prompt_ids: list[int], cont_ids: list[int]) -> np.ndarray:
    """Logits predicting each continuation token [len(cont), V] given the prompt (teacher-forced)."""
    import torch

    ids = torch.tensor([prompt_ids + cont_ids])
    k, v = model.empty_cache(1, ids.shape[1])
    with torch.no_grad():
        logits = model.all_logits(ids, torch.zeros(1, dtype=torch.long), k, v)[0][0]
    return logits[len(prompt_ids) - 1 : -1].double().numpy()


def nll(logits: np.ndarray, ids: list[int]) -> float:
    m = logits.max(-1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))
    return float(-logp[np.arange(len(ids)), ids].sum())


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, help="the default model's bundle (for the greedy and cache rows)")
    p.add_argument("--steps", default="whitespace,nfkc")
    p.add_argument("--texts", type=int, default=40)
    p.add_argument("--prompt-chars", type=int, default=300)
    p.add_argument("--continuation", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import torch

    from iree_glm.frontend import default_model
    from iree_glm.frontend.checkpoint import load_model, open_checkpoint
    from iree_glm.runtime.normalize import parse_normalize
    from iree_glm.bundle.tokenizer import TextTokenizer

    torch.set_num_threads(1)
    norm = parse_normalize(args.steps)
    tok = TextTokenizer(default_model.FILES / "tokenizer.json")
    model = load_model(open_checkpoint(default_model.FILES))
    rng = random.Random(args.seed)
    pairs = texts(default_model.HELDOUT_TEXT, args.texts, args.prompt_chars)
    forms: dict[str, list[str]] = {"natural": [], "varied": [], "normalized": []}
    for prompt, _ in pairs:
        varied = vary(prompt, rng)
        assert norm(varied) == norm(prompt), "the perturbation must be one normalization undoes"
        forms["natural"].append(prompt)
        forms["varied"].append(varied)
        forms["normalized"].append(norm(varied))

    conts = [tok.encode(c)[: args.continuation] for _, c in pairs]
    ids = {f: [tok.encode(t) for t in ts] for f, ts in forms.items()}
    logits = {f: [continuation_logits(model, pi, ci) for pi, ci in zip(ids[f], conts)] for f in forms}
    n_tok = sum(len(c) for c in conts)
    ppl = {f: math.exp(sum(nll(l, c) for l, c in zip(logits[f], conts)) / n_tok) for f in forms}
    changed = sum(a != b for a, b in zip(forms["natural"], forms["normalized"]))
    print(f"{len(pairs)} held-out prompts of ~{args.prompt_chars} characters ({sum(map(len, ids['natural'])) / len(pairs):.0f} tokens on average), "
          f"{n_tok} continuation tokens; steps {norm}; normalization changed {changed} of {len(pairs)} natural prompts")
    print()
    print("| model reads | instead of | top-1 agree | max logit diff | mean logit diff | continuation ppl | ppl of the raw form |")
    print("|---|---|---|---|---|---|---|")
    for a, b in (("normalized", "natural"), ("normalized", "varied"), ("varied", "natural")):
        agree = sum(int((x.argmax(-1) == y.argmax(-1)).sum()) for x, y in zip(logits[a], logits[b])) / n_tok
        diff = np.concatenate([np.abs(x - y).ravel() for x, y in zip(logits[a], logits[b])])
        print(f"| {a} | {b} | {100 * agree:.2f}% | {diff.max():.3f} | {diff.mean():.4f} | {ppl[a]:.2f} | {ppl[b]:.2f} |")

    if args.bundle:
        from iree_glm.runtime import Session

        plain = Session.load(args.bundle, verify=False)
        same = {f: 0 for f in ("natural", "varied")}
        for i in range(len(pairs)):
            g = {f: plain.generate(ids[f][i], 16, stop_ids=()).generated_ids for f in forms}
            for f in same:
                same[f] += g["normalized"] == g[f]
        print()
        print(f"through the bundle: 16 greedy tokens identical, normalized vs natural {same['natural']}/{len(pairs)}, "
              f"normalized vs varied {same['varied']}/{len(pairs)}")
        reuse = {}
        for steps in (None, norm):
            s = Session.load(args.bundle, verify=False, prefix_cache=True, normalize=steps)
            cached = total = 0
            for nat, var in zip(forms["natural"], forms["varied"]):
                s.generate(nat, 1, stop_ids=())
                r = s.generate(var, 1, stop_ids=())
                cached += r.cached_tokens
                total += len(r.prompt_ids)
            reuse["on" if steps else "off"] = cached / total
        bs = s.prefix_cache.block_size
        print(f"prefix cache holding the natural form, then the varied form sent: {100 * reuse['off']:.1f}% of its prompt tokens reused "
              f"without normalization, {100 * reuse['on']:.1f}% with it (blocks of {bs} tokens; the last partial block is always prefilled)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
