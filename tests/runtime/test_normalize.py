"""Semantic prefix reuse: prompt normalization (whitespace, NFKC, case) before tokenization."""

import json
import random
import subprocess
import sys

import pytest

from iree_glm.errors import UserError
from iree_glm.runtime import Session
from iree_glm.runtime.normalize import STEPS, Normalizer, parse_normalize

# The same 70-character system prompt, typed two ways: runs of spaces, a tab, CRLF, a no-break
# space, a full-width word and an "ﬁ" ligature against their plain forms.
RAW = "You  are a\thelpful\u00a0assistant.\r\nAnswer ＢＲＩＥＦＬＹ and ﬁrmly;   never   guess. Question: "
PLAIN = "You are a helpful assistant.\nAnswer BRIEFLY and firmly; never guess. Question: "


def test_steps():
    ws, nfkc, case = Normalizer(("whitespace",)), Normalizer(("nfkc",)), Normalizer(("case",))
    assert ws("a  b\t\tc \u00a0d") == "a b c d"
    assert ws("one \n  two\r\n\r\n\n three\r\nfour") == "one\ntwo\n\nthree\nfour"  # breaks kept, blank lines kept once
    assert ws("  lead and trail  ") == " lead and trail "  # never stripped
    assert nfkc("ＢＲＩＥＦ ﬁ \u00a0x e\u0301") == "BRIEF fi  x \u00e9"
    assert case("ÀBC") == "àbc"
    both = Normalizer()
    assert both(RAW) == PLAIN and str(both) == "nfkc,whitespace"


def test_normalizing_twice_changes_nothing():
    rng = random.Random(0)
    alphabet = list("aA ßİﬁＢ\u00a0\t\r\n\u2028\u0301\u00e9Ω\u2126x.")
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        for steps in (STEPS, ("whitespace",), ("nfkc", "case")):
            n = Normalizer(steps)
            assert n(n(text)) == n(text), (steps, text)


def test_parse():
    assert parse_normalize(None) is None and parse_normalize("none") is None and parse_normalize(False) is None
    assert parse_normalize("default") == parse_normalize(True) == Normalizer()
    assert parse_normalize("case, whitespace").steps == ("case", "whitespace")
    with pytest.raises(UserError, match="--normalize: unknown step 'tabs'"):
        parse_normalize("whitespace,tabs")
    with pytest.raises(UserError, match="'normalize': expected a string"):
        parse_normalize(3, "'normalize'")


@pytest.mark.parametrize("steps", [None, "whitespace,nfkc"])
def test_prompts_differing_in_form_share_the_cache_only_when_normalized(glm4_bundle, steps):
    s = Session.load(glm4_bundle, prefix_cache=True, normalize=steps)
    first = s.generate(PLAIN + "What is 2+2?", 8, stop_ids=())
    second = s.generate(RAW + "What is 3+3?", 8, stop_ids=())
    assert first.cached_tokens == 0
    if steps is None:
        assert second.cached_tokens == 0  # "You  are" differs from "You are" at the 5th byte
    else:
        assert second.cached_tokens == 80  # 87 shared bytes (PLAIN + "What is "), in blocks of 16
        # reuse stays exact: the same answer as a cold session given the normalized text
        cold = Session.load(glm4_bundle).generate(PLAIN + "What is 3+3?", 8, stop_ids=())
        assert second.generated_ids == cold.generated_ids and second.prompt_ids == cold.prompt_ids


def test_case_is_only_folded_when_asked(glm4_bundle):
    s = Session.load(glm4_bundle, prefix_cache=True, normalize="whitespace,nfkc,case")
    assert s.encode(PLAIN.upper()) == s.encode(PLAIN.lower())
    assert Session.load(glm4_bundle, normalize="whitespace,nfkc").encode(PLAIN.upper()) != s.encode(PLAIN.upper())
    assert s.encode("a  b") != s.tokenizer.encode("a  b")
    assert s.generate([1, 2, 3, 2, 1], 2).prompt_ids == [1, 2, 3, 2, 1]  # token ids are never touched


def test_run_cli_normalize(glm4_bundle, tmp_path):
    base = [sys.executable, "-m", "iree_glm.run", str(glm4_bundle), "--json", "--max-new-tokens", "4", "--no-verify",
            "--prefix-cache-dir", str(tmp_path / "pc")]
    a = json.loads(subprocess.run(base + ["--prompt", PLAIN, "--normalize"], capture_output=True, text=True, check=True).stdout)
    b = json.loads(subprocess.run(base + ["--prompt", RAW, "--normalize", "nfkc,whitespace"], capture_output=True, text=True, check=True).stdout)
    assert a["normalized"] == b["normalized"] == "nfkc,whitespace"
    assert a["cached_tokens"] == 0 and b["cached_tokens"] == 64 and a["generated_ids"] == b["generated_ids"]
    bad = subprocess.run(base + ["--prompt-ids", "1,2", "--normalize"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --normalize rewrites text: use it with --prompt, not --prompt-ids"
    bad = subprocess.run(base + ["--prompt", "x", "--normalize", "spaces"], capture_output=True, text=True)
    assert bad.returncode == 2 and "error: --normalize: unknown step 'spaces'" in bad.stderr
