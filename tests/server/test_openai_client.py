"""The server through the official `openai` client: tool calls, JSON that validates, logprobs
that match the runtime's own, n > 1, streaming with usage, embeddings, keep-alive, and 400s
with a message for what cannot be served."""

import asyncio
import base64
import json

import jsonschema
import numpy as np
import openai
import pytest

from iree_glm.runtime import Session
from iree_glm.server.http import BackgroundServer

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 12}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
    "required": ["city", "days"],
    "additionalProperties": False,
}
TAP = {
    "type": "object",
    "properties": {"element": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 999}, "minItems": 2, "maxItems": 2}},
    "required": ["element"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather forecast", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "tap", "description": "Tap the screen", "parameters": TAP}},
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
MODEL = "tiny"


@pytest.fixture(scope="module")
def served(served_bundle):
    session = Session.load(served_bundle, prefix_cache=True, prefix_cache_bytes=1 << 20)
    server = BackgroundServer(session, model_name=MODEL)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0, timeout=120)
    yield session, server, client
    client.close()
    server.close()
    session.close()


def _chat(client, content="What is the weather in Paris?", **kw):
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}], **kw)


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "tap"}}, "auto"])
def test_tool_calls_validate_against_the_function_schema(served, tool_choice):
    _, _, client = served
    calls = 0
    for seed in range(6):
        r = _chat(client, tools=TOOLS, tool_choice=tool_choice, max_tokens=80, temperature=1.0, seed=seed)
        choice = r.choices[0]
        if choice.message.tool_calls is None:  # "auto" may answer in text
            assert tool_choice == "auto" and choice.finish_reason in ("stop", "length")
            continue
        calls += 1
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        (call,) = choice.message.tool_calls
        assert call.type == "function" and call.id.startswith("call_")
        if isinstance(tool_choice, dict):
            assert call.function.name == "tap"
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    assert calls >= (1 if tool_choice == "auto" else 6)


def test_tool_results_go_back_into_the_prompt(served):
    session, _, client = served
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo", "days": 1}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "rain"},
    ]
    r = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, tool_choice="none", max_tokens=4, temperature=0)
    prompt = session.encode("<|user|>\nWeather?<|assistant|>get_weather\n{\"city\": \"Oslo\", \"days\": 1}<|observation|>\nrain<|assistant|>\n")
    assert r.usage.prompt_tokens == len(prompt)
    assert r.choices[0].message.content == session.generate(prompt, 4).text


def test_streamed_tool_call(served):
    _, _, client = served
    stream = _chat(client, tools=TOOLS, tool_choice="required", max_tokens=80, temperature=1.0, seed=11, stream=True)
    name, args, finish, ids = None, "", None, set()
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                name = call.function.name or name
                args += call.function.arguments or ""
                ids.add(call.id) if call.id else None
            finish = choice.finish_reason or finish
    assert finish == "tool_calls" and len(ids) == 1 and name in SCHEMAS
    jsonschema.validate(json.loads(args), SCHEMAS[name])


def test_a_stop_string_that_cuts_a_tool_call_is_not_a_tool_call(served):
    """Arguments always start with '{': a stop string there cuts every call short, which must
    end with "stop" (not "tool_calls", which tells a client to run the call), streamed or not."""
    _, _, client = served
    r = _chat(client, tools=TOOLS, tool_choice="required", max_tokens=80, temperature=0, stop=["{"])
    choice = r.choices[0]
    assert choice.finish_reason == "stop"
    finish = None
    for chunk in _chat(client, tools=TOOLS, tool_choice="required", max_tokens=80, temperature=0, stop=["{"], stream=True):
        for c in chunk.choices:
            finish = c.finish_reason or finish
    assert finish == "stop"


