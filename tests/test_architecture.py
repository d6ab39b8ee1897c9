"""The package's layering: compile side and runtime meet only in `bundle/`, nothing imports
upward, no import cycles, and running a bundle needs neither torch nor the IREE compiler."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import iree_glm

PACKAGE = Path(iree_glm.__file__).parent
# What each layer may import besides itself.
ALLOWED = {
    "errors": set(),
    "validation": {"errors"},
    "bundle": {"errors"},
    "frontend": {"errors", "bundle"},
    "transforms": {"errors", "bundle", "frontend"},
    "planner": {"errors", "bundle", "frontend", "transforms"},
    "export": {"errors", "bundle", "frontend", "transforms", "planner"},
    "kernels": {"errors", "bundle"},
    "passes": {"errors", "bundle", "frontend", "kernels"},
    "compiler": {"errors", "bundle", "frontend", "transforms", "planner", "export", "kernels", "passes"},
    "runtime": {"errors", "bundle"},
    "server": {"errors", "bundle", "runtime"},
    "tuning": {"errors", "bundle", "frontend", "transforms", "planner", "export", "kernels", "passes", "compiler", "runtime"},
    "cli": {"errors", "bundle", "frontend", "transforms", "planner", "export", "kernels", "passes", "compiler", "runtime", "server", "tuning"},
    "entry point": {"errors", "cli"},  # iree_glm/{compile,run,serve,profile}.py: `python -m iree_glm.X`
}
COMPILE_SIDE = {"frontend", "transforms", "planner", "export", "kernels", "passes", "compiler"}


def _modules() -> dict[str, Path]:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        parts = ["iree_glm", *p.relative_to(PACKAGE).with_suffix("").parts]
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Every iree_glm module each module imports, at any depth of its code (lazy imports count)."""
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join([*base, *([node.module] if node.module else [])])
                found |= {f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _layer(module: str) -> str:
    layer = module.split(".")[1] if "." in module else "iree_glm"
    return layer if layer in ALLOWED else "entry point"


BASE = {"errors", "validation"}  # every layer may import these


def test_layers_import_only_what_is_below_them():
    graph = _imports(_modules())
    wrong = []
    for module, targets in graph.items():
        layer = _layer(module)
        for target in targets:
            other = _layer(target)
            if other == layer or (other in BASE and layer not in BASE):
                continue
            if other not in ALLOWED.get(layer, set()):
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def test_runtime_and_compile_side_meet_only_in_the_bundle_contract():
    graph = _imports(_modules())
    crossing = [f"{m} -> {t}" for m, ts in graph.items() for t in ts
                if (_layer(m) in {"runtime", "server"} and _layer(t) in COMPILE_SIDE)
                or (_layer(m) in COMPILE_SIDE and _layer(t) in {"runtime", "server", "cli", "tuning"})]
    assert not crossing, crossing


def test_no_import_cycles():
    graph = _imports(_modules())
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in ("torch", "safetensors", "llguidance", "starlette", "uvicorn") or name.startswith(("torch.", "iree.compiler")):
            raise ImportError(f"{name} is blocked: the runtime must not need it")
sys.meta_path.insert(0, Block())
sys.argv = ["iree_glm.run", *sys.argv[1:]]
import runpy
runpy.run_module("iree_glm.run", run_name="__main__")
"""


def test_a_bundle_runs_with_torch_and_the_compiler_blocked(glm4_bundle):
    from iree_glm.runtime import Session

    expected = Session.load(glm4_bundle).generate([5, 17, 99, 3], max_new_tokens=6).generated_ids
    done = subprocess.run([sys.executable, "-c", BLOCKER, str(glm4_bundle), "--prompt-ids", "5,17,99,3", "--max-new-tokens", "6",
                           "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["generated_ids"] == expected
