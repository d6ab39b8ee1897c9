"""Compiling a multi-device plan's stage modules, one per device, and naming the stand-ins.
"""

from __future__ import annotations

from iree_glm.export.stages import StageSpec, stage_file
from iree_glm.compiler.target import device_target

def compile_stages(exported: list, stages: list[StageSpec], profile, folder, extra_flags, log, input_passes_for) -> tuple[list, list[dict]]:
    """Compile each stage for its device's target. A device whose backend this IREE compiler
    lacks (an NPU) gets a CPU stand-in module, marked as such; running it needs --allow-stand-in.
    Returns (ModuleEntry list, stage descriptions for the manifest)."""
    import iree.compiler as ic

    from iree_glm.bundle.manifest import ModuleEntry
    from iree_glm.compiler.iree_compile import compile_mlir

    backends = set(ic.query_available_targets())
    modules, described = [], []
    for (path, fused), spec in zip(exported, stages):
        device = profile.device(spec.device)
        stand_in = device.backend not in backends
        target = device_target(profile.host) if stand_in else device_target(device)
        # Vulkan outputs must be host-mappable: the hand-off to the next device maps them.
        mappable = ("--iree-hal-external-resources-mappable",) if target.backend == "vulkan-spirv" else ()
        flags = compile_mlir(path, folder / stage_file(spec), target, (*mappable, *extra_flags), log, input_passes=input_passes_for(fused))
        modules.append(ModuleEntry(stage_file(spec), spec.device, target.backend, target.driver, flags))
        described.append({**spec.to_dict(), "file": stage_file(spec), "device_driver": device.hal_driver,
                          "stand_in": stand_in, "allow_stand_in": device.allow_stand_in,
                          "cache_layers": spec.attn_layers})
    return modules, described


def stand_ins(stage_info: list[dict] | None) -> dict[str, str]:
    """Device -> driver its CPU stand-in runs on, for the stages of a bundle's manifest."""
    return {s["device"]: "local-task" for s in stage_info or [] if s["stand_in"]}
