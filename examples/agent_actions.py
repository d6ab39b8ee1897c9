"""A phone agent's next action, constrained to Open-AutoGLM's action format.

    python -m iree_glm.serve bundles/default            # in one terminal
    python examples/agent_actions.py "Open the settings app and turn on Wi-Fi"

Open-AutoGLM's model answers with one call per step, e.g. `do(action="Tap", element=[500, 120])`
or `finish(message="Done")` (coordinates on a 0-999 grid over the screen). A free-running
small model may write anything else, or a call the phone cannot execute; here the server's
constrained decoding (`response_format` {"type": "lark", ...}, see docs/server.md) makes every
reply one of the calls below, so `parse_action` never fails on a finished reply.
"""

from __future__ import annotations

import argparse
import ast

# llguidance's Lark dialect: rules in lowercase, tokens (regular expressions) in capitals.
ACTION_GRAMMAR = r"""
start: do | finish
do: "do(action=" (tap | swipe | type | launch | key | wait) ")"
tap: "\"" TAP_KIND "\", element=" point
swipe: "\"Swipe\", start=" point ", end=" point
type: "\"Type\", text=" STRING
launch: "\"Launch\", app=" STRING
key: "\"Back\"" | "\"Home\""
wait: "\"Wait\", duration=\"" SECONDS " seconds\""
finish: "finish(message=" STRING ")"
point: "[" COORD ", " COORD "]"
TAP_KIND: "Tap" | "Long Press" | "Double Tap"
COORD: /[0-9]{1,3}/
SECONDS: /[1-9][0-9]?/
STRING: /"([^"\\\x00-\x1f\x7f]|\\["\\nt]){0,60}"/
"""

SYSTEM = ("You operate an Android phone. Reply with exactly one action: do(action=\"Tap\", element=[x, y]), "
          "do(action=\"Swipe\", start=[x1, y1], end=[x2, y2]), do(action=\"Type\", text=\"...\"), "
          "do(action=\"Launch\", app=\"...\"), do(action=\"Back\"), do(action=\"Home\"), "
          "do(action=\"Wait\", duration=\"N seconds\") or finish(message=\"...\"). Coordinates are 0-999.")


def parse_action(text: str) -> dict:
    """`do(action="Tap", element=[5, 7])` -> {"name": "do", "action": "Tap", "element": [5, 7]}
    (Python's own parser reads the call; raises ValueError if it is not one of the actions)."""
    call = ast.parse(text.strip(), mode="eval").body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in ("do", "finish") and not call.args):
        raise ValueError(f"not an action call: {text!r}")
    out = {"name": call.func.id, **{k.arg: ast.literal_eval(k.value) for k in call.keywords}}
    if out["name"] == "do" and not isinstance(out.get("action"), str):
        raise ValueError(f"do() without an action: {text!r}")
    for key in ("element", "start", "end"):
        if key in out and not (len(out[key]) == 2 and all(isinstance(v, int) and 0 <= v <= 999 for v in out[key])):
            raise ValueError(f"{key} must be two coordinates in 0..999: {text!r}")
    return out


def main() -> None:
    import openai

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("task")
    p.add_argument("--screen", default="Home screen: Settings icon at [120, 860], Chrome at [380, 860], search bar at [500, 80].",
                   help="what the screen shows (a real agent sends a screenshot description or UI tree)")
    p.add_argument("--base-url", default="http://127.0.0.1:8080/v1")
    p.add_argument("--api-key", default="none")
    p.add_argument("--model", default="default")
    args = p.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key)
    reply = client.chat.completions.create(
        model=args.model, temperature=0.7, max_tokens=80,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Task: {args.task}\nScreen: {args.screen}"}],
        response_format={"type": "lark", "lark": ACTION_GRAMMAR},
    )
    text = reply.choices[0].message.content
    print(text)
    print(parse_action(text))


if __name__ == "__main__":
    main()
