"""A chat message's optional fields are used or refused, never ignored: an assistant's `refusal`
is what it said, a tool message's `name` must be the function of the call it answers, and
participant names (which GLM-4's format has no place for) are a 400 naming the field."""

import pytest

from iree_glm.server.chat_format import glm4_prompt
from iree_glm.server.openai_schema import BadRequest, chat_request

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}


def _messages(*messages) -> dict:
    return {"messages": [{"role": "user", "content": "Weather in Paris?"}, *messages]}


def test_an_assistant_refusal_is_what_it_said():
    req = chat_request(_messages({"role": "assistant", "content": None, "refusal": "I cannot help with that."},
                                 {"role": "user", "content": "Why not?"}), "default")
    assert "<|assistant|>\nI cannot help with that.<|user|>" in glm4_prompt(list(req.messages))
    # as the openai client echoes a message that did not refuse
    req = chat_request(_messages({"role": "assistant", "content": "Sunny.", "refusal": None}), "default")
    assert req.messages[-1].content == "Sunny."


@pytest.mark.parametrize("message", [
    {"role": "assistant", "content": "Sunny.", "refusal": "No."},
    {"role": "user", "content": None, "refusal": "No."},
])
def test_a_refusal_beside_content_or_off_an_assistant_is_refused(message):
    with pytest.raises(BadRequest, match=r"'messages\[1\].refusal' is for an assistant message without content"):
        chat_request(_messages(message), "default")


def test_a_tool_messages_name_is_checked_against_its_call():
    ok = chat_request(_messages({"role": "assistant", "content": None, "tool_calls": [CALL]},
                                {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "sun"}), "default")
    assert ok.messages[-1].tool_name == "get_weather"
    with pytest.raises(BadRequest, match=r"'messages\[2\].name' \('get_time'\) is not the function of the call it answers"):
        chat_request(_messages({"role": "assistant", "content": None, "tool_calls": [CALL]},
                               {"role": "tool", "tool_call_id": "call_1", "name": "get_time", "content": "noon"}), "default")


@pytest.mark.parametrize("role", ["user", "system", "assistant"])
def test_participant_names_are_refused(role):
    with pytest.raises(BadRequest, match=r"'messages\[1\].name' is not supported: GLM-4's chat format has no participant names"):
        chat_request(_messages({"role": role, "content": "hi", "name": "alice"}), "default")
