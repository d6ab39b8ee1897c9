"""OpenAI's `strict` on a tool or a json_schema response format: the schema's objects are closed
to the keys they name, so a reply cannot carry keys of the model's own; without it the schema
holds as written (extra keys are valid JSON Schema). A format's `description`, which nothing
would show the model, is refused rather than ignored."""

import json

import pytest
from tokenizers import Tokenizer

from iree_glm.frontend.default_model import FILES
from iree_glm.runtime.constrained import ConstraintFactory, Grammar, closed_objects
from iree_glm.server.chat_format import ChatFormat
from iree_glm.server.openai_schema import BadRequest, chat_request

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}


@pytest.fixture(scope="module")
def fits():
    """fits(grammar, text): whether `text` is a complete reply the grammar allows (the default
    model's tokenizer: each of its tokens must be allowed in turn)."""
    factory = ConstraintFactory(FILES / "tokenizer.json", 4096, (0,))
    tokenizer = Tokenizer.from_file(str(FILES / "tokenizer.json"))

    def check(grammar: Grammar, text: str) -> bool:
        constraint = factory(grammar)
        for token in tokenizer.encode(text, add_special_tokens=False).ids:
            if not constraint.allowed()[token]:
                return False
            constraint.consume(token)
        return constraint.accepting

    return check


def _chat(tool_strict=None, format_strict=None, **extra) -> dict:
    fn = {"name": "get_weather", "parameters": WEATHER, **({} if tool_strict is None else {"strict": tool_strict})}
    req = {"messages": [{"role": "user", "content": "Paris?"}], "tools": [{"type": "function", "function": fn}],
           "tool_choice": "required", **extra}
    if format_strict is not None:
        req = {"messages": req["messages"], "response_format": {"type": "json_schema", "json_schema": {
            "name": "w", "schema": WEATHER, "strict": format_strict}}}
    return req


def test_strict_tool_arguments_carry_only_the_named_keys(fits):
    reply = 'get_weather\n{"city": "Paris", "days": 2%s}'
    for strict, extra_allowed in ((None, True), (False, True), (True, False)):
        grammar = ChatFormat.grammar(chat_request(_chat(strict), "default"))
        assert fits(grammar, reply % "")
        assert fits(grammar, reply % ', "x": 1') is extra_allowed, strict


def test_strict_response_format_closes_its_objects(fits):
    from iree_glm.server.chat_format import response_format_grammar

    for strict, extra_allowed in ((False, True), (True, False)):
        grammar = response_format_grammar(chat_request(_chat(format_strict=strict), "default").params.grammar)
        assert fits(grammar, '{"city": "Paris"}')
        assert fits(grammar, '{"city": "Paris", "note": "sun"}') is extra_allowed


def test_strict_must_be_a_boolean():
    with pytest.raises(BadRequest, match=r"'tools\[0\].function.strict' must be true or false"):
        chat_request(_chat("yes"), "default")
    with pytest.raises(BadRequest, match=r"'response_format.json_schema.strict' must be true or false"):
        chat_request(_chat(format_strict=1), "default")


def test_a_format_description_is_refused_not_ignored():
    req = {"messages": [{"role": "user", "content": "Paris?"}], "response_format": {"type": "json_schema", "json_schema": {
        "name": "w", "schema": WEATHER, "description": "The weather"}}}
    with pytest.raises(BadRequest, match=r"'response_format.json_schema.description' is not supported"):
        chat_request(req, "default")
    req["response_format"]["json_schema"]["description"] = ""
    chat_request(req, "default")


def test_closing_walks_the_schema_not_its_data():
    schema = {
        "type": "object",
        "properties": {
            # property names that are schema keywords, and data that looks like a schema
            "properties": {"type": "object", "properties": {"a": {"type": "string"}}},
            "type": {"enum": [{"type": "object"}], "default": {"properties": {}}},
            "open": {"type": "object", "additionalProperties": True},
            "mapped": {"type": "object", "patternProperties": {"^x": {"type": "object", "properties": {}}}},
            "list": {"type": "array", "items": {"$ref": "#/$defs/item"}},
            "either": {"anyOf": [{"type": "object", "properties": {"b": {}}}, {"type": "string"}]},
            "negated": {"not": {"type": "object", "properties": {"c": {}}}},  # closing it would let more through
        },
        "$defs": {"item": {"type": ["object", "null"], "properties": {"id": {"type": "integer"}}}},
    }
    before = json.dumps(schema)
    closed = closed_objects(schema)
    assert json.dumps(schema) == before  # the client's schema is not changed
    props = closed["properties"]
    assert closed["additionalProperties"] is False
    assert props["properties"]["additionalProperties"] is False and "additionalProperties" not in props
    assert props["type"] == schema["properties"]["type"]  # enum and default values untouched
    assert props["open"]["additionalProperties"] is True
    assert "additionalProperties" not in props["mapped"]  # patternProperties say what other keys may be
    assert props["mapped"]["patternProperties"]["^x"]["additionalProperties"] is False
    assert props["either"]["anyOf"][0]["additionalProperties"] is False and props["either"]["anyOf"][1] == {"type": "string"}
    assert props["negated"] == schema["properties"]["negated"]
    assert closed["$defs"]["item"]["additionalProperties"] is False
    assert closed_objects(True) is True