def test_json_schema_and_json_object(served):
    _, _, client = served
    schema = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}, "score": {"type": "number", "minimum": 0, "maximum": 1},
                                                "note": {"type": "string", "maxLength": 8}},
              "required": ["answer", "score", "note"], "additionalProperties": False}
    fmt = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema, "strict": True}}
    for i, seed in enumerate(range(8)):
        r = _chat(client, f"Question {i}?", response_format=fmt, max_tokens=80, temperature=1.0, seed=seed)
        assert r.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(r.choices[0].message.content), schema)
    parsed = 0
    for seed in range(4):
        r = _chat(client, response_format={"type": "json_object"}, max_tokens=60, temperature=0.7, seed=seed)
        if r.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(r.choices[0].message.content), dict)
            parsed += 1
        else:  # cut by max_tokens: still a JSON object's start
            assert r.choices[0].message.content.startswith("{")
    completion = client.completions.create(model=MODEL, prompt="Verdict:", max_tokens=80, seed=1, temperature=1.0, extra_body={"response_format": fmt})
    jsonschema.validate(json.loads(completion.choices[0].text), schema)


def test_chat_logprobs_match_the_runtime(served):
    session, _, client = served
    r = _chat(client, "Hi", max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    want = session.generate(session.encode("<|user|>\nHi<|assistant|>\n"), 6, logprobs=3)
    got = r.choices[0].logprobs.content
    assert [g.logprob for g in got] == pytest.approx([w.logprob for w in want.logprobs], abs=1e-9)
    vocab = session.constraints.vocabulary
    assert [bytes(g.bytes) for g in got] == [vocab.token_bytes(t) for t in want.generated_ids]
    assert [t.logprob for g in got for t in g.top_logprobs] == pytest.approx([v for w in want.logprobs for _, v in w.top], abs=1e-9)
    c = client.completions.create(model=MODEL, prompt="Hi", max_tokens=4, temperature=0, logprobs=2)
    want = session.generate("Hi", 4, logprobs=2)
    assert c.choices[0].logprobs.token_logprobs == pytest.approx([w.logprob for w in want.logprobs], abs=1e-9)
    for top, w in zip(c.choices[0].logprobs.top_logprobs, want.logprobs):  # keyed by text: two tokens may share one
        assert 1 <= len(top) <= 2 and max(top.values()) == pytest.approx(w.top[0][1], abs=1e-9)


def test_n_choices_stream_and_usage(served):
    session, _, client = served
    r = _chat(client, "Three answers", n=3, max_tokens=10, temperature=0)
    want = session.generate(session.encode("<|user|>\nThree answers<|assistant|>\n"), 10)
    assert [c.index for c in r.choices] == [0, 1, 2] and {c.message.content for c in r.choices} == {want.text}
    assert r.usage.completion_tokens == 3 * len(want.generated_ids) and r.usage.prompt_tokens == len(want.prompt_ids)
    stream = _chat(client, "Three answers", n=2, max_tokens=10, temperature=1.0, seed=3, stream=True, stream_options={"include_usage": True})
    texts, finishes, usage = ["", ""], [None, None], None
    for chunk in stream:
        if chunk.usage is not None:
            assert chunk.choices == []
            usage = chunk.usage
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
            finishes[c.index] = c.finish_reason or finishes[c.index]
    assert all(finishes) and usage.completion_tokens == 20 and usage.prompt_tokens > 0
    assert usage.prompt_tokens_details.cached_tokens >= 0
    plain = list(_chat(client, "No usage", max_tokens=3, stream=True))
    assert all(chunk.usage is None for chunk in plain)


def test_cached_tokens_and_stop_and_seed(served):
    _, _, client = served
    system = {"role": "system", "content": "A long shared system prompt for the cache; " * 3}
    for i in range(2):
        r = client.chat.completions.create(model=MODEL, messages=[system, {"role": "user", "content": str(i)}], max_completion_tokens=3)
    assert r.usage.prompt_tokens_details.cached_tokens >= 96
    a = _chat(client, "Seeded", max_tokens=12, temperature=1.0, seed=42).choices[0].message.content
    b = _chat(client, "Seeded", max_tokens=12, temperature=1.0, seed=42).choices[0].message.content
    assert a == b
    full = _chat(client, "Stop", max_tokens=20, temperature=0).choices[0].message.content
    cut = next((full[i:i + 1] for i in range(2, len(full)) if full[i].isalnum()), None)
    if cut:
        r = _chat(client, "Stop", max_tokens=20, temperature=0, stop=[cut])
        assert r.choices[0].message.content == full[: full.find(cut)] and r.choices[0].finish_reason == "stop"


def test_embeddings(served):
    session, _, client = served
    e = client.embeddings.create(model=MODEL, input=["hello world", "goodbye"])
    assert [d.index for d in e.data] == [0, 1]
    v = np.asarray(e.data[0].embedding)
    assert v.shape == (session.config.hidden_size,) and np.linalg.norm(v) == pytest.approx(1, abs=1e-5)
    assert v == pytest.approx(session.embed("hello world"), abs=1e-6)
    assert e.usage.prompt_tokens == len(session.encode("hello world")) + len(session.encode("goodbye"))
    b = client.embeddings.create(model=MODEL, input="hello world", encoding_format="base64")
    assert np.frombuffer(base64.b64decode(b.data[0].embedding), np.float32) == pytest.approx(v, abs=1e-6)


def test_embeddings_without_the_entry_point(served, monkeypatch):
    session, _, client = served
    monkeypatch.setattr(session, "_fns", {k: v for k, v in session._fns.items() if k != "embed"})
    with pytest.raises(openai.BadRequestError, match="no embeddings entry point"):
        client.embeddings.create(model=MODEL, input="x")


@pytest.mark.parametrize("kw, message", [
    (dict(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "fly"}}), "'fly', which is not in 'tools'"),
    (dict(tools=[{"type": "function", "function": {"name": "bad name"}}]), "tools[0].function.name"),
    (dict(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "wat"}}}),
     "'response_format.json_schema.schema' cannot be used as a JSON schema: Invalid type: wat"),
    (dict(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"$ref": "#/nope"}}}}}),
     "'response_format.json_schema.schema' cannot be used as a JSON schema"),
    (dict(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}], tool_choice="required"),
     "'tools[0].function.parameters' cannot be used as a JSON schema: Invalid type: objekt"),
    (dict(tools=[{"type": "function", "function": {"name": "f", "parameters": {"properties": {"a": {"type": "string", "pattern": "(("}}}}}]),
     "'tools[0].function.parameters' cannot be used as a JSON schema: regex parse error: (( ^ error: unclosed group"),
    (dict(response_format={"type": "yaml"}), "response_format.type"),
    (dict(max_tokens="ten"), "'max_tokens' must be an integer"),
    (dict(temperature="hot"), "'temperature' must be a number"),
    (dict(n=17), "'n'"),
    (dict(top_logprobs=2), "'top_logprobs' needs 'logprobs'"),
    (dict(stream_options={"include_usage": True}), "'stream_options' needs 'stream'"),
    (dict(user="me"), "'user' is not supported"),
    (dict(tools=TOOLS, tool_choice="required", response_format={"type": "json_object"}), "cannot be combined"),
    (dict(extra_body={"top_k": 1.5}), "'top_k' must be an integer"),
])
def test_bad_requests_name_the_field(served, kw, message):
    _, _, client = served
    with pytest.raises(openai.BadRequestError) as e:
        _chat(client, "x", max_tokens=3, **kw) if "max_tokens" not in kw else _chat(client, "x", **kw)
    assert e.value.status_code == 400 and message in e.value.message


