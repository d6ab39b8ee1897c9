"""Tool calling with the official openai client: the model calls a function, we run it, the
result goes back, the model answers.

    python -m iree_glm.serve bundles/default            # in one terminal
    python examples/tool_calling.py "What is the weather in Paris?"

The server holds the model to GLM-4's tool-call format and to the function's JSON schema, so
`json.loads(call.function.arguments)` always succeeds on a finished call and the arguments
validate against `parameters` (see docs/server.md).
"""

from __future__ import annotations

import argparse
import json

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather forecast for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
            "required": ["city", "days"],
            "additionalProperties": False,
        },
    },
}


def get_weather(city: str, days: int) -> str:
    return json.dumps({"city": city, "days": days, "forecast": ["sunny"] * days})


def main() -> None:
    import openai

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("question")
    p.add_argument("--base-url", default="http://127.0.0.1:8080/v1")
    p.add_argument("--api-key", default="none")
    p.add_argument("--model", default="default")
    args = p.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key)
    messages = [{"role": "user", "content": args.question}]
    first = client.chat.completions.create(model=args.model, messages=messages, tools=[WEATHER], tool_choice="required", max_tokens=80)
    call = first.choices[0].message.tool_calls[0]
    arguments = json.loads(call.function.arguments)  # always parses: the grammar held the model to the schema
    print(f"model called {call.function.name}({arguments})")
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": get_weather(**arguments)}]
    final = client.chat.completions.create(model=args.model, messages=messages, tools=[WEATHER], tool_choice="none", max_tokens=60)
    print(final.choices[0].message.content)


if __name__ == "__main__":
    main()
