"""How a chat becomes a prompt and a reply becomes a message: GLM-4's layout and tool calls.

The prompt is the bundle's `chat_template` (tokenizer_config.json, rendered with jinja2 in a
sandbox, given `tools`) or, without one, GLM-4's layout:
`<|system|>\\n...<|user|>\\n...<|assistant|>\\n`. Tools follow GLM-4-9B-chat's convention:
they are listed in a system message; after `<|assistant|>` the model writes either "\\n" and
its answer, or a function's name, "\\n" and the arguments as JSON; a tool's result comes back
as `<|observation|>\\n...`. With tools in play the prompt ends at `<|assistant|>`, and a
grammar (runtime/constrained.py) holds the model to that format and to each function's
argument schema: tool_choice "auto" allows text or a call, "required" any call, a name that
call only.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from iree_glm.errors import UserError
from iree_glm.runtime.constrained import Grammar
from iree_glm.server.openai_schema import BadRequest, ChatRequest, Message, Tool, ToolCall

ASSISTANT = "<|assistant|>"
# GLM-4-9B-chat's system text for tools (the model was trained on it, so the wording stays as
# it was). Its template also puts an identity sentence before it and indents the JSON; both
# are left out here, to leave context to small models on small devices.
TOOLS_INTRO = "# 可用工具"
TOOLS_OUTRO = "在调用上述函数时，请使用 Json 格式表示调用的参数。"
# JSON as the model writes it: compact separators, no free whitespace (a model cannot then
# spend its tokens on blank space).
JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def tool_spec(tool: Tool) -> dict:
    return {"name": tool.name, "description": tool.description, "parameters": tool.parameters}


def glm4_prompt(messages: list[Message], tools: tuple[Tool, ...] = ()) -> str:
    """GLM-4's layout; with `tools`, listed in a leading system message and the prompt ends at
    `<|assistant|>` (the model chooses between "\\n" + text and a call)."""
    out = []
    if tools:
        listing = "".join(f"\n\n## {t.name}\n\n{json.dumps(tool_spec(t), ensure_ascii=False)}\n{TOOLS_OUTRO}" for t in tools)
        out.append(f"<|system|>\n{TOOLS_INTRO}{listing}")
    for m in messages:
        if m.role == "assistant" and m.tool_calls:
            if m.content:
                out.append(f"{ASSISTANT}\n{m.content}")
            out.extend(f"{ASSISTANT}{c.name}\n{c.arguments}" for c in m.tool_calls)
        elif m.role == "tool":
            out.append(f"<|observation|>\n{m.content}")
        else:
            out.append(f"<|{m.role}|>\n{m.content}")
    return "".join(out) + (ASSISTANT if tools else f"{ASSISTANT}\n")


def glm4_chat_prompt(messages: list[dict]) -> str:
    """GLM-4's layout of plain {"role", "content"} messages (tests, tools)."""
    return glm4_prompt([Message(m["role"], m["content"]) for m in messages])


def _template(bundle: Path):
    """The bundle's jinja chat template (compiled, source), or None."""
    path = bundle / "tokenizer_config.json"
    if not path.is_file():
        return None
    try:
        template = json.loads(path.read_text()).get("chat_template")
    except (OSError, ValueError):
        return None
    if not isinstance(template, str):
        return None
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise UserError(f"{path}: has a chat_template; rendering it needs jinja2 (pip install jinja2)") from None

    def fail(message):
        raise BadRequest(f"chat template: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = fail
    return env.from_string(template), template


def _template_message(m: Message) -> dict:
    out: dict = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                             for c in m.tool_calls]
        out["metadata"] = ""
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.tool_name is not None:
        out["name"] = m.tool_name
    return out


