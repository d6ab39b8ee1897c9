"""A bundle's plans: the phase plan's prefill stages, and the plans the runtime may switch between.

The phase-split and one-placement plans decode on the bundle's decode placement (the single
plan); a phase-split plan also carries the prefill placement's stage modules (prefill entry
point only), so the runtime can prefill where compute is and decode where bandwidth is. The
bundle keeps the one-placement plan beside it: it needs no other device, so the runtime can fall
back to it when a device is missing. Each of the planner's decode options (the whole model on
another device that decodes faster or draws less) becomes a plan with a module of its own
(`decode-DEVICE`): switching to it moves the live KV cache to that device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from iree_glm.bundle.manifest import ModuleEntry, PlanEntry, StageEntry
from iree_glm.compiler.iree_compile import CompileError, compile_mlir
from iree_glm.compiler.target import device_target
from iree_glm.export.stages import StageSpec
from iree_glm.passes.dequant_matmul import DequantMatmulPass
from iree_glm.passes.pipeline import PassPipeline
from iree_glm.planner.phases import PhasePlan, phase_power
from iree_glm.planner.profile import Profile

SPLIT, ONE = "phase-split", "one-placement"
PREFILL_PREFIX = "prefill-"  # the prefill stages' module files


def decode_plan_name(device: str) -> str:
    return f"decode-{device}"


def decode_module_file(device: str) -> str:
    return f"decode-{device}.vmfb"


def prefill_specs(pp: PhasePlan) -> list[StageSpec]:
    """The prefill placement's consecutive runs of parts on one device, as stages."""
    names = [p.part for p in pp.decode.parts]
    specs: list[StageSpec] = []
    first = 0
    for i in range(1, len(names) + 1):
        if i == len(names) or pp.prefill_devices[i] != pp.prefill_devices[first]:
            specs.append(StageSpec(len(specs), pp.prefill_devices[first], tuple(names[first:i])))
            first = i
    return specs


def why_not_run(pp: PhasePlan, multi_device_decode: bool, dtype: str, sparse: bool) -> str | None:
    """Why a bundle cannot carry the phase split the planner chose (None: it can, or there is none)."""
    if not pp.split:
        return None
    if multi_device_decode:
        return "running a phase split whose decode placement spans several devices is not built; one placement"
    if dtype != "f32":
        return f"prefill stages are f32 only (activation dtype {dtype}); one placement"
    if sparse:
        return "prefill stages have no sparse attention; one placement"
    return None


def plan_entries(pp: PhasePlan, profile: Profile, prefill_stages: list[StageEntry] | None,
                 decode_modules: dict[str, str] | None = None) -> list[PlanEntry]:
    """The bundle's plans, the default first: the phase split (when built), one placement, then a
    `decode-DEVICE` plan per decode option whose module was built (`decode_modules`: device -> file)."""
    decode_devices = set(p.device for p in pp.decode.parts)
    decode_w = phase_power(profile, decode_devices)
    one = PlanEntry(ONE, None, decode_w, pp.single_prefill_ms, 0.0, pp.decode.latency_ms, pp.prompt_tokens,
                    ["prefill and decode on the decode placement"])
    others = [PlanEntry(decode_plan_name(o.device), None, o.power_w, o.prefill_ms, 0.0, o.decode_ms, pp.prompt_tokens,
                        [o.why], decode_module=decode_modules[o.device], decode_device=o.device)
              for o in pp.decode_options if o.device in (decode_modules or {})]
    if not prefill_stages:
        return [one, *others]
    split_w = max(decode_w, phase_power(profile, set(pp.prefill_devices)))
    split = PlanEntry(SPLIT, prefill_stages, split_w, pp.prefill_ms, pp.handoff_ms, pp.decode.latency_ms, pp.prompt_tokens,
                      list(pp.reasons))
    return [split, one, *others]


def why_no_decode_modules(pp: PhasePlan, multi_device_decode: bool, dtype: str, compute: str, sparse: bool,
                          quant: str = "none") -> str | None:
    """Why a bundle cannot carry its decode options' modules (None: it can, or there are none)."""
    if not pp.decode_options:
        return None
    if quant == "int4":
        # The CPU int4 kernels quantize x per block too (the int8 path's graph form would carry
        # over), but int4 modules do not compile for Vulkan in IREE 3.13 (docs/phases.md).
        return "decode modules for other devices are not built for int4 weights (their Vulkan modules do not compile in IREE 3.13)"
    if multi_device_decode:
        return "plans with their own decode device beside a multi-device decode placement are not built"
    if dtype != "f32" or compute != "f32":
        return f"decode modules for other devices are f32 only (activation {dtype}, compute {compute})"
    if sparse:
        return "decode modules for other devices have no sparse attention"
    return None


def compile_decode_modules(mlir_path: Path, pp: PhasePlan, profile: Profile, folder: Path, extra_flags: tuple[str, ...],
                           log: Path, quantized_matmuls: int, int8_activations: str,
                           progress: Callable[[str], None]) -> tuple[list[ModuleEntry], dict[str, str]]:
    """The main module's program (every entry point) compiled for each decode option's device:
    (modules, device -> file). Quantized weights: `mlir_path` quantizes x in the graph where the
    CPU's int8 decode kernel does (build.py's mark_like_int8_kernel), and prompts' int8 matmuls
    multiply int8 rows where the CPU's do (`int8_activations`), so that both modules compute the
    same and a switch keeps the tokens. A device this IREE compiler has no backend for (an NPU)
    is skipped with a line: a stand-in decoding on the host CPU would only duplicate the main module."""
    import iree.compiler as ic

    backends = set(ic.query_available_targets())
    modules, files = [], {}
    for option in pp.decode_options:
        device = profile.device(option.device)
        if device.name == profile.host.name:
            continue  # the main module is compiled for the host already
        if device.backend not in backends:
            progress(f"plan {decode_plan_name(device.name)}: no IREE backend '{device.backend}' here; not carried")
            continue
        target = device_target(device)
        progress(f"compile the {decode_plan_name(device.name)} plan's module ({target.backend})")
        # Vulkan buffers the host maps: the KV cache moves between devices by mapping, not by queue transfers.
        mappable = ("--iree-hal-external-resources-mappable",) if target.backend == "vulkan-spirv" else ()
        file = decode_module_file(device.name)
        pipeline = PassPipeline([DequantMatmulPass(quantized_matmuls, int8_activations=int8_activations)] if quantized_matmuls else [])
        try:
            compiled = compile_mlir(mlir_path, folder / file, target, (*mappable, *extra_flags), log, pipeline)
        except CompileError as e:  # an extra plan: the bundle's own plans stand without it
            progress(f"plan {decode_plan_name(device.name)}: not carried, its module does not compile: {e}")
            continue
        modules.append(ModuleEntry(file, device.name, target.backend, target.driver, compiled.flags))
        files[device.name] = file
    return modules, files
