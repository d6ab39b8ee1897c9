"""The bundle folder: what `compile` writes and the runtime loads.

A bundle is a folder with `manifest.json` (format version, model config, entry points,
modules, every file's sha256, compile flags, package versions) beside the files it lists.
It is written into a temporary sibling folder and moved into place only when complete, so a
failed compile leaves nothing partial and never destroys the bundle that was there.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from iree_glm.bundle.model_config import ModelConfig
from iree_glm.errors import BundleError
from iree_glm.validation import ValidationError, bounded, from_data, to_data

FORMAT_VERSION = 3  # 2: per-layer KV caches updated in place; 3: functions declare their signature (bundle/signature.py)
MANIFEST = "manifest.json"
VERIFY = "verify"  # the entry point that checks draft tokens: a prefill returning every row's logits
BATCHED_DECODE = "decode_b"  # decode_b2, decode_b4, ...: a decode step of several requests, one row each


def decode_name(batch: int) -> str:
    """The decode entry point of a batch size: `decode` for one row, `decode_b{N}` for N."""
    return "decode" if batch == 1 else f"{BATCHED_DECODE}{batch}"
# Which int8-weight matmuls also quantize their activations and multiply i8 x i8 -> i32
# (passes/dequant_matmul.py): none, multi-token calls (prefill) or all.
INT8_ACTIVATIONS = ("none", "prefill", "all")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def package_versions() -> dict[str, str]:
    out = {}
    for name in ("iree_glm", "iree-base-compiler", "iree-base-runtime", "torch", "tokenizers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


@dataclass(frozen=True)
class EntryPoint:
    """One exported function: its name and the shapes it was compiled for."""

    name: str
    batch: int = bounded(min=1)
    seq_len: int | None = bounded(min=1)  # None: dynamic sequence length (prefill)
    capacity: int = bounded(min=2)  # KV-cache positions per row
    all_logits: bool = False  # logits of every row [B,S,V] (speculative verification), else the last [B,V]
    returns: str = bounded("logits", choices=("logits", "hidden"))  # "hidden": every row's final-norm hidden state (embeddings)
    # verify: a call of up to this many rows gives every row, and the KV it writes, bit for bit
    # what a one-row call gives, and one-row decode steps are one-row calls of it, so greedy
    # speculative decoding is plain decoding (docs/speculative.md). None: not so (a margin guards).
    exact_rows: int | None = bounded(None, min=2)


@dataclass
class ModuleEntry:
    """One compiled module: its file and where it runs."""

    file: str
    partition: str
    backend: str
    driver: str
    flags: list[str]


@dataclass
class KernelChoice:
    """Whether one kind of op calls our kernels in this bundle, and if not, why.

    `kernel`: the kernel set's short name ("avx2"), or "generic" / "iree" (IREE's own lowering),
    or "none" (no such op)."""

    kernel: str
    kernel_set: str | None = None  # ours: the kernel set's folder, e.g. "x86_64_avx2"
    features: list[str] | None = None  # ours: the CPU features its code uses (checked when loading)
    reason: str | None = None  # why not ours
    decode: str | None = None  # int8: what one-row matmuls call ("matvec")
    prefill: str | None = None  # int8: how prompts multiply ("matmul": ours, "mmt4d": IREE's, "generic")
    quantize_glue: dict[str, int] | str | None = None  # fused row quantizations by kind, or why none
    rewritten: int | None = None  # attention: ops that call the kernel ...
    left_to_iree: int | None = None  # ... and ops of another form, left to IREE
    sparse: str | None = None  # attention: the block-sparse pattern it skips key blocks by ("local=W,global=G")

    @property
    def ours(self) -> bool:
        return self.kernel not in ("generic", "iree", "none")


@dataclass
class QuantRecord:
    """How the bundle's weights were quantized (transforms/quantize.py's QuantSpec, as run)."""

    mode: str = bounded(choices=("none", "int8", "int4"))
    head: str | None = None
    embeddings: str | None = None
    group_size: int | None = bounded(None, min=1)
    int8_activations: str | None = bounded(None, choices=INT8_ACTIVATIONS)


@dataclass
class StageEntry:
    """One device's module in a multi-device bundle, in the order the runtime runs them."""

    index: int = bounded(min=0)
    device: str
    parts: list[str]
    file: str
    device_driver: str
    stand_in: bool  # compiled for the CPU: the device has no IREE target (an NPU)
    allow_stand_in: bool
    cache_layers: list[int]


@dataclass
class PlanEntry:
    """One plan a bundle can run. A plan decodes on the bundle's decode placement (its main
    module, or `options.stages`) unless it names a `decode_module` of its own (one device for
    both phases; switching to or from it moves the live KV cache); a phase-split plan prefills
    prompts on its own stage modules and hands the prompt's KV cache to the decode devices. The
    estimates (the profile's cost model) let the runtime choose a plan for a power budget."""

    name: str
    prefill_stages: list[StageEntry] | None  # None: prompts are prefilled on the decode placement
    power_w: float = bounded(min=0.0)  # estimated draw of the busier phase (devices in use active, the rest idle)
    prefill_ms: float = bounded(min=0.0)  # estimated, for `prompt_tokens`
    handoff_ms: float = bounded(min=0.0)  # estimated KV hand-off of that prompt
    decode_ms: float = bounded(min=0.0)  # estimated per token
    prompt_tokens: int = bounded(min=1)
    reasons: list[str] = field(default_factory=list)
    decode_module: str | None = None  # a module file of its own for both phases (None: the main module)
    decode_device: str | None = None  # the profile device that module runs on


