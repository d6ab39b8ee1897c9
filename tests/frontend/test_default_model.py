"""The shipped default model: a valid checkpoint that learned its text and writes readable English."""

import json
import math
import re

import pytest
import torch

from iree_glm.frontend import default_model
from iree_glm.compiler.build import BuildOptions, build_bundle
from iree_glm.frontend.checkpoint import load_model, open_checkpoint
from iree_glm.runtime import Session
from iree_glm.bundle.tokenizer import TextTokenizer


@pytest.fixture(scope="module")
def model():
    return load_model(open_checkpoint(default_model.FILES))


@pytest.fixture(scope="module")
def default_bundle(tmp_path_factory):
    """The default model compiled once, as `python -m iree_glm.compile` does with no checkpoint."""
    out = tmp_path_factory.mktemp("bundles") / "default"
    build_bundle(None, out, BuildOptions(max_context=128))
    return out


def test_shipped_files_are_a_small_glm4_checkpoint(model):
    cfg = model.cfg
    assert cfg.family == "glm4" and cfg.vocab_size == TextTokenizer(default_model.FILES / "tokenizer.json")._tok.get_vocab_size()
    n = sum(p.numel() for p in model.parameters())
    assert 1e6 < n < 2e7
    assert n == json.loads((default_model.FILES / "training.json").read_text())["parameters"]
    assert (default_model.FILES / "model.safetensors").stat().st_size <= 25 * 2**20
    assert f"{n / 1e6:.1f} M params" in default_model.DESCRIPTION


def test_transformers_reads_it_identically(model):
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(default_model.FILES, dtype=torch.float32, pad_token_id=None).eval()
    ids = TextTokenizer(default_model.FILES / "tokenizer.json").encode("Return the number of items in the queue.")
    k, v = model.empty_cache(1, len(ids))
    with torch.no_grad():
        ours = model.all_logits(torch.tensor([ids]), torch.zeros(1, dtype=torch.long), k, v)[0][0]
        ref = hf(torch.tensor([ids])).logits[0]
    assert torch.allclose(ours, ref, atol=1e-3)


def test_held_out_perplexity_is_far_below_chance(model):
    """Uniform guessing has perplexity = vocab size (4096); the trained model must be far below."""
    tok = TextTokenizer(default_model.FILES / "tokenizer.json")
    ids = tok.encode(default_model.HELDOUT_TEXT.read_text())[:1024]
    x = torch.tensor(ids).reshape(8, 128)
    k, v = model.empty_cache(8, 128)
    with torch.no_grad():
        logits = model.all_logits(x, torch.zeros(8, dtype=torch.long), k, v)[0]
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
    ppl = math.exp(nll.item())
    assert ppl < model.cfg.vocab_size / 20, ppl


def test_compiled_default_bundle_writes_readable_text(default_bundle):
    session = Session.load(default_bundle)
    assert "Python manual" in session.manifest.source["default_model"]
    result = session.generate("Return the", max_new_tokens=40, stop_ids=())  # past <eos>: more text to judge
    text = result.text
    assert len(result.generated_ids) >= 5
    printable = sum(c.isascii() and (c.isprintable() or c in "\n\t") for c in text)
    assert printable / len(text) > 0.95, text
    words = text.split()
    wordlike = [w for w in words if re.fullmatch(r"[(`'\"]*[A-Za-z]+[.,:;)`'\"]*", w)]
    assert len(words) >= 4 and len(wordlike) / len(words) > 0.6, text


def _readable(text: str) -> bool:
    """Mostly printable ASCII and mostly words (not punctuation, not one token)."""
    printable = sum(c.isascii() and (c.isprintable() or c in "\n\t") for c in text)
    words = text.split()
    wordlike = [w for w in words if re.fullmatch(r"[(`'\"]*[A-Za-z]+[.,:;)`'\"]*", w)]
    return printable / max(1, len(text)) > 0.95 and len(words) >= 4 and len(wordlike) / len(words) > 0.6


@pytest.mark.parametrize("prompt", ["Hello", "Write a function that", "The file", "Return a list of the"])
def test_everyday_prompts_get_readable_text_as_run_prints_it(default_bundle, prompt):
    """README's first command and everyday prompts, greedy and stopping at the end-of-text token
    as `python -m iree_glm.run` does (an earlier default model answered "Hello" with ".")."""
    text = Session.load(default_bundle).generate(prompt, max_new_tokens=32).text
    assert _readable(text), text


def test_chat_layout_gets_a_docstring_style_answer(default_bundle):
    """The layout `serve` renders for a chat without a template: the model answers in a sentence."""
    from iree_glm.server.chat_format import glm4_chat_prompt

    prompt = glm4_chat_prompt([{"role": "user", "content": "How do I read a file?"}])
    result = Session.load(default_bundle).generate(prompt, max_new_tokens=48)
    words = result.text.split()
    assert result.stop_reason == "eos" and 3 <= len(words) <= 40 and words[0][0].isupper(), result.text

