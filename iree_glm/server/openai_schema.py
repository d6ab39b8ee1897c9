"""OpenAI request bodies -> typed requests, or a `BadRequest` naming the field.

Every field a request may carry is listed here: implemented ones are checked and converted;
fields we do not implement get HTTP 400 naming them, never silence. Strings that reach the
tokenizer must be valid Unicode (a lone surrogate is a 400), numbers must be finite JSON
numbers (NaN and Infinity are not JSON and are refused at parse time).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from iree_glm.runtime.constrained import Grammar, closed_objects
from iree_glm.runtime.sampling import SamplingParams

COMPLETION_DEFAULT_MAX_TOKENS = 16  # as OpenAI's /v1/completions
CHAT_DEFAULT_MAX_TOKENS = 256
MAX_N = 16
ROLES = ("system", "developer", "user", "assistant", "tool")


class BadRequest(Exception):
    """A request the client must fix: HTTP `status` (400 unless said) with a one-line message."""

    def __init__(self, message: str, status: int = 400, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.param = param


def parse_body(body: bytes) -> dict:
    """The request body as a JSON object (NaN / Infinity refused: they are not JSON)."""

    def constant(name: str):
        raise BadRequest(f"body: {name} is not a JSON number")

    try:
        value = json.loads(body or b"null", parse_constant=constant)
    except BadRequest:
        raise
    except (ValueError, RecursionError) as e:
        raise BadRequest(f"body is not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise BadRequest("body must be a JSON object")
    return value


# -- the typed requests ----------------------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict  # a JSON schema of the arguments object, as the client sent it (the prompt lists it)
    strict: bool = False  # the arguments' grammar closes the schema's objects (`arguments_schema`)

    @property
    def arguments_schema(self) -> dict:
        """The schema the arguments are held to: `parameters`, its objects closed with `strict`."""
        return closed_objects(self.parameters) if self.strict else self.parameters


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text


@dataclass(frozen=True)
class Message:
    role: str  # system, user, assistant, tool ("developer" is read as system)
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    tool_name: str | None = None  # a tool message's `name`: the function it answers (checked against the call)


@dataclass(frozen=True)
class GenerationParams:
    """What chat and completions requests share."""

    max_tokens: int
    sampling: SamplingParams
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    stop: tuple[str, ...] = ()
    logprobs: int | None = None  # None: none; else how many top alternatives per token
    grammar: Grammar | None = None  # from response_format
    timeout: float | None = None
    normalize: Any = None  # runtime.normalize argument; None: the server's default


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[Message, ...]
    params: GenerationParams
    tools: tuple[Tool, ...] = ()
    tool_choice: str = "auto"  # "auto", "none", "required", or a tool's name


@dataclass(frozen=True)
class CompletionRequest:
    prompt: str | tuple[int, ...]
    params: GenerationParams


@dataclass(frozen=True)
class EmbeddingRequest:
    inputs: tuple[str | tuple[int, ...], ...]
    base64: bool = False


# -- fields ----------------------------------------------------------------------------------

SHARED = {"model", "max_tokens", "temperature", "top_p", "top_k", "n", "stream", "stream_options", "stop", "seed",
          "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "response_format", "timeout", "normalize"}
CHAT = SHARED | {"messages", "max_completion_tokens", "top_logprobs", "tools", "tool_choice", "parallel_tool_calls",
                 "store", "modalities"}
COMPLETION = SHARED | {"prompt", "echo", "best_of", "suffix"}
EMBEDDING = {"model", "input", "encoding_format", "dimensions"}


def _unknown(req: dict, known: set[str]) -> None:
    extra = sorted(set(req) - known)
    if extra:
        raise BadRequest(f"'{extra[0]}' is not supported by this server", param=extra[0])


def text(value: Any, name: str, allow_empty: bool = True) -> str:
    """A string the tokenizer can take (valid Unicode)."""
    if not isinstance(value, str):
        raise BadRequest(f"'{name}' must be a string (got {type(value).__name__})", param=name)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"'{name}' holds a lone surrogate (not valid Unicode)", param=name) from None
    if not allow_empty and not value:
        raise BadRequest(f"'{name}' is empty", param=name)
    return value


def integer(req: dict, name: str, default: int | None, low: int | None = None, high: int | None = None) -> int | None:
    value = req.get(name)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"'{name}' must be an integer (got {json.dumps(value)[:40]})", param=name)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in {low}..{high}"
        raise BadRequest(f"'{name}' must be {bounds} (got {value})", param=name)
    return value


def number(req: dict, name: str, default: float, low: float | None = None, high: float | None = None) -> float:
    value = req.get(name)
    if value is None:
        return default
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise BadRequest(f"'{name}' must be a number (got {json.dumps(value)[:40]})", param=name)
    if (low is not None and value < low) or (high is not None and value > high):
        raise BadRequest(f"'{name}' must be in [{low}, {high}] (got {value})", param=name)
    return float(value)


def boolean(req: dict, name: str, default: bool, param: str | None = None) -> bool:
    """req[name] (`param`: the field's full name in messages, default `name`)."""
    value = req.get(name)
    param = param or name
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequest(f"'{param}' must be true or false", param=param)
    return value


def _object(value: Any, name: str) -> dict:
    if not isinstance(value, dict):
        raise BadRequest(f"'{name}' must be an object", param=name)
    return value


def _only(value: dict, name: str, keys: set[str]) -> None:
    extra = sorted(set(value) - keys)
    if extra:
        raise BadRequest(f"'{name}.{extra[0]}' is not supported by this server", param=f"{name}.{extra[0]}")


def check_model(req: dict, served: str) -> None:
    model = req.get("model")
    if model is None:
        return
    text(model, "model")
    if model != served:
        raise BadRequest(f"the model '{model}' does not exist (this server serves '{served}')", 404, "model")


def response_format(req: dict) -> Grammar | None:
    """OpenAI's response_format (text, json_object, json_schema), plus "regex" and "lark"."""
    value = req.get("response_format")
    if value is None:
        return None
    fmt = _object(value, "response_format")
    kind = fmt.get("type")
    if kind == "text":
        _only(fmt, "response_format", {"type"})
        return None
    if kind == "json_object":
        _only(fmt, "response_format", {"type"})
        return Grammar.json_object()
    if kind == "json_schema":
        _only(fmt, "response_format", {"type", "json_schema"})
        spec = _object(fmt.get("json_schema"), "response_format.json_schema")
        _only(spec, "response_format.json_schema", {"name", "description", "schema", "strict"})
        text(spec.get("name", ""), "response_format.json_schema.name")  # names the format for the client; the grammar has no use for it
        if text(spec.get("description", ""), "response_format.json_schema.description"):
            raise BadRequest("'response_format.json_schema.description' is not supported: nothing shows it to the model "
                             "(say it in a message)", param="response_format.json_schema.description")
        schema = _object(spec.get("schema", {"type": "object"}), "response_format.json_schema.schema")
        if boolean(spec, "strict", False, "response_format.json_schema.strict"):
            schema = closed_objects(schema)
        return _usable(Grammar.json_schema(schema), "response_format.json_schema.schema")
    if kind in ("regex", "lark"):
        _only(fmt, "response_format", {"type", kind})
        return Grammar(kind, text(fmt.get(kind), f"response_format.{kind}", allow_empty=False))
    raise BadRequest("'response_format.type' must be text, json_object, json_schema, regex or lark", param="response_format.type")


def _usable(grammar: Grammar, param: str) -> Grammar:
    """`grammar`, or a 400 naming the field whose schema cannot be used and why."""
    problem = grammar.problem()
    if problem:
        raise BadRequest(f"'{param}' cannot be used as a JSON schema: {problem}", param=param)
    return grammar


def _stop(req: dict) -> tuple[str, ...]:
    stop = req.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or len(stop) > 4:
        raise BadRequest("'stop' must be a string or a list of at most 4 strings", param="stop")
    return tuple(text(s, "stop", allow_empty=False) for s in stop)


def _logit_bias(req: dict) -> dict[int, float]:
    value = req.get("logit_bias")
    if value is None:
        return {}
    bias = {}
    for key, v in _object(value, "logit_bias").items():
        try:
            token = int(key)
        except ValueError:
            raise BadRequest(f"'logit_bias' keys must be token ids (got {key!r})", param="logit_bias") from None
        bias[token] = number({f"logit_bias.{key}": v}, f"logit_bias.{key}", 0.0, -100, 100)
    return bias


def generation_params(req: dict, chat: bool) -> GenerationParams:
    max_tokens = integer(req, "max_tokens", None, 1)
    if chat:
        max_tokens = integer(req, "max_completion_tokens", max_tokens, 1)
    n = integer(req, "n", 1, 1, MAX_N)
    stream = boolean(req, "stream", False)
    include_usage = False
    if req.get("stream_options") is not None:
        if not stream:
            raise BadRequest("'stream_options' needs 'stream': true", param="stream_options")
        options = _object(req["stream_options"], "stream_options")
        _only(options, "stream_options", {"include_usage"})
        include_usage = boolean(options, "include_usage", False)
    if chat:
        logprobs = integer(req, "top_logprobs", 0, 0, 20) if boolean(req, "logprobs", False) else None
        if req.get("top_logprobs") is not None and logprobs is None:
            raise BadRequest("'top_logprobs' needs 'logprobs': true", param="top_logprobs")
    else:
        logprobs = integer(req, "logprobs", None, 0, 5)
    timeout = req.get("timeout")
    if timeout is not None:
        timeout = number(req, "timeout", 0.0, 0.001, 86400)
    seed = integer(req, "seed", None, -(2**63), 2**64 - 1)
    sampling = SamplingParams(
        temperature=number(req, "temperature", 1.0, 0, 2), top_p=number(req, "top_p", 1.0, 0, 1),
        top_k=integer(req, "top_k", 0, 0), seed=seed,
        presence_penalty=number(req, "presence_penalty", 0.0, -2, 2),
        frequency_penalty=number(req, "frequency_penalty", 0.0, -2, 2), logit_bias=_logit_bias(req),
    )
    if sampling.top_p == 0:
        raise BadRequest("'top_p' must be > 0", param="top_p")
    default = CHAT_DEFAULT_MAX_TOKENS if chat else COMPLETION_DEFAULT_MAX_TOKENS
    return GenerationParams(
        max_tokens=default if max_tokens is None else max_tokens, sampling=sampling, n=n, stream=stream,
        include_usage=include_usage, stop=_stop(req), logprobs=logprobs, grammar=response_format(req),
        timeout=timeout, normalize=req.get("normalize"),
    )


# -- chat ------------------------------------------------------------------------------------


def _content(value: Any, name: str) -> str:
    """A message's content: a string, or a list of text parts (other parts are refused)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return text(value, name)
    if isinstance(value, list):
        parts = []
        for i, part in enumerate(value):
            part = _object(part, f"{name}[{i}]")
            if part.get("type") != "text":
                raise BadRequest(f"'{name}[{i}].type' must be 'text' (this model reads text only)", param=f"{name}[{i}].type")
            parts.append(text(part.get("text"), f"{name}[{i}].text"))
        return "".join(parts)
    raise BadRequest(f"'{name}' must be a string or a list of text parts", param=name)


def _message(value: Any, i: int) -> Message:
    name = f"messages[{i}]"
    m = _object(value, name)
    _only(m, name, {"role", "content", "name", "tool_calls", "tool_call_id", "refusal"})
    role = m.get("role")
    if role not in ROLES:
        raise BadRequest(f"'{name}.role' must be one of {', '.join(ROLES)}", param=f"{name}.role")
    if "content" not in m and not m.get("tool_calls") and m.get("refusal") is None:
        raise BadRequest(f"'{name}.content' is missing", param=f"{name}.content")
    content = _content(m.get("content"), f"{name}.content")
    if m.get("refusal") is not None:  # an earlier assistant turn that refused: its words are what it said
        refusal = text(m["refusal"], f"{name}.refusal")
        if role != "assistant" or content:
            raise BadRequest(f"'{name}.refusal' is for an assistant message without content", param=f"{name}.refusal")
        content = refusal
    if m.get("name") is not None and role != "tool":
        raise BadRequest(f"'{name}.name' is not supported: GLM-4's chat format has no participant names", param=f"{name}.name")
    calls = []
    if m.get("tool_calls") is not None:
        if role != "assistant" or not isinstance(m["tool_calls"], list):
            raise BadRequest(f"'{name}.tool_calls' must be a list, on an assistant message", param=f"{name}.tool_calls")
        for j, call in enumerate(m["tool_calls"]):
            where = f"{name}.tool_calls[{j}]"
            call = _object(call, where)
            _only(call, where, {"id", "type", "function"})
            if call.get("type") != "function":
                raise BadRequest(f"'{where}.type' must be 'function' (got {call.get('type')!r})", param=f"{where}.type")
            fn = _object(call.get("function"), f"{where}.function")
            _only(fn, f"{where}.function", {"name", "arguments"})
            calls.append(ToolCall(text(call.get("id"), f"{where}.id"), text(fn.get("name"), f"{where}.function.name"),
                                  text(fn.get("arguments", "{}"), f"{where}.function.arguments")))
    call_id = m.get("tool_call_id")
    if role == "tool":  # it answers one call: the id names it (checked against earlier calls in `_answered`)
        if call_id is None:
            raise BadRequest(f"'{name}.tool_call_id' is missing: a tool message answers a tool call by its id",
                             param=f"{name}.tool_call_id")
        call_id = text(call_id, f"{name}.tool_call_id")
    elif call_id is not None:
        raise BadRequest(f"'{name}.tool_call_id' is only for messages of role 'tool'", param=f"{name}.tool_call_id")
    tool_name = text(m["name"], f"{name}.name") if m.get("name") is not None else None
    return Message("system" if role == "developer" else role, content, tuple(calls), call_id, tool_name)


def _answered(messages: tuple[Message, ...]) -> tuple[Message, ...]:
    """`messages`, where every tool message answers a tool call of an earlier assistant message."""
    calls: dict[str, str] = {}  # id -> function name
    for i, m in enumerate(messages):
        calls.update((c.id, c.name) for c in m.tool_calls)
        if m.role == "tool" and m.tool_call_id not in calls:
            raise BadRequest(f"'messages[{i}].tool_call_id' ({m.tool_call_id!r}) answers no tool call of an earlier "
                             "assistant message", param=f"messages[{i}].tool_call_id")
        if m.role == "tool" and m.tool_name is not None and m.tool_name != calls[m.tool_call_id]:
            raise BadRequest(f"'messages[{i}].name' ({m.tool_name!r}) is not the function of the call it answers "
                             f"({calls[m.tool_call_id]!r})", param=f"messages[{i}].name")
    return messages


def _tools(req: dict) -> tuple[Tool, ...]:
    value = req.get("tools")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise BadRequest("'tools' must be a list", param="tools")
    tools = []
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        tool = _object(tool, where)
        if tool.get("type") != "function":
            raise BadRequest(f"'{where}.type' must be 'function'", param=f"{where}.type")
        fn = _object(tool.get("function"), f"{where}.function")
        _only(fn, f"{where}.function", {"name", "description", "parameters", "strict"})
        name = text(fn.get("name"), f"{where}.function.name", allow_empty=False)
        if not (len(name) <= 64 and all(c.isascii() and (c.isalnum() or c in "_-") for c in name)):
            raise BadRequest(f"'{where}.function.name' must be 1-64 letters, digits, '_' or '-' (got {name!r})", param=f"{where}.function.name")
        if name in (t.name for t in tools):
            raise BadRequest(f"'{where}.function.name': two tools are named {name!r}", param=f"{where}.function.name")
        params = _object(fn.get("parameters", {"type": "object", "properties": {}}), f"{where}.function.parameters")
        tool = Tool(name, text(fn.get("description", ""), f"{where}.function.description"), params,
                    boolean(fn, "strict", False, f"{where}.function.strict"))
        _usable(Grammar.json_schema(tool.arguments_schema), f"{where}.function.parameters")
        tools.append(tool)
    return tuple(tools)


def _tool_choice(req: dict, tools: tuple[Tool, ...]) -> str:
    choice = req.get("tool_choice")
    if choice is None:
        return "auto" if tools else "none"
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise BadRequest("'tool_choice' must be auto, none, required or {\"type\": \"function\", ...}", param="tool_choice")
        if choice == "required" and not tools:
            raise BadRequest("'tool_choice' is required but 'tools' is empty", param="tool_choice")
        return choice if tools else "none"
    choice = _object(choice, "tool_choice")
    fn = _object(choice.get("function"), "tool_choice.function")
    name = text(fn.get("name"), "tool_choice.function.name")
    if choice.get("type") != "function" or name not in (t.name for t in tools):
        raise BadRequest(f"'tool_choice' names the function {name!r}, which is not in 'tools'", param="tool_choice")
    return name


def chat_request(req: dict, served: str) -> ChatRequest:
    _unknown(req, CHAT)
    check_model(req, served)
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list", param="messages")
    if req.get("store") not in (None, False):
        raise BadRequest("'store' is not supported by this server (only false)", param="store")
    if req.get("modalities") not in (None, ["text"]):
        raise BadRequest("'modalities' must be [\"text\"]", param="modalities")
    boolean(req, "parallel_tool_calls", True)  # either way: at most one call per turn (GLM-4's format)
    tools = _tools(req)
    choice = _tool_choice(req, tools)
    params = generation_params(req, chat=True)
    if params.grammar is not None and choice != "none":
        raise BadRequest("'response_format' and tool calls cannot be combined: pass tool_choice 'none'", param="response_format")
    return ChatRequest(_answered(tuple(_message(m, i) for i, m in enumerate(messages))), params, tools, choice)


def completion_request(req: dict, served: str) -> CompletionRequest:
    _unknown(req, COMPLETION)
    check_model(req, served)
    if req.get("echo") not in (None, False):
        raise BadRequest("'echo' is not supported by this server (only false)", param="echo")
    if req.get("suffix") is not None:
        raise BadRequest("'suffix' is not supported by this server", param="suffix")
    prompt = req.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, list):
        if not prompt or not all(isinstance(i, int) and not isinstance(i, bool) for i in prompt):
            raise BadRequest("'prompt' must be a string or a list of token ids (one prompt per request)", param="prompt")
        prompt = tuple(prompt)
    else:
        if prompt is None:
            raise BadRequest("'prompt' is missing", param="prompt")
        prompt = text(prompt, "prompt")
        if not prompt:
            raise BadRequest("'prompt' is empty", param="prompt")
    params = generation_params(req, chat=False)
    best_of = integer(req, "best_of", params.n, 1)
    if best_of != params.n:
        raise BadRequest("'best_of' is not supported by this server (only equal to n)", param="best_of")
    return CompletionRequest(prompt, params)


def embedding_request(req: dict, served: str) -> EmbeddingRequest:
    _unknown(req, EMBEDDING)
    check_model(req, served)
    value = req.get("input")
    if isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(i, int) and not isinstance(i, bool) for i in value)):
        value = [value]
    if not isinstance(value, list) or not value or len(value) > 256:
        raise BadRequest("'input' must be a string, a list of token ids, or a list of 1-256 of them", param="input")
    inputs: list = []
    for i, item in enumerate(value):
        if isinstance(item, list) and item and all(isinstance(t, int) and not isinstance(t, bool) for t in item):
            inputs.append(tuple(item))
        else:
            inputs.append(text(item, f"input[{i}]", allow_empty=False))
    fmt = req.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise BadRequest("'encoding_format' must be float or base64", param="encoding_format")
    if req.get("dimensions") is not None:
        raise BadRequest("'dimensions' is not supported by this server (embeddings have the model's hidden size)", param="dimensions")
    return EmbeddingRequest(tuple(inputs), fmt == "base64")