class ChatFormat:
    """Renders a chat request into (prompt, grammar) and reads the reply back."""

    def __init__(self, bundle: Path):
        found = _template(bundle)
        self.template, self.template_source = found if found is not None else (None, "")

    def prompt(self, req: ChatRequest, normalize: Callable[[str], str] | None = None) -> str:
        messages = req.messages
        if normalize is not None:  # the contents only: the layout stays as it is
            messages = tuple(Message(m.role, normalize(m.content), m.tool_calls, m.tool_call_id) for m in messages)
        tools = req.tools if req.tool_choice != "none" else ()
        if self.template is None:
            return glm4_prompt(list(messages), tools)
        if req.tool_choice != "none" and "tools" not in self.template_source:
            raise BadRequest("this bundle's chat template has no tool format: tool calls need GLM-4's layout", param="tools")
        prompt = self.template.render(messages=[_template_message(m) for m in messages], add_generation_prompt=True,
                                      tools=[{"type": "function", "function": tool_spec(t)} for t in tools] or None)
        if tools:
            prompt = prompt.removesuffix("\n")
            if not prompt.endswith(ASSISTANT):
                raise BadRequest(f"this bundle's chat template does not end its prompt with {ASSISTANT}: "
                                 "tool calls need GLM-4's layout", param="tools")
        return prompt

    @staticmethod
    def grammar(req: ChatRequest) -> Grammar | None:
        """The constraint of a chat reply: response_format's, or the tool-call format's."""
        if req.tool_choice == "none":
            return req.params.grammar
        tools = req.tools if req.tool_choice in ("auto", "required") else [t for t in req.tools if t.name == req.tool_choice]
        calls = " | ".join(f"call_{i}" for i in range(len(tools)))
        rules = [f'call_{i}: "{t.name}\\n" %json {json.dumps({**t.arguments_schema, "x-guidance": JSON_STYLE})}'
                 for i, t in enumerate(tools)]
        start = f'start: "\\n" ANSWER | {calls}\nANSWER: /(.|\\n)*/' if req.tool_choice == "auto" else f"start: {calls}"
        return Grammar.lark("\n".join([start, *rules]))


def response_format_grammar(grammar: Grammar | None) -> Grammar | None:
    """JSON schema grammars in the model's JSON style (compact separators)."""
    if grammar is None or grammar.kind != "json_schema" or not isinstance(grammar.source, dict):
        return grammar
    return Grammar.json_schema({**grammar.source, "x-guidance": {**JSON_STYLE, **grammar.source.get("x-guidance", {})}})


@dataclass
class Reply:
    """A chat reply read back: text content, or one tool call."""

    content: str | None
    tool_call: ToolCall | None = None


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def read_reply(text: str, tools_in_play: bool) -> Reply:
    """The model's text as a message: with tools, "\\n" + text is an answer and "name\\n{args}"
    a call."""
    if not tools_in_play:
        return Reply(text)
    if text.startswith("\n") or "\n" not in text:
        return Reply(text[1:] if text.startswith("\n") else text)
    name, arguments = text.split("\n", 1)
    return Reply(None, ToolCall(new_call_id(), name, arguments))


class ReplyStream:
    """Splits a streamed reply into content pieces or a tool call (name first, then argument
    pieces), holding back text until the first line tells which it is."""

    def __init__(self, tools_in_play: bool):
        self.tools = tools_in_play
        self.mode = "content" if not tools_in_play else None  # None: undecided; "content" or "call"
        self.held = ""
        self.call: ToolCall | None = None

    def push(self, piece: str) -> list[tuple[str, str]]:
        """[("content", text) | ("name", name) | ("arguments", text)] to send now."""
        if self.mode == "content":
            return [("content", piece)] if piece else []
        if self.mode == "call":
            return [("arguments", piece)] if piece else []
        self.held += piece
        if "\n" not in self.held:
            return []
        head, rest = self.held.split("\n", 1)
        self.held = ""
        if head == "":
            self.mode = "content"
            return [("content", rest)] if rest else []
        self.mode = "call"
        self.call = ToolCall(new_call_id(), head, "")
        return [("name", head)] + ([("arguments", rest)] if rest else [])

    def flush(self) -> list[tuple[str, str]]:
        """At the end: text still held (a reply that never finished its first line) is content."""
        held, self.held = self.held, ""
        if self.mode is None and held:
            self.mode = "content"
            return [("content", held)]
        return []
