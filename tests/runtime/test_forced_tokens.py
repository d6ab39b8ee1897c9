"""Tokens a request's grammar forces (a JSON key and its quotes, a tool's name) are checked in
the verify call of the step before them, on a bundle whose verify rows are decode steps bit
for bit (int8 here): the output is plain decoding's token for token, in fewer calls; with a
draft they lead it; the batching engine does it alone and beside other requests; an fp32 bundle
(rows not exact) decodes them one step each; the server reports them in usage, and
`serve --no-forced-tokens` turns them off."""

import asyncio
import json
import re
import subprocess
import sys

import numpy as np
import openai
import pytest

from iree_glm.compiler.build import BuildOptions, build_bundle
from iree_glm.runtime import SamplingParams, Session
from iree_glm.runtime.constrained import Grammar
from iree_glm.runtime.drafts import Proposal
from iree_glm.runtime.speculative import _after_forced
from iree_glm.server.chat_format import JSON_STYLE
from iree_glm.server.http import BackgroundServer
from iree_glm.transforms.quantize import QuantSpec

from ..helpers import write_hf_checkpoint

CALL = {"type": "object", "properties": {
    "name": {"const": "get_weather"},
    "arguments": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                                   "unit": {"enum": ["celsius", "fahrenheit"]}},
                  "required": ["city", "unit"], "additionalProperties": False}},
    "required": ["name", "arguments"], "additionalProperties": False, "x-guidance": JSON_STYLE}
ITEMS = {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "integer", "maximum": 999},
                                                                    "tag": {"enum": ["alpha", "beta"]}},
                                    "required": ["id", "tag"], "additionalProperties": False},
         "minItems": 2, "maxItems": 3, "x-guidance": JSON_STYLE}
GRAMMARS = [Grammar.json_schema(CALL), Grammar.json_schema(ITEMS), Grammar.regex(r"(id=[0-9]{1,3}; status=(ok|failed)\n){2}")]
PROMPTS = ["What is the weather in Paris? ", "Items: ", "log:\n"]


pytestmark = pytest.mark.usefixtures("every_round_timed_alike")


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory):
    """The tiny GLM-4 (one byte a token) in int8, our kernels: its verify rows are decode steps
    bit for bit. Context 1024 for a tool listing; decode batches of 1 and 2 for the engine."""
    ckpt = tmp_path_factory.mktemp("ckpt") / "glm4"
    write_hf_checkpoint("glm4_gqa", ckpt, max_positions=1024)
    out = tmp_path_factory.mktemp("bundles") / "glm4-int8"
    build_bundle(ckpt, out, BuildOptions(max_context=1024, quant=QuantSpec("int8"), decode_batch_sizes=(1, 2)))
    return out


@pytest.fixture(scope="module")
def sessions(int8_bundle):
    plain = Session.load(int8_bundle, verify=False, forced_tokens=False)
    forced = Session.load(int8_bundle, verify=False)
    if forced.exact_verify_rows < 2:
        pytest.skip("this host's int8 bundle has no exact verify rows")
    return plain, forced


@pytest.mark.parametrize("which", range(len(GRAMMARS)))
def test_forced_tokens_give_plain_decodings_tokens_in_fewer_calls(sessions, which):
    plain, forced = sessions
    grammar, prompt = GRAMMARS[which], PROMPTS[which]
    want = plain.generate(prompt, 160, grammar=grammar)
    got = forced.generate(prompt, 160, grammar=grammar)
    assert got.generated_ids == want.generated_ids
    assert (got.text, got.stop_reason) == (want.text, want.stop_reason)
    assert want.forced_tokens is None and want.target_calls is None
    assert got.forced_tokens > 0, "no forced token was checked"
    assert got.target_calls < len(got.generated_ids) - 1
    # A call yields its forced tokens and the target's next one (the last call may be cut by the end).
    assert len(got.generated_ids) <= got.forced_tokens + got.target_calls + 1
    assert got.acceptance_rate is None  # no draft: nothing to accept
    if got.stop_reason == "grammar" and which < 2:
        json.loads(got.text)


def test_forced_tokens_lead_a_draft(sessions, int8_bundle):
    """With prompt lookup, each call checks the forced tokens, then the draft's after them; the
    draft's acceptance counts its own tokens only."""
    plain, _ = sessions
    spec = Session.load(int8_bundle, verify=False, draft="prompt-lookup", draft_tokens=6)
    prompt = 'Previous: {"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}\nNow: '
    grammar = Grammar.json_schema(CALL)
    want = plain.generate(prompt, 120, grammar=grammar)
    got = spec.generate(prompt, 120, grammar=grammar)
    assert got.generated_ids == want.generated_ids and got.text == want.text
    assert got.forced_tokens > 0 and got.draft_accepted + got.draft_rejected > 0
    assert len(got.generated_ids) <= got.forced_tokens + got.draft_accepted + got.target_calls + 1
    without = Session.load(int8_bundle, verify=False, draft="prompt-lookup", draft_tokens=6, forced_tokens=False)
    alone = without.generate(prompt, 120, grammar=grammar)
    assert alone.generated_ids == want.generated_ids and alone.forced_tokens is None


