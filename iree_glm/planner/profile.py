"""Device profiles: what an integrator declares about a machine's processors, read from TOML.

A profile lists the devices (CPU, GPU, NPU) with their IREE target, what they can run and how
fast, the links between them, and a policy (what to minimise, under which limits). The
scheduler (`scheduler.py`) turns a profile plus a model config into a partition plan; the
compiler makes each device's `Target` (compiler/target.py). The format is documented in planner/profiles/README.md.

Every problem is a `ProfileError` naming the file and the key: `x.toml: devices[1].kind: ...`; types,
NaN/inf, bounds and unknown keys are checked by iree_glm/validation.py, the relations here.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from iree_glm.bundle.manifest import INT8_ACTIVATIONS
from iree_glm.errors import UserError
from iree_glm.validation import ValidationError, bounded, from_data

FORMAT_VERSION = 1
KINDS = ("cpu", "gpu", "npu")
OBJECTIVES = ("latency", "energy", "balanced")
DTYPES = ("f32", "f16", "bf16", "int8", "int4")
OP_CLASSES = ("gather", "matmul", "attention", "rope", "norm", "elementwise")
# HAL drivers IREE ships (a given runtime build has a subset of them) ...
IREE_DRIVERS = ("local-task", "local-sync", "vulkan", "cuda", "hip", "metal", "webgpu", "amdgpu", "xrt", "null")
# ... and NPU driver names profiles may use although no IREE runtime here provides them.
NPU_DRIVERS = ("qnn-htp", "neuron-apu", "xrt")
KNOWN_DRIVERS = tuple(dict.fromkeys(IREE_DRIVERS + NPU_DRIVERS))
BACKENDS = ("llvm-cpu", "vulkan-spirv", "cuda", "rocm", "metal-spirv", "webgpu-spirv", "amd-aie", "qnn", "neuron")
# A device's flags may contain this entry: it expands to iree_glm's defaults for the backend
# (compiler/target.py's HOST_CPU_FLAGS for llvm-cpu, VULKAN_FLAGS for vulkan-spirv).
DEFAULT_FLAGS = "@defaults"
# "@tuning-spec:NAME" expands to --iree-codegen-tuning-spec-path of our spec passes/tuning/NAME.mlir.
TUNING_SPEC = "@tuning-spec:"


def tuning_spec_path(name: str) -> Path | None:
    """The shipped transform-dialect tuning spec `name` (passes/tuning/NAME.mlir), or None."""
    spec = resources.files("iree_glm.passes") / "tuning" / f"{name}.mlir"
    return Path(str(spec)) if spec.is_file() else None


def tuning_specs() -> list[str]:
    return sorted(p.name[:-5] for p in (resources.files("iree_glm.passes") / "tuning").iterdir() if p.name.endswith(".mlir"))


class ProfileError(UserError):
    """A device profile that cannot be read or does not make sense."""


# "best" or one of kernels/toolchain.py's KERNEL_SETS (named here: the planner does not import kernels/; a test checks they agree).
KERNEL_SET_CHOICES = ("best", "x86_64_amx", "x86_64_avx512", "x86_64_avx2", "aarch64_i8mm", "aarch64_dotprod")


@dataclass(frozen=True)
class Device:
    """One processor and how to compile for it and run on it."""

    name: str
    kind: str = bounded(choices=KINDS)
    hal_driver: str = bounded(choices=KNOWN_DRIVERS)
    backend: str = bounded(choices=BACKENDS)
    dtypes: tuple[Literal[DTYPES], ...]  # weight dtypes it can compute with
    op_classes: tuple[Literal[OP_CLASSES], ...]
    peak_gflops: dict[Literal[DTYPES], float]  # per weight dtype, sustained GFLOP/s (or GOP/s)
    memory_bandwidth_gbs: float = bounded(min=0.0)
    memory_gb: float = bounded(min=0.0)
    active_power_w: float = bounded(min=0.0)
    idle_power_w: float = bounded(min=0.0)
    flags: tuple[str, ...] = ()
    call_overhead_us: float = bounded(50.0, min=0.0)  # cost of one module invocation on this device
    dispatch_overhead_us: float = bounded(0.0, min=0.0)  # cost of each dispatch inside an invocation
    cache_mb: float = bounded(0.0, min=0.0)  # last-level cache: a working set this small streams at cache_bandwidth_gbs
    cache_bandwidth_gbs: float | None = bounded(None, min=0.0)
    fresh_memory_gbs: float | None = bounded(None, min=0.0)  # writing memory a call allocates (page faults included); default: bandwidth
    attention_gflops: float | None = bounded(None, min=0.0)  # achieved by the attention op (default: peak f32)
    activation_dtype: str = bounded("f32", choices=("f32", "f16", "bf16"))  # what bundles compute in by default (iree_glm/activation_dtype.py)
    compute_dtype: str = bounded("f32", choices=("f32", "bf16"))  # what f32 matmuls multiply in by default (compiler/compute_dtype.py)
    int8_activations: str = bounded("none", choices=INT8_ACTIVATIONS)  # which int8-weight matmuls quantize activations to int8 (none, prefill, all; passes/dequant_matmul.py)
    attention_kernel: bool = True  # llvm-cpu on an x86-64 AVX2 host: attention calls our kernel (passes/attention_kernel.py)
    int8_prefill_kernel: bool = True  # same hosts: int8 prompts' integer matmuls call our matrix kernel, not IREE's mmt4d (passes/int8_kernel.py)
    quantize_glue: bool = True  # same hosts: the int4 / int8 kernels' row quantization computes silu(gate) * up and RMSNorm itself (passes/quantize_glue.py)
    kernel_set: str = bounded("best", choices=KERNEL_SET_CHOICES)  # our kernels' instruction-set level: "best" (the first the target has, kernels/toolchain.py) or a set's name
    allow_stand_in: bool = False  # NPU only: may run on the CPU when its driver is absent
    description: str = ""

    def supports(self, dtype: str, ops: tuple[str, ...]) -> str | None:
        """None if the device can run ops on weights of `dtype`; otherwise why not."""
        if dtype not in self.dtypes:
            return f"{self.name} has no {dtype}"
        missing = [o for o in ops if o not in self.op_classes]
        if missing:
            return f"{self.name} has no {missing[0]}"
        return None

    def bandwidth_gbs(self, working_set_bytes: float) -> float:
        """Streaming bandwidth for a working set read once per token: cache-resident if it fits."""
        if self.cache_mb and self.cache_bandwidth_gbs and working_set_bytes <= self.cache_mb * 2**20:
            return self.cache_bandwidth_gbs
        return self.memory_bandwidth_gbs


@dataclass(frozen=True)
class Link:
    """How activations move between two devices (both directions)."""

    a: str
    b: str
    bandwidth_gbs: float = bounded(min=0.0)
    latency_us: float = bounded(min=0.0)
    shared_memory: bool = False


@dataclass(frozen=True)
class Policy:
    objective: str = bounded("latency", choices=OBJECTIVES)  # latency | energy | balanced
    power_budget_w: float | None = bounded(None, min=0.0)  # average power while generating; None = no limit
    memory_reserve_gb: float = bounded(0.0, min=0.0)  # kept free on every device (OS, apps, activations)
    context_tokens: int | None = bounded(None, min=1)  # cached positions a decode step attends to (default: the bundle's capacity)
    prefix_cache_mb: float | None = bounded(None, min=0.0)  # runtime prefix-cache budget in MiB (0: off); recorded in bundles
    sparse_attention: str | None = None  # compile's default --sparse-attention pattern ("none": off)
    decode_batch_sizes: tuple[int, ...] | None = None  # compile's default --batch-sizes (decode entry points)
    prefill_chunk: int | None = bounded(None, min=0)  # prompts prefilled in calls of at most this many tokens (0: one call); recorded in bundles


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    devices: tuple[Device, ...]
    links: tuple[Link, ...]
    policy: Policy
    source: str = ""  # file it was read from (for messages)
    format_version: int = FORMAT_VERSION

    def device(self, name: str) -> Device:
        for d in self.devices:
            if d.name == name:
                return d
        raise KeyError(name)

    @property
    def host(self) -> Device:
        """The first CPU: where the token loop runs and what unsupported parts fall back to."""
        return next(d for d in self.devices if d.kind == "cpu")

    def link(self, a: str, b: str) -> Link | None:
        for l in self.links:
            if {l.a, l.b} == {a, b}:
                return l
        return None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("source")
        return d


# -- reading and checking ---------------------------------------------------------------------

@dataclass(frozen=True)
class LinkTable:
    """A `[[links]]` table as written (`between` names the two devices)."""

    between: tuple[str, ...]
    bandwidth_gbs: float = bounded(min=0.0)
    latency_us: float = bounded(min=0.0)
    shared_memory: bool = False


@dataclass(frozen=True)
class ProfileTable:
    """A profile file as written; types, NaN/inf, bounds and unknown keys are checked by
    iree_glm/validation.py, the relations between fields by `parse_profile`."""

    format_version: int
    name: str
    devices: tuple[Device, ...]
    description: str = ""
    links: tuple[LinkTable, ...] = ()
    policy: Policy = Policy()


def _fail(source: str, where: str, problem: str) -> ProfileError:
    return ProfileError(f"{source}: {where}: {problem}" if where else f"{source}: {problem}")


def _check_device(source: str, i: int, d: Device) -> None:
    where = f"devices[{i}]"
    for j, f in enumerate(d.flags):
        if f.startswith(TUNING_SPEC) and tuning_spec_path(f[len(TUNING_SPEC):]) is None:
            raise _fail(source, f"{where}.flags[{j}]", f"unknown tuning spec '{f[len(TUNING_SPEC):]}' (shipped: {', '.join(tuning_specs())})")
    for k, v in d.peak_gflops.items():
        if v <= 0:
            raise _fail(source, f"{where}.peak_gflops.{k}", f"must be positive (got {v})")
    for dt in d.dtypes:
        if dt not in d.peak_gflops:
            raise _fail(source, f"{where}.peak_gflops", f"no throughput for supported dtype '{dt}'")
    if d.memory_bandwidth_gbs <= 0:
        raise _fail(source, f"{where}.memory_bandwidth_gbs", f"must be positive (got {d.memory_bandwidth_gbs})")
    if d.cache_mb and d.cache_bandwidth_gbs is None:
        raise _fail(source, f"{where}.cache_mb", "needs cache_bandwidth_gbs too")
    for key in ("cache_bandwidth_gbs", "attention_gflops", "fresh_memory_gbs"):
        if getattr(d, key) is not None and getattr(d, key) <= 0:
            raise _fail(source, f"{where}.{key}", f"must be positive (got {getattr(d, key)})")
    if d.allow_stand_in and d.kind != "npu":
        raise _fail(source, f"{where}.allow_stand_in", "only NPUs may have a stand-in")
    if d.idle_power_w > d.active_power_w:
        raise _fail(source, f"{where}.idle_power_w", "is larger than active_power_w")


def _link(source: str, i: int, t: LinkTable, names: set[str]) -> Link:
    where = f"links[{i}]"
    if len(t.between) != 2 or t.between[0] == t.between[1]:
        raise _fail(source, f"{where}.between", f"expected two different device names, got {list(t.between)}")
    for j, n in enumerate(t.between):
        if n not in names:
            raise _fail(source, f"{where}.between[{j}]", f"unknown device '{n}' (devices: {', '.join(sorted(names))})")
    if t.bandwidth_gbs <= 0:
        raise _fail(source, f"{where}.bandwidth_gbs", f"must be positive (got {t.bandwidth_gbs})")
    return Link(t.between[0], t.between[1], t.bandwidth_gbs, t.latency_us, t.shared_memory)


def parse_profile(data: dict[str, Any], source: str) -> Profile:
    """Check a profile already read from TOML; `source` names it in error messages."""
    if isinstance(data, dict) and "format_version" in data and data["format_version"] != FORMAT_VERSION:
        raise _fail(source, "format_version", f"this iree_glm reads version {FORMAT_VERSION}, got {data['format_version']!r}")
    try:
        top = from_data(ProfileTable, data, source)
    except ValidationError as e:
        raise ProfileError(str(e)) from None
    if not top.devices:
        raise _fail(source, "devices", "at least one device is required")
    devices = top.devices
    names: set[str] = set()
    for i, d in enumerate(devices):
        _check_device(source, i, d)
        if d.name in names:
            raise _fail(source, f"devices[{i}].name", f"duplicate device name '{d.name}'")
        names.add(d.name)
    if not any(d.kind == "cpu" for d in devices):
        raise _fail(source, "devices", "a profile needs a cpu device (the host, and the fallback for what others cannot run)")
    host = next(d for d in devices if d.kind == "cpu")
    missing = [o for o in OP_CLASSES if o not in host.op_classes]
    if missing:
        i = devices.index(host)
        raise _fail(source, f"devices[{i}].op_classes", f"the host cpu must run every op class (missing {', '.join(missing)})")
    links = tuple(_link(source, i, t, names) for i, t in enumerate(top.links))
    seen: set[frozenset[str]] = set()
    for i, l in enumerate(links):
        if frozenset((l.a, l.b)) in seen:
            raise _fail(source, f"links[{i}].between", f"a second link between '{l.a}' and '{l.b}'")
        seen.add(frozenset((l.a, l.b)))
    for i, d in enumerate(devices):
        if d is not host and not any(host.name in (l.a, l.b) and d.name in (l.a, l.b) for l in links):
            raise _fail(source, f"devices[{i}]", f"no link between '{d.name}' and the host cpu '{host.name}' (add a [[links]] entry)")
    policy = top.policy
    if policy.power_budget_w is not None and policy.power_budget_w <= 0:
        raise _fail(source, "policy.power_budget_w", f"must be positive (got {policy.power_budget_w})")
    sparse = policy.sparse_attention
    if sparse is not None and sparse.strip() != "none":
        from iree_glm.bundle.sparse_pattern import parse_pattern

        try:
            parse_pattern(sparse, f"{source}: policy.sparse_attention").check_shape(f"{source}: policy.sparse_attention")
        except UserError as e:
            raise ProfileError(str(e)) from None
    sizes = policy.decode_batch_sizes
    if sizes is not None:
        if not sizes or any(b < 1 for b in sizes):
            raise _fail(source, "policy.decode_batch_sizes", f"expected a list of integers >= 1 (got {list(sizes)!r})")
        if 1 not in sizes or len(set(sizes)) != len(sizes):
            raise _fail(source, "policy.decode_batch_sizes", f"must include 1 and no size twice (got {list(sizes)!r})")
    policy = replace(policy, sparse_attention=None if sparse is None or sparse.strip() == "none" else sparse,
                     decode_batch_sizes=tuple(sorted(sizes)) if sizes is not None else None)
    if host.memory_gb <= policy.memory_reserve_gb:
        i = devices.index(host)
        raise _fail(source, f"devices[{i}].memory_gb", f"{host.memory_gb} GB leaves nothing after the policy's reserve of {policy.memory_reserve_gb} GB")
    return Profile(top.name, top.description, devices, links, policy, source)


def shipped_profiles() -> list[str]:
    """Names of the profiles that come with iree_glm."""
    files = resources.files("iree_glm.planner.profiles")
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".toml"))


def load_profile(name_or_path: str | Path) -> Profile:
    """A shipped profile by name (`host-cpu`) or a TOML file by path."""
    text_path = str(name_or_path)
    path = Path(text_path)
    if text_path.endswith(".toml") or path.exists() or "/" in text_path:
        source = text_path
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise ProfileError(f"{source}: no such profile file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ProfileError(f"{source}: cannot read ({e})") from None
    else:
        res = resources.files("iree_glm.planner.profiles") / f"{text_path}.toml"
        if not res.is_file():
            raise ProfileError(f"unknown profile '{text_path}' (shipped: {', '.join(shipped_profiles())}; or give a .toml file)")
        source = f"profiles/{text_path}.toml"
        text = res.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{source}: not valid TOML ({e})") from None
    return parse_profile(data, source)