CALLED = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo", "days": 1}'}}]}


@pytest.mark.parametrize("messages, message", [
    ([{"role": "user", "content": "x"}, {"role": "tool", "content": "rain"}], "'messages[1].tool_call_id' is missing"),
    ([{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "call_1", "content": "rain"}],
     "'messages[1].tool_call_id' ('call_1') answers no tool call of an earlier assistant message"),
    ([{"role": "user", "content": "x"}, CALLED, {"role": "tool", "tool_call_id": "call_2", "content": "rain"}],
     "('call_2') answers no tool call"),
    ([{"role": "user", "content": "x", "tool_call_id": "call_1"}], "'messages[0].tool_call_id' is only for messages of role 'tool'"),
    ([{"role": "user", "content": "x"}, {**CALLED, "tool_calls": [{"type": "function", "function": {"name": "get_weather"}}]}],
     "'messages[1].tool_calls[0].id' must be a string"),
    ([{"role": "user", "content": "x"}, {**CALLED, "tool_calls": [{**CALLED["tool_calls"][0], "type": "retrieval"}]}],
     "'messages[1].tool_calls[0].type' must be 'function' (got 'retrieval')"),
    ([{"role": "user", "content": "x"}, {**CALLED, "tool_calls": [{**CALLED["tool_calls"][0], "index": 0}]}],
     "'messages[1].tool_calls[0].index' is not supported"),
])
def test_tool_messages_answer_an_earlier_call(served, messages, message):
    """As OpenAI checks them: a tool result names the call it answers, and that call was made."""
    _, _, client = served
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, tool_choice="none", max_tokens=2)
    assert e.value.status_code == 400 and message in e.value.message