def test_sampled_requests_match_their_grammar_and_their_seed(sessions):
    _, forced = sessions
    for seed in range(3):
        params = SamplingParams(temperature=0.8, seed=seed)
        r = forced.generate(PROMPTS[2], 160, params, grammar=GRAMMARS[2])
        assert r.stop_reason != "grammar" or re.fullmatch(r"(id=[0-9]{1,3}; status=(ok|failed)\n){2}", r.text), r.text
        assert r.forced_tokens > 0
        assert forced.generate(PROMPTS[2], 160, params, grammar=GRAMMARS[2]).generated_ids == r.generated_ids


def test_a_sampling_drafts_distributions_get_one_hot_rows_for_forced_tokens():
    q = [np.full(5, 0.2, np.float32)]
    p = _after_forced([3, 1], Proposal([4], q))
    assert p.tokens == [3, 1, 4]
    assert np.array_equal(p.probs[0], np.eye(5)[3]) and np.array_equal(p.probs[1], np.eye(5)[1]) and p.probs[2] is q[0]
    assert _after_forced([3], Proposal([])).probs is None and _after_forced([], Proposal([4], q)).probs is q


def test_the_batching_engine_checks_them_alone_and_beside_others(sessions, int8_bundle):
    plain, _ = sessions
    engine = Session.load(int8_bundle, verify=False)
    grammar = Grammar.json_schema(CALL)
    want = plain.generate(PROMPTS[0], 120, grammar=grammar)

    async def both():
        a = engine.stream_async(PROMPTS[0], 120, grammar=grammar).collect()
        b = engine.stream_async("Tell me a story: ", 40).collect()
        return await asyncio.gather(a, b)

    try:
        alone = asyncio.run(engine.stream_async(PROMPTS[0], 120, grammar=grammar).collect())
        assert alone.generated_ids == want.generated_ids and alone.forced_tokens > 0
        assert alone.target_calls < len(alone.generated_ids) - 1
        shared, _ = asyncio.run(both())  # a call of its own for its first forced tokens (not timed yet)
        assert shared.forced_tokens > 0
        assert shared.stop_reason != "grammar" or json.loads(shared.text)["name"] == "get_weather"
    finally:
        engine.close()


def test_fp32_decodes_forced_tokens_one_step_each(glm4_bundle):
    """fp32 verify rows are not decode steps bit for bit: without a draft nothing changes."""
    session = Session.load(glm4_bundle, verify=False)
    assert session.exact_verify_rows == 0
    r = session.generate("Items: ", 60, grammar=GRAMMARS[1])
    assert r.forced_tokens is None and r.target_calls is None


def test_the_server_reports_forced_tokens_in_usage(int8_bundle, sessions):
    plain, forced = sessions
    server = BackgroundServer(forced, model_name="m")
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0, timeout=120)
    try:
        fmt = {"type": "json_schema", "json_schema": {"name": "call", "schema": {k: v for k, v in CALL.items() if k != "x-guidance"}}}
        r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Weather in Paris?"}],
                                           response_format=fmt, max_tokens=120, temperature=0)
        extra = r.usage.model_extra["speculative"]
        assert extra["forced_tokens"] > 0 and extra["target_calls"] < r.usage.completion_tokens
        assert r.usage.completion_tokens_details is None  # no draft: no prediction tokens
        if r.choices[0].finish_reason == "stop":
            assert json.loads(r.choices[0].message.content)["name"] == "get_weather"
    finally:
        server.close()


@pytest.mark.parametrize("flags", [(), ("--no-forced-tokens",)])
def test_serve_cli_says_and_does_what_its_flag_asks(int8_bundle, sessions, flags):
    proc = subprocess.Popen([sys.executable, "-m", "iree_glm.serve", str(int8_bundle), "--port", "0", "--no-verify", *flags],
                            stderr=subprocess.PIPE, text=True)
    try:
        banner = next(line for line in proc.stderr if "http://127.0.0.1:" in line)
        assert ("grammar-forced tokens checked" in banner) == (not flags), banner
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)", banner).group(1))
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120)
        fmt = {"type": "json_schema", "json_schema": {"name": "items", "schema": {k: v for k, v in ITEMS.items() if k != "x-guidance"}}}
        r = client.chat.completions.create(model=int8_bundle.name, messages=[{"role": "user", "content": "Items?"}],
                                           response_format=fmt, max_tokens=60, temperature=0)
        speculative = (r.usage.model_extra or {}).get("speculative")
        assert (speculative is None) == bool(flags), r.usage
    finally:
        proc.terminate()
        proc.wait(10)
