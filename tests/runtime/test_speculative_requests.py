"""A request's own rules hold when it decodes speculatively: its grammar (every checked row is
masked as the step at that position would be; a draft token the grammar refuses is never
kept), its logit bias and penalties (counting the draft tokens before a row), and its
log-probabilities (one per token, from that token's row). Greedy requests give plain
decoding's tokens; sampled ones match their grammar. Both the one-at-a-time loop and the
batching engine (a request alone in it speculates)."""

import asyncio
import json
import re

import pytest

from iree_glm.runtime import SamplingParams, Session
from iree_glm.runtime.constrained import Grammar

# Repetitive output, so that prompt lookup has matches to propose from the request's own text.
REPEATING = r"(ab|cd|abc){4,30}\."
ITEMS = {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "integer"}, "tag": {"enum": ["x", "y"]}},
                                    "required": ["id", "tag"], "additionalProperties": False}, "minItems": 3, "maxItems": 6}
PROMPT = 'Items: [{"id": 1, "tag": "x"}, {"id": 2, "tag": "y"}, {"id": 3, "tag": "x"}]. Again: '


pytestmark = pytest.mark.usefixtures("every_round_timed_alike")


@pytest.fixture(scope="module")
def plain(glm4_bundle):
    return Session.load(glm4_bundle, verify=False)


@pytest.fixture(scope="module")
def spec(glm4_bundle):
    return Session.load(glm4_bundle, verify=False, draft="prompt-lookup", draft_tokens=6)


def _same(plain, spec, prompt, n, *args, **kw):
    want, got = plain.generate(prompt, n, *args, **kw), spec.generate(prompt, n, *args, **kw)
    assert got.generated_ids == want.generated_ids
    assert (got.text, got.stop_reason) == (want.text, want.stop_reason)
    return got


def test_greedy_grammar_requests_give_plain_decodings_tokens(plain, spec):
    r = _same(plain, spec, "Say: ", 80, grammar=Grammar.regex(REPEATING))
    assert re.fullmatch(REPEATING, r.text) and r.stop_reason == "grammar"
    assert r.draft_accepted > 0, "no draft token was kept: the grammar path of the check did not run"
    r = _same(plain, spec, PROMPT, 200, grammar=Grammar.json_schema({**ITEMS, "x-guidance": {"whitespace_flexible": False}}))
    assert r.draft_accepted + r.draft_rejected > 0
    if r.stop_reason == "grammar":
        assert 3 <= len(json.loads(r.text)) <= 6


def test_a_draft_token_the_grammar_refuses_is_never_kept(plain, spec):
    """Prompt lookup proposes the prompt's continuation ("xyz..."), which the grammar forbids:
    the output still matches it, token for token plain decoding's."""
    grammar = Grammar.regex(r"[0-9]{12}")
    r = _same(plain, spec, "xyzxyzxyzxyzxyz 123412341234 xyzxyzxyz", 20, grammar=grammar)
    assert re.fullmatch(r"[0-9]{12}", r.text)


def test_sampled_grammar_requests_match_their_grammar(spec):
    for seed in range(4):
        r = spec.generate("Say: ", 80, SamplingParams(temperature=0.9, seed=seed), grammar=Grammar.regex(REPEATING))
        assert re.fullmatch(REPEATING, r.text), r.text
        again = spec.generate("Say: ", 80, SamplingParams(temperature=0.9, seed=seed), grammar=Grammar.regex(REPEATING))
        assert again.generated_ids == r.generated_ids  # seeded: reproducible


def test_bias_and_penalties_hold(plain, spec):
    """Greedy with a logit bias, and with penalties that count the draft tokens before a row
    (the grammar keeps the text repetitive, so that there are drafts to check)."""
    grammar = Grammar.regex(REPEATING)
    banned = spec.encode("abc")[-1]
    bias = SamplingParams(logit_bias={**{t: 3.0 for t in spec.encode("cd")}, banned: -100.0})
    r = _same(plain, spec, "Say: ", 80, bias, grammar=grammar)
    assert r.draft_accepted > 0 and banned not in r.generated_ids
    r = _same(plain, spec, "Say: ", 80, SamplingParams(frequency_penalty=0.8, presence_penalty=0.3), grammar=grammar)
    assert r.draft_accepted > 0


def test_logprobs_are_plain_decodings(plain, spec):
    grammar = Grammar.regex(REPEATING)
    want = plain.generate("Say: ", 80, grammar=grammar, logprobs=2)
    got = spec.generate("Say: ", 80, grammar=grammar, logprobs=2)
    assert got.generated_ids == want.generated_ids and got.draft_accepted > 0
    assert [lp.token for lp in got.logprobs] == got.generated_ids
    for a, b in zip(got.logprobs, want.logprobs):
        assert a.token == b.token and [t for t, _ in a.top] == [t for t, _ in b.top]
        assert a.logprob == pytest.approx(b.logprob, abs=1e-5)  # a verify row against a decode step (fp32)


def test_the_batching_engine_alone_keeps_the_grammar(batched_bundle):
    plain_b = Session.load(batched_bundle, verify=False)
    spec_b = Session.load(batched_bundle, verify=False, draft="prompt-lookup", draft_tokens=6)
    grammar = Grammar.regex(REPEATING)
    want = plain_b.generate("Say: ", 80, grammar=grammar, logprobs=1)
    got = asyncio.run(spec_b.stream_async("Say: ", 80, grammar=grammar, logprobs=1).collect())
    assert got.generated_ids == want.generated_ids and got.draft_accepted > 0
    assert [lp.token for lp in got.logprobs] == got.generated_ids
    spec_b.close()
