"""Which of our kernels a build links, decided once from the target and the options.

Our kernels are linked only where the bundle's target CPU has what a kernel set needs (read
from the target's flags, kernels/target_cpu.py; never from the build machine) and this machine
can build that set (kernels/toolchain.py). Everything else keeps IREE's lowering, and the
manifest says why (`KernelChoice.reason`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from iree_glm.bundle.manifest import KernelChoice
from iree_glm.bundle.sparse_pattern import SparsePattern
from iree_glm.errors import UserError
from iree_glm.compiler.target import Target
from iree_glm.kernels import bf16 as bf16_kernel, target_cpu, toolchain
from iree_glm.passes.dequant_matmul import DequantMatmulPass
from iree_glm.passes.attention_kernel import DENSE, AttentionKernelPass, Window
from iree_glm.passes.pipeline import PassPipeline


@dataclass(frozen=True)
class KernelRequest:
    """What the build asks of the kernels: the target and the options that decide."""

    target: Target
    extra_flags: tuple[str, ...]
    quant_mode: str  # none, int8, int4
    quant_head: str  # none, int8
    int8_activations: str  # none, prefill, all
    dtype: str  # activation dtype
    sparse: SparsePattern | None  # block-sparse attention
    staged: bool  # a multi-device plan (one module per device: the passes run per stage)
    attention_wanted: bool  # the host profile's attention_kernel
    int8_prefill_wanted: bool  # ... int8_prefill_kernel
    glue_wanted: bool  # ... quantize_glue
    kernel_set_wanted: str = "best"  # ... kernel_set: "best" or a set's name
    compute_dtype: str = "f32"  # what f32 matmuls multiply in (compiler/compute_dtype.py)


@dataclass
class KernelPlan:
    """The choices for one build; the pass results are added to them after compiling."""

    int4: KernelChoice
    int8: KernelChoice
    attention: KernelChoice
    glue: bool  # the prompt kernels' row quantizations compute silu(gate) * up and RMSNorm themselves
    window: Window = DENSE  # the block-sparse pattern the attention kernel skips key blocks by
    bf16: KernelChoice = field(default_factory=lambda: KernelChoice("none", reason="compute dtype f32"))

    def input_pipeline(self, quantized_matmuls: int, cpu: bool, int8_activations: str) -> PassPipeline:
        """Our input-phase passes for this plan (passes/pipeline.py lists their order)."""
        passes = []
        if quantized_matmuls:
            kernel_set = next((c.kernel_set for c in (self.int4, self.int8, self.bf16) if c.ours and c.kernel_set), None)
            passes.append(DequantMatmulPass(quantized_matmuls, cpu_tiles=cpu, int8_activations=int8_activations,
                                            int4_kernel=self.int4.ours, int8_kernel=self.int8.ours,
                                            kernel_set=kernel_set or toolchain.X86_64_AVX2.name,
                                            int8_matmul=self.int8.prefill == "matmul", glue=self.glue, bf16_kernel=self.bf16.ours))
        if self.attention.ours:
            passes.append(AttentionKernelPass(self.window, kernel_set=self.attention.kernel_set))
        return PassPipeline(passes)

    def record(self, results: dict) -> None:
        """Put what the passes did (`Compiled.pass_results`) into the choices the manifest keeps."""
        attention = results.get(AttentionKernelPass.name)
        if attention is not None:
            self.attention.rewritten, self.attention.left_to_iree = attention.rewritten, attention.left_to_iree
        dequant = results.get(DequantMatmulPass.name)
        glue_entry = self._glue_entry()
        if dequant is not None and glue_entry is not None and self.glue:
            glue_entry.quantize_glue = dict(dequant.glue)

    def _glue_entry(self) -> KernelChoice | None:
        """The choice whose prompt kernels quantize rows (int4's, else int8's matrix kernel)."""
        if self.int4.ours:
            return self.int4
        return self.int8 if self.int8.prefill == "matmul" else None


def kernel_set_for(target: Target, extra_flags: tuple[str, ...], wanted: str = "best") -> tuple[toolchain.KernelSet | None, str | None]:
    """The kernel set this build links (chosen from the target's CPU, or the profile's
    `kernel_set` if it names one), or None and why not."""
    if target.backend != "llvm-cpu":
        return None, f"backend {target.backend}"
    cpu = target_cpu.from_flags([*target.flags, *extra_flags])
    if wanted == "best":
        kernel_set, reason = toolchain.select(cpu)
    else:
        kernel_set, reason = toolchain.by_name(wanted), None
        missing = [f for f in kernel_set.features if f not in cpu.features]
        if kernel_set.arch != cpu.arch or missing:
            raise UserError(f"profile kernel_set = {wanted!r}: target {cpu.describe()} "
                            f"{'is ' + cpu.arch if kernel_set.arch != cpu.arch else 'lacks ' + ', '.join(missing)}")
    if kernel_set is not None:
        reason = toolchain.build_reason(kernel_set)
    return (None, reason) if reason else (kernel_set, None)


def choose(req: KernelRequest) -> KernelPlan:
    kernel_set, reason = kernel_set_for(req.target, req.extra_flags, req.kernel_set_wanted)
    int4 = _int4(req, *_ours(kernel_set, "int4", reason))
    int8 = _int8(req, *_ours(kernel_set, "int8", reason))
    attention = _attention(req, *_ours(kernel_set, "attention", reason))
    window = Window(req.sparse.local, req.sparse.global_) if req.sparse and attention.ours else DENSE
    plan = KernelPlan(int4, int8, attention, glue=False, window=window, bf16=_bf16(req, *_ours(kernel_set, "bf16", reason)))
    entry = plan._glue_entry()
    if entry is not None:
        if req.glue_wanted:
            plan.glue = True
            entry.quantize_glue = {}
        else:
            entry.quantize_glue = "off (profile: quantize_glue = false)"
    return plan


def _ours(kernel_set: toolchain.KernelSet | None, kernel: str, reason: str | None) -> tuple[KernelChoice | None, str | None]:
    """The choice of our `kernel` in `kernel_set`: the set that holds its code (a set without a
    form of its own takes its base set's, e.g. the AVX-512 set's attention is the AVX2 kernel),
    or None and why not (no set, or a set without that kernel, e.g. attention on Arm)."""
    if kernel_set is None:
        return None, reason
    provider = kernel_set.provider(kernel)
    if provider is None:
        return None, f"kernel set {kernel_set.name} has no {kernel} kernel"
    return KernelChoice(provider.short, kernel_set=provider.name, features=list(provider.features)), None


def _int4(req: KernelRequest, ours: KernelChoice | None, reason: str | None) -> KernelChoice:
    """int4 layers call the int4 kernels, else the generic fused form and why."""
    if req.quant_mode != "int4":
        return KernelChoice("none", reason="not int4")
    if req.staged:
        return KernelChoice("generic", reason="multi-device plan")
    return replace(ours) if ours else KernelChoice("generic", reason=reason)


def _int8(req: KernelRequest, ours: KernelChoice | None, reason: str | None) -> KernelChoice:
    """int8 matmuls (int8 layers; the int8 head of int8 and int4 bundles) call the int8 kernels:
    one-row matmuls the matrix-vector kernel ("decode": "matvec"); for int8 layers, prompts
    "matmul" (our matrix kernel, where int8_activations makes them integer matmuls and the
    profile allows), "mmt4d" (IREE's integer matmul) or "generic" (weight-only fused form)."""
    if req.quant_mode == "none" or (req.quant_mode != "int8" and req.quant_head != "int8"):
        return KernelChoice("none", reason="no int8 matmul")
    if req.staged:
        return KernelChoice("generic", reason="multi-device plan")
    if ours is None:  # integer prompt matmuls still become IREE's mmt4d (its ukernels with data tiling)
        integer = req.quant_mode == "int8" and req.int8_activations != "none"
        return KernelChoice("generic", reason=reason, prefill="mmt4d" if integer else None)
    if req.quant_mode != "int8":
        return replace(ours, decode="matvec")
    prefill = "generic" if req.int8_activations == "none" else "matmul" if req.int8_prefill_wanted else "mmt4d"
    return replace(ours, decode="matvec", prefill=prefill)


def _bf16(req: KernelRequest, ours: KernelChoice | None, reason: str | None) -> KernelChoice:
    """With `--compute-dtype bf16`, fp32 layer weights are stored bf16 in the bf16 kernel's
    layout and call it (decode "matvec", prompts "matmul") where the target has its features;
    elsewhere IREE's demotion multiplies bf16 ("iree") and why."""
    if req.compute_dtype != "bf16":
        return KernelChoice("none", reason=f"compute dtype {req.compute_dtype}")
    if req.quant_mode != "none":
        return KernelChoice("none", reason=f"{req.quant_mode} layers")
    if ours is None:
        return KernelChoice("iree", reason=reason)
    cpu = target_cpu.from_flags([*req.target.flags, *req.extra_flags])
    missing = [f for f in bf16_kernel.FEATURES if f not in cpu.features]
    if missing:
        return KernelChoice("iree", reason=f"target {cpu.describe()} lacks {', '.join(missing)}")
    return replace(ours, features=[*ours.features, *bf16_kernel.FEATURES], decode="matvec", prefill="matmul")


def _attention(req: KernelRequest, ours: KernelChoice | None, reason: str | None) -> KernelChoice:
    """Attention calls the flash-attention kernel, else IREE's own lowering and why. Block-sparse
    attention is the kernel told the pattern (`sparse` records it), except with a sliding-window
    cache, whose slots are not positions: the pattern's blocks are not the cache's."""
    if not req.attention_wanted:
        return KernelChoice("iree", reason="profile: attention_kernel = false")
    if req.dtype != "f32":
        return KernelChoice("iree", reason=f"activation dtype {req.dtype} (the kernel is f32)")
    if req.sparse and req.sparse.ring:
        return KernelChoice("iree", reason="block-sparse attention over a sliding-window (ring) cache")
    if req.staged:
        return KernelChoice("iree", reason="multi-device plan")
    if ours is None:
        return KernelChoice("iree", reason=f"block-sparse attention: {reason}" if req.sparse else reason)
    return replace(ours, sparse=f"local={req.sparse.local},global={req.sparse.global_}" if req.sparse else None)
