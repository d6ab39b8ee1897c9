"""Hundreds of sampled constrained generations: does every output parse and validate?

    python tools/constrained_validity.py --bundle bundles/default --runs 200
    python tools/constrained_validity.py --random-glm4 /tmp/glm4-random --runs 200

Each run samples (temperature 1, its own seed, one of several prompts) under one of the
grammars the server builds: a JSON schema (response_format json_schema), a tool call in
GLM-4's format (tool_choice "required" over two tools), and the Open-AutoGLM action format
(examples/agent_actions.py). It counts runs the grammar completed and runs cut by max_tokens;
every completed run must parse and validate (exit code 1 otherwise). `--random-glm4` builds a
small GLM-4 with seeded random weights and a byte-level tokenizer in that folder first.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jsonschema  # noqa: E402

from examples.agent_actions import ACTION_GRAMMAR, parse_action  # noqa: E402
from iree_glm.runtime import SamplingParams, Session  # noqa: E402
from iree_glm.runtime.constrained import Grammar  # noqa: E402
from iree_glm.server.chat_format import ChatFormat, glm4_prompt, response_format_grammar  # noqa: E402
from iree_glm.server.openai_schema import ChatRequest, GenerationParams, Message, Tool  # noqa: E402

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "user", "guest"]},
        "scores": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}, "maxItems": 4},
        "active": {"type": "boolean"},
    },
    "required": ["name", "age", "role", "active"],
    "additionalProperties": False,
}
TOOLS = (
    Tool("get_weather", "Weather forecast", {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
         "days": {"type": "integer", "minimum": 1, "maximum": 7}}, "required": ["city", "days"], "additionalProperties": False}),
    Tool("set_alarm", "Set an alarm", {"type": "object", "properties": {"hour": {"type": "integer", "minimum": 0, "maximum": 23},
         "minute": {"type": "integer", "minimum": 0, "maximum": 59}, "label": {"type": "string", "maxLength": 12}},
         "required": ["hour", "minute"], "additionalProperties": False}),
)
PROMPTS = ["Describe a user as JSON.", "What is the weather in Paris tomorrow?", "Open the settings app.",
           "Wake me at seven.", "def parse(text):\n    \"\"\"Return", "Tap the search box, then type coffee."]


def random_glm4(folder: Path) -> Path:
    """A small GLM-4 with seeded random weights and a byte-level tokenizer, compiled."""
    from iree_glm.bundle.model_config import ModelConfig
    from iree_glm.bundle.tokenizer import byte_level_tokenizer_json
    from iree_glm.compiler.build import BuildOptions, build_bundle
    from iree_glm.frontend.checkpoint import random_model, write_checkpoint

    bundle = folder / "bundle"
    if (bundle / "manifest.json").exists():
        return bundle
    cfg = ModelConfig(family="glm4", hidden_size=128, intermediate_size=256, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=32,
                      vocab_size=257, attention_bias=True, partial_rotary_factor=0.5, max_position_embeddings=1024, eos_token_ids=(256,))
    ckpt = folder / "checkpoint"
    write_checkpoint(random_model(cfg, seed=0), ckpt)
    (ckpt / "tokenizer.json").write_text(byte_level_tokenizer_json())
    build_bundle(ckpt, bundle, BuildOptions(max_context=1024))
    return bundle


def kinds():
    """(name, prompt renderer, grammar, check(text) -> None or raises)."""
    params = GenerationParams(max_tokens=0, sampling=SamplingParams())
    schema = response_format_grammar(Grammar.json_schema(PERSON))
    tool_req = ChatRequest((), params, TOOLS, "required")

    def check_schema(text):
        jsonschema.validate(json.loads(text), PERSON)

    def check_tool(text):
        name, args = text.split("\n", 1)
        tool = next(t for t in TOOLS if t.name == name)
        jsonschema.validate(json.loads(args), tool.parameters)

    def check_action(text):
        parse_action(text)

    return [
        ("json_schema", lambda p: glm4_prompt([Message("user", p)]), schema, check_schema),
        ("tool_call", lambda p: glm4_prompt([Message("user", p)], TOOLS), ChatFormat.grammar(tool_req), check_tool),
        ("agent_action", lambda p: glm4_prompt([Message("user", p)]), Grammar.lark(ACTION_GRAMMAR), check_action),
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path)
    p.add_argument("--random-glm4", type=Path, metavar="FOLDER")
    p.add_argument("--runs", type=int, default=200, help="runs per grammar")
    p.add_argument("--max-tokens", type=int, default=160)
    args = p.parse_args()
    bundle = args.bundle if args.bundle else random_glm4(args.random_glm4)
    session = Session.load(bundle, verify=False)
    report, failures = {}, []
    t0 = time.time()
    for name, render, grammar, check in kinds():
        counts: Counter = Counter()
        for seed in range(args.runs):
            prompt = render(PROMPTS[seed % len(PROMPTS)])
            r = session.generate(prompt, args.max_tokens, SamplingParams(temperature=1.0, seed=seed), grammar=grammar)
            if r.stop_reason in ("grammar", "eos"):
                try:
                    check(r.text)
                    counts["valid"] += 1
                except Exception as e:  # noqa: BLE001 - the finding this tool exists for
                    counts["invalid"] += 1
                    failures.append(f"{name} seed {seed}: {type(e).__name__}: {e}: {r.text!r}")
            else:
                counts[f"cut_{r.stop_reason}"] += 1
        report[name] = dict(counts)
    session.close()
    print(json.dumps({"bundle": str(bundle), "runs_per_grammar": args.runs, "max_tokens": args.max_tokens,
                      "seconds": round(time.time() - t0, 1), "results": report, "failures": failures[:10]}, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