def test_wrong_model_is_404(served):
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        served[2].chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])


def test_async_client_cancels_and_keeps_alive(served):
    """An abandoned stream frees its engine row; one connection carries many requests."""
    session, server, _ = served

    async def run():
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="x", max_retries=0)
        stream = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Long"}], max_tokens=400, stream=True)
        async for _ in stream:
            break
        await stream.close()
        for _ in range(3):
            r = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Short"}], max_tokens=2)
            assert r.choices[0].finish_reason in ("stop", "length")
        await client.close()

    asyncio.run(run())
    import time

    deadline = time.time() + 10
    while session.engine.active and time.time() < deadline:
        time.sleep(0.05)
    assert session.engine.active == 0


def test_agent_actions_in_open_autoglm_format(served):
    """examples/agent_actions.py: every finished reply is one executable phone action."""
    from examples.agent_actions import ACTION_GRAMMAR, SYSTEM, parse_action

    _, _, client = served
    names = set()
    for seed in range(8):
        r = client.chat.completions.create(
            model=MODEL, temperature=1.0, seed=seed, max_tokens=300,
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Task: open settings"}],
            response_format={"type": "lark", "lark": ACTION_GRAMMAR})
        assert r.choices[0].finish_reason == "stop"
        action = parse_action(r.choices[0].message.content)
        names.add(action["name"])
    assert names <= {"do", "finish"}
    with pytest.raises(ValueError):
        parse_action('do(action="Tap", element=[5000, 1])')


def test_speculative_acceptance_in_usage(served_bundle, served, monkeypatch):
    """With a draft, usage counts the draft's kept and rejected tokens in OpenAI's prediction
    fields (and tokens per target call in our extension), as the runtime reports them; the text
    is the plain server's; without a draft the fields are absent."""
    from iree_glm.runtime.speculative import AdaptiveK

    monkeypatch.setattr(AdaptiveK, "timed", lambda self, k, s: None)  # k by acceptance alone: the same counts each run
    _, _, plain_client = served
    prompt = "tap 12 34; tap 12 35; tap 12 36; tap 12 37; tap 12 38; tap 12"
    plain = plain_client.completions.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=0)
    assert plain.usage.completion_tokens_details is None
    session = Session.load(served_bundle, draft="prompt-lookup", draft_tokens=4)
    want = session.generate(prompt, 24)
    server = BackgroundServer(session, model_name=MODEL)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0, timeout=120)
    try:
        r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=0)
        assert r.choices[0].text == plain.choices[0].text == want.text
        details = r.usage.completion_tokens_details
        assert (details.accepted_prediction_tokens, details.rejected_prediction_tokens) == (want.draft_accepted, want.draft_rejected)
        assert want.draft_accepted + want.draft_rejected > 0
        assert r.usage.model_extra["speculative"]["tokens_per_target_call"] == pytest.approx(want.tokens_per_target_call)
        assert r.usage.model_extra["speculative"]["target_calls"] == want.target_calls
        stream = client.completions.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=0, stream=True,
                                           stream_options={"include_usage": True})
        usage = [c.usage for c in stream if c.usage is not None][-1]
        assert usage.completion_tokens_details.accepted_prediction_tokens == want.draft_accepted
        # An agent's requests speculate within their grammar: the plain server's tool call, bit for bit.
        for tool_choice in ("required", {"type": "function", "function": {"name": "tap"}}):
            got = _chat(client, tools=TOOLS, tool_choice=tool_choice, max_tokens=80, temperature=0)
            plain_call = _chat(plain_client, tools=TOOLS, tool_choice=tool_choice, max_tokens=80, temperature=0)
            assert got.choices[0].message.tool_calls[0].function == plain_call.choices[0].message.tool_calls[0].function
            call = got.choices[0].message.tool_calls[0].function
            jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])
    finally:
        client.close()
        server.close()
        session.close()