@dataclass
class TargetCpuRecord:
    """The CPU an llvm-cpu bundle was compiled for and the instruction-set features its code may
    use: a machine without one of them refuses the bundle in one line (never SIGILL)."""

    arch: str
    cpu: str
    features: list[str]


@dataclass
class BundleOptions:
    """What the build chose, and what the runtime reads back."""

    max_context: int = bounded(min=2)
    dtype: str
    activation_dtype: str = bounded(choices=("f32", "f16", "bf16"))
    kv_cache_slots: int = bounded(min=2)  # KV positions per row (a sliding window has fewer than max_context)
    quant: QuantRecord
    parameter_bytes: int = bounded(min=0)
    compression_vs_fp32: float = bounded(min=0.0)
    attention_kernel: KernelChoice
    plan: str = "plan.json"
    prune: str | None = None
    sparse_attention: str | None = None
    prefix_cache_mb: float | None = bounded(None, min=0.0)
    prefill_chunk: int | None = bounded(None, min=0)
    int4_kernel: KernelChoice | None = None
    int8_kernel: KernelChoice | None = None
    bf16_kernel: KernelChoice | None = None  # --compute-dtype bf16: the layers' bf16 kernels (or IREE's demotion, why)
    stages: list[StageEntry] | None = None  # the decode placement's stages (None: one module, modules[0])
    plans: list[PlanEntry] | None = None  # plans the runtime can switch between; the first is the default
    target_cpu: TargetCpuRecord | None = None  # llvm-cpu bundles
    compute_dtype: str = bounded("f32", choices=("f32", "bf16"))  # bf16: f32 matmuls multiply bf16-rounded inputs (compiler/compute_dtype.py)


@dataclass
class Manifest:
    model: ModelConfig
    max_context: int = bounded(min=2)
    entry_points: list[EntryPoint]
    modules: list[ModuleEntry]
    parameters: str
    parameter_scope: str
    tokenizer: str | None
    source: dict[str, str | None]
    profile: str
    options: BundleOptions
    files: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=package_versions)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        data = to_data(self)
        data["model"] = self.model.to_dict()
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str = MANIFEST) -> "Manifest":
        """A manifest, every field checked (a bundle's numbers are trusted only after this)."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BundleError(f"{where}: not valid JSON ({e})") from None
        if isinstance(data, dict) and data.get("format_version") != FORMAT_VERSION:
            raise BundleError(f"{where}: bundle format {data.get('format_version')}, this runtime reads {FORMAT_VERSION}; recompile it")
        try:
            return from_data(cls, data, where)
        except ValidationError as e:
            raise BundleError(f"{e} (recompile the bundle)") from None


def _check_file_names(manifest: Manifest, where: Path) -> None:
    """Every file the runtime opens is a plain name in the bundle folder, listed (hashed) in
    `files`: an edited manifest cannot make the runtime read a file outside the bundle."""
    for name in manifest.files:
        if not name or "/" in name or "\\" in name or name in (".", "..") or name == MANIFEST:
            raise BundleError(f"{where}: files: '{name}' is not a file name in the bundle folder (recompile the bundle)")
    opened = [("parameters", manifest.parameters), ("tokenizer", manifest.tokenizer)]
    opened += [(f"modules[{i}].file", m.file) for i, m in enumerate(manifest.modules)]
    for key, name in opened:
        if name is not None and name not in manifest.files:
            raise BundleError(f"{where}: {key}: '{name}' is not a file listed (hashed) in the manifest (recompile the bundle)")
    if not manifest.modules:
        raise BundleError(f"{where}: modules: the bundle lists no compiled module (recompile the bundle)")
    compiled = {m.file for m in manifest.modules}
    staged = [(f"options.stages[{i}].file", s.file) for i, s in enumerate(manifest.options.stages or [])]
    for i, plan in enumerate(manifest.options.plans or []):
        staged += [(f"options.plans[{i}].prefill_stages[{j}].file", s.file) for j, s in enumerate(plan.prefill_stages or [])]
        if plan.decode_module is not None:
            staged.append((f"options.plans[{i}].decode_module", plan.decode_module))
    for key, name in staged:
        if name not in compiled:
            raise BundleError(f"{where}: {key}: '{name}' is not one of the bundle's modules (recompile the bundle)")


def read_manifest(bundle: Path, verify: bool = True) -> Manifest:
    """Read a bundle's manifest; with `verify`, check that every listed file exists and matches its hash."""
    bundle = Path(bundle)
    path = bundle / MANIFEST
    if not bundle.is_dir():
        raise BundleError(f"{bundle}: not a bundle folder")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BundleError(f"{path}: missing (is this a bundle made by iree_glm.compile?)") from None
    except OSError as e:
        raise BundleError(f"{path}: cannot read it ({e.strerror})") from None
    manifest = Manifest.from_json(text, str(path))
    _check_file_names(manifest, path)
    if verify:
        for name, digest in manifest.files.items():
            f = bundle / name
            if not f.is_file():
                raise BundleError(f"{f}: listed in the manifest but missing")
            if sha256_file(f) != digest:
                raise BundleError(f"{f}: sha256 does not match the manifest (file changed or corrupt)")
    return manifest


