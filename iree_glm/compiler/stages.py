"""Compiling a multi-device plan's stage modules, one per device, and naming the stand-ins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from iree_glm.bundle.manifest import ModuleEntry, StageEntry
from iree_glm.compiler.iree_compile import compile_mlir
from iree_glm.compiler.target import device_target
from iree_glm.export.stages import StageSpec, stage_file
from iree_glm.passes.pipeline import PassPipeline
from iree_glm.planner.profile import Profile


def compile_stages(exported: list, stages: list[StageSpec], profile: Profile, folder: Path, extra_flags: tuple[str, ...], log: Path,
                   pipeline_for: Callable[[int], PassPipeline], prefix: str = "") -> tuple[list[ModuleEntry], list[StageEntry]]:
    """Compile each stage for its device's target. A device whose backend this IREE compiler
    lacks (an NPU) gets a CPU stand-in module, marked as such; running it needs --allow-stand-in.
    `pipeline_for(n)`: our passes for a stage holding n quantized matmuls; `prefix`: as
    `stage_file`'s. Returns the modules
    and the stages as the manifest records them."""
    import iree.compiler as ic

    backends = set(ic.query_available_targets())
    modules, described = [], []
    for (path, fused), spec in zip(exported, stages):
        device = profile.device(spec.device)
        stand_in = device.backend not in backends
        target = device_target(profile.host) if stand_in else device_target(device)
        # Vulkan outputs must be host-mappable: the hand-off to the next device maps them.
        mappable = ("--iree-hal-external-resources-mappable",) if target.backend == "vulkan-spirv" else ()
        compiled = compile_mlir(path, folder / stage_file(spec, prefix), target, (*mappable, *extra_flags), log, pipeline_for(fused))
        modules.append(ModuleEntry(stage_file(spec, prefix), spec.device, target.backend, target.driver, compiled.flags))
        described.append(StageEntry(index=spec.index, device=spec.device, parts=list(spec.parts), file=stage_file(spec, prefix),
                                    device_driver=device.hal_driver, stand_in=stand_in, allow_stand_in=device.allow_stand_in,
                                    cache_layers=spec.attn_layers))
    return modules, described


def stand_ins(stages: list[StageEntry] | None) -> dict[str, str]:
    """Device -> driver its CPU stand-in runs on, for the stages of a bundle's manifest."""
    return {s.device: "local-task" for s in stages or [] if s.stand_in}
