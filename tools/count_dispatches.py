"""Count the commands one call of each model part runs, per backend: the scheduler's DISPATCHES.

The cost model charges every command (dispatch, copy, fill) of a call the device's
per-dispatch overhead, so the counts must be the compiled code's, not a guess. This exports
stage modules of the default model's shape with 2 layers, growing part by part (embed, + layer
0 attention, + its FFN, + layer 1, + head), compiles each to IREE's stream IR with the
backend's flags (`--compile-to=stream`) and counts the commands in the decode and prefill
functions; the differences attribute them to parts. The first attention of a call also
computes the positions and rotary tables: that difference is counted with the embeddings.

    python tools/count_dispatches.py [--backend llvm-cpu|vulkan-spirv ...] [--context 256]
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import tempfile
from pathlib import Path

CHAIN = ("embed", "layers.0.attn", "layers.0.ffn", "layers.1.attn", "layers.1.ffn", "head")
PHASES = ("decode", "prefill")


def _target(backend: str):
    from iree_glm.compiler.target import VULKAN_FLAGS, Target, host_cpu_target

    return host_cpu_target() if backend == "llvm-cpu" else Target("vulkan-spirv", "vulkan", VULKAN_FLAGS)


def commands(stream_ir: str, function: str) -> int:
    """Dispatches, copies and fills in `function`'s body of a stream-phase module."""
    start = stream_ir.index(f"@{function}$async(")
    body = stream_ir[start : stream_ir.index("\n  }", start)]
    return sum(len(re.findall(rf"stream\.cmd\.{op}\b", body)) for op in ("dispatch", "copy", "fill"))


def count(backend: str, context: int, work: Path) -> dict[str, dict[str, int]]:
    import iree.compiler as ic

    from iree_glm.frontend import default_model
    from iree_glm.frontend.checkpoint import random_model
    from iree_glm.export.program import EntryPoint
    from iree_glm.export.stages import Stage, StageSpec, export_stage_mlir

    model = random_model(dataclasses.replace(default_model.CONFIG, num_layers=2), seed=0)
    entry_points = [EntryPoint("prefill", 1, None, context), EntryPoint("decode", 1, 1, context)]
    totals = {phase: [] for phase in PHASES}
    for n in (1, 2, 3, 5, 6):  # embed | +attn | +ffn | +layer 1 | +head
        module, _ctx = export_stage_mlir(Stage(model, StageSpec(0, "x", CHAIN[:n])), entry_points)
        src, out = work / f"stage{n}.mlir", work / f"stage{n}.stream.mlir"
        src.write_text(str(module))
        ic.compile_file(str(src), output_file=str(out), input_type="torch",
                        extra_args=[*_target(backend).compile_args(), "--compile-to=stream"])
        text = out.read_text()
        for phase in PHASES:
            totals[phase].append(commands(text, phase))
    result = {}
    for phase, (embed, first_attn, ffn_total, layer_total, head_total) in totals.items():
        ffn, layer, head = ffn_total - first_attn, layer_total - ffn_total, head_total - layer_total
        attn = layer - ffn
        result[phase] = {"embed": embed + (first_attn - embed - attn), "attn": attn, "ffn": ffn, "head": head}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", action="append", choices=["llvm-cpu", "vulkan-spirv"])
    ap.add_argument("--context", type=int, default=256, help="KV-cache capacity of the exported functions")
    args = ap.parse_args()
    from iree_glm.planner.scheduler import DISPATCHES

    for backend in args.backend or ["llvm-cpu", "vulkan-spirv"]:
        with tempfile.TemporaryDirectory(prefix="iree_glm-count-") as work:
            counted = count(backend, args.context, Path(work))
        for phase in PHASES:
            used = DISPATCHES[backend][phase]
            print(f"{backend} {phase}: counted {counted[phase]}; scheduler.DISPATCHES {used}"
                  + ("" if used == counted[phase] else "  <- differs"))


if __name__ == "__main__":
    main()
