"""Device profiles: what an integrator declares about a machine's processors, read from TOML.

A profile lists the devices (CPU, GPU, NPU) with their IREE target, what they can run and how
fast, the links between them, and a policy (what to minimise, under which limits). The
scheduler (`scheduler.py`) turns a profile plus a model config into a partition plan; the
compiler makes each device's `Target` (compiler/target.py). The format is documented in planner/profiles/README.md.

Every problem is a `ProfileError` naming the file and the key: `x.toml: devices[1].kind: ...`.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from iree_glm.bundle.manifest import INT8_ACTIVATIONS
from iree_glm.errors import UserError

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


@dataclass(frozen=True)
class Device:
    """One processor and how to compile for it and run on it."""

    name: str
    kind: str  # cpu | gpu | npu
    hal_driver: str
    backend: str
    flags: tuple[str, ...]
    dtypes: tuple[str, ...]  # weight dtypes it can compute with
    op_classes: tuple[str, ...]
    peak_gflops: dict[str, float]  # per weight dtype, sustained GFLOP/s (or GOP/s)
    memory_bandwidth_gbs: float
    memory_gb: float
    active_power_w: float
    idle_power_w: float
    call_overhead_us: float = 50.0  # cost of one module invocation on this device
    dispatch_overhead_us: float = 0.0  # cost of each dispatch inside an invocation
    cache_mb: float = 0.0  # last-level cache: a working set this small streams at cache_bandwidth_gbs
    cache_bandwidth_gbs: float | None = None
    fresh_memory_gbs: float | None = None  # writing memory a call allocates (page faults included); default: bandwidth
    attention_gflops: float | None = None  # achieved by the attention op (default: peak f32)
    activation_dtype: str = "f32"  # what bundles compute in by default (iree_glm/activation_dtype.py)
    int8_activations: str = "none"  # which int8-weight matmuls quantize activations to int8 (none, prefill, all; passes/dequant_matmul.py)
    attention_kernel: bool = True  # llvm-cpu on an x86-64 AVX2 host: attention calls our kernel (passes/attention_kernel.py)
    int8_prefill_kernel: bool = True  # same hosts: int8 prompts' integer matmuls call our matrix kernel, not IREE's mmt4d (passes/int8_kernel.py)
    quantize_glue: bool = True  # same hosts: the int4 / int8 kernels' row quantization computes silu(gate) * up and RMSNorm itself (passes/quantize_glue.py)
    kernel_set: str = "best"  # our kernels' instruction-set level: "best" (the first the target has, kernels/toolchain.py) or a set's name
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
    bandwidth_gbs: float
    latency_us: float
    shared_memory: bool = False


@dataclass(frozen=True)
class Policy:
    objective: str = "latency"  # latency | energy | balanced
    power_budget_w: float | None = None  # average power while generating; None = no limit
    memory_reserve_gb: float = 0.0  # kept free on every device (OS, apps, activations)
    context_tokens: int | None = None  # cached positions a decode step attends to (default: the bundle's capacity)
    prefix_cache_mb: float | None = None  # runtime prefix-cache budget in MiB (0: off); recorded in bundles
    sparse_attention: str | None = None  # compile's default --sparse-attention pattern ("none": off)
    decode_batch_sizes: tuple[int, ...] | None = None  # compile's default --batch-sizes (decode entry points)
    prefill_chunk: int | None = None  # prompts prefilled in calls of at most this many tokens (0: one call); recorded in bundles


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

_DEVICE_KEYS = {
    "name": str, "kind": str, "hal_driver": str, "backend": str, "flags": list, "dtypes": list,
    "op_classes": list, "peak_gflops": dict, "memory_bandwidth_gbs": float, "memory_gb": float,
    "active_power_w": float, "idle_power_w": float, "call_overhead_us": float,
    "allow_stand_in": bool, "description": str, "dispatch_overhead_us": float, "cache_mb": float,
    "cache_bandwidth_gbs": float, "attention_gflops": float, "fresh_memory_gbs": float,
    "activation_dtype": str, "int8_activations": str, "attention_kernel": bool, "int8_prefill_kernel": bool,
    "quantize_glue": bool, "kernel_set": str,
}
# "best" or one of kernels/toolchain.py's KERNEL_SETS (named here: the planner does not import kernels/; a test checks they agree).
KERNEL_SET_CHOICES = ("best", "x86_64_avx512", "x86_64_avx2")
_DEVICE_REQUIRED = ("name", "kind", "hal_driver", "backend", "dtypes", "op_classes", "peak_gflops",
                    "memory_bandwidth_gbs", "memory_gb", "active_power_w", "idle_power_w")
_LINK_KEYS = {"between": list, "bandwidth_gbs": float, "latency_us": float, "shared_memory": bool}
_POLICY_KEYS = {"objective": str, "power_budget_w": float, "memory_reserve_gb": float, "context_tokens": int,
                "prefix_cache_mb": float, "sparse_attention": str, "decode_batch_sizes": list,
                "prefill_chunk": int}
_TOP_KEYS = {"format_version": int, "name": str, "description": str, "devices": list, "links": list, "policy": dict}


class _Checker:
    """Reads one table with a key path for messages (`devices[1].hal_driver`)."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, problem: str) -> ProfileError:
        return ProfileError(f"{self.source}: {where}: {problem}" if where else f"{self.source}: {problem}")

    def table(self, where: str, data: Any, keys: dict[str, type], required: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(where, f"expected a table, got {type(data).__name__}")
        prefix = f"{where}." if where else ""
        for k in data:
            if k not in keys:
                raise self.fail(f"{prefix}{k}", f"unknown field (known: {', '.join(keys)})")
        for k in required:
            if k not in data:
                raise self.fail(f"{prefix}{k}", "missing required key")
        out = {}
        for k, v in data.items():
            want = keys[k]
            if want is float and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            if not isinstance(v, want) or (want is int and isinstance(v, bool)):
                raise self.fail(f"{prefix}{k}", f"expected {want.__name__}, got {type(v).__name__} {v!r}")
            if want is float and v < 0:
                raise self.fail(f"{prefix}{k}", f"must not be negative (got {v})")
            out[k] = v
        return out

    def choice(self, where: str, value: str, allowed: tuple[str, ...], what: str) -> str:
        if value not in allowed:
            raise self.fail(where, f"unknown {what} '{value}' (known: {', '.join(allowed)})")
        return value

    def strings(self, where: str, values: list, allowed: tuple[str, ...] | None, what: str) -> tuple[str, ...]:
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise self.fail(f"{where}[{i}]", f"expected a string, got {v!r}")
            if allowed is not None:
                self.choice(f"{where}[{i}]", v, allowed, what)
        return tuple(values)


def _device(c: _Checker, i: int, raw: Any) -> Device:
    where = f"devices[{i}]"
    d = c.table(where, raw, _DEVICE_KEYS, _DEVICE_REQUIRED)
    c.choice(f"{where}.kind", d["kind"], KINDS, "kind")
    c.choice(f"{where}.hal_driver", d["hal_driver"], KNOWN_DRIVERS, "driver")
    c.choice(f"{where}.backend", d["backend"], BACKENDS, "backend")
    dtypes = c.strings(f"{where}.dtypes", d["dtypes"], DTYPES, "dtype")
    ops = c.strings(f"{where}.op_classes", d["op_classes"], OP_CLASSES, "op class")
    flags = c.strings(f"{where}.flags", d.get("flags", []), None, "")
    for j, f in enumerate(flags):
        if f.startswith(TUNING_SPEC) and tuning_spec_path(f[len(TUNING_SPEC):]) is None:
            raise c.fail(f"{where}.flags[{j}]", f"unknown tuning spec '{f[len(TUNING_SPEC):]}' (shipped: {', '.join(tuning_specs())})")
    act = c.choice(f"{where}.activation_dtype", d.get("activation_dtype", "f32"), ("f32", "f16", "bf16"), "activation dtype")
    # Which int8-weight matmuls quantize activations: defined by the pass that does it, imported
    # here only (it loads the compiler's MLIR bindings, which the runtime must not need).
    kernel_set = c.choice(f"{where}.kernel_set", d.get("kernel_set", "best"), KERNEL_SET_CHOICES, "kernel set")
    int8_act = c.choice(f"{where}.int8_activations", d.get("int8_activations", "none"), INT8_ACTIVATIONS, "int8_activations mode")
    peaks: dict[str, float] = {}
    for k, v in d["peak_gflops"].items():
        key = f"{where}.peak_gflops.{k}"
        c.choice(key, k, DTYPES, "dtype")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise c.fail(key, f"expected a number, got {v!r}")
        if v <= 0:
            raise c.fail(key, f"must be positive (got {v})")
        peaks[k] = float(v)
    for dt in dtypes:
        if dt not in peaks:
            raise c.fail(f"{where}.peak_gflops", f"no throughput for supported dtype '{dt}'")
    if d["memory_bandwidth_gbs"] <= 0:
        raise c.fail(f"{where}.memory_bandwidth_gbs", f"must be positive (got {d['memory_bandwidth_gbs']})")
    if d.get("cache_mb") and "cache_bandwidth_gbs" not in d:
        raise c.fail(f"{where}.cache_mb", "needs cache_bandwidth_gbs too")
    for key in ("cache_bandwidth_gbs", "attention_gflops", "fresh_memory_gbs"):
        if key in d and d[key] <= 0:
            raise c.fail(f"{where}.{key}", f"must be positive (got {d[key]})")
    if d.get("allow_stand_in") and d["kind"] != "npu":
        raise c.fail(f"{where}.allow_stand_in", "only NPUs may have a stand-in")
    if d["idle_power_w"] > d["active_power_w"]:
        raise c.fail(f"{where}.idle_power_w", "is larger than active_power_w")
    return Device(
        name=d["name"], kind=d["kind"], hal_driver=d["hal_driver"], backend=d["backend"], flags=flags,
        dtypes=dtypes, op_classes=ops, peak_gflops=peaks, memory_bandwidth_gbs=d["memory_bandwidth_gbs"],
        memory_gb=d["memory_gb"], active_power_w=d["active_power_w"], idle_power_w=d["idle_power_w"],
        call_overhead_us=d.get("call_overhead_us", 50.0), dispatch_overhead_us=d.get("dispatch_overhead_us", 0.0),
        cache_mb=d.get("cache_mb", 0.0), cache_bandwidth_gbs=d.get("cache_bandwidth_gbs"),
        attention_gflops=d.get("attention_gflops"), fresh_memory_gbs=d.get("fresh_memory_gbs"), allow_stand_in=d.get("allow_stand_in", False),
        description=d.get("description", ""), activation_dtype=act, int8_activations=int8_act,
        attention_kernel=d.get("attention_kernel", True), int8_prefill_kernel=d.get("int8_prefill_kernel", True),
        quantize_glue=d.get("quantize_glue", True), kernel_set=kernel_set,
    )


def _link(c: _Checker, i: int, raw: Any, names: set[str]) -> Link:
    where = f"links[{i}]"
    d = c.table(where, raw, _LINK_KEYS, ("between", "bandwidth_gbs", "latency_us"))
    between = c.strings(f"{where}.between", d["between"], None, "")
    if len(between) != 2 or between[0] == between[1]:
        raise c.fail(f"{where}.between", f"expected two different device names, got {list(between)}")
    for j, n in enumerate(between):
        if n not in names:
            raise c.fail(f"{where}.between[{j}]", f"unknown device '{n}' (devices: {', '.join(sorted(names))})")
    if d["bandwidth_gbs"] <= 0:
        raise c.fail(f"{where}.bandwidth_gbs", f"must be positive (got {d['bandwidth_gbs']})")
    return Link(between[0], between[1], d["bandwidth_gbs"], d["latency_us"], d.get("shared_memory", False))


def parse_profile(data: dict[str, Any], source: str) -> Profile:
    """Check a profile already read from TOML; `source` names it in error messages."""
    c = _Checker(source)
    top = c.table("", data, _TOP_KEYS, ("format_version", "name", "devices"))
    if top["format_version"] != FORMAT_VERSION:
        raise c.fail("format_version", f"this iree_glm reads version {FORMAT_VERSION}, got {top['format_version']}")
    if not top["devices"]:
        raise c.fail("devices", "at least one device is required")
    devices = tuple(_device(c, i, raw) for i, raw in enumerate(top["devices"]))
    names: set[str] = set()
    for i, d in enumerate(devices):
        if d.name in names:
            raise c.fail(f"devices[{i}].name", f"duplicate device name '{d.name}'")
        names.add(d.name)
    if not any(d.kind == "cpu" for d in devices):
        raise c.fail("devices", "a profile needs a cpu device (the host, and the fallback for what others cannot run)")
    host = next(d for d in devices if d.kind == "cpu")
    missing = [o for o in OP_CLASSES if o not in host.op_classes]
    if missing:
        i = devices.index(host)
        raise c.fail(f"devices[{i}].op_classes", f"the host cpu must run every op class (missing {', '.join(missing)})")
    links = tuple(_link(c, i, raw, names) for i, raw in enumerate(top.get("links", [])))
    seen: set[frozenset[str]] = set()
    for i, l in enumerate(links):
        if frozenset((l.a, l.b)) in seen:
            raise c.fail(f"links[{i}].between", f"a second link between '{l.a}' and '{l.b}'")
        seen.add(frozenset((l.a, l.b)))
    for i, d in enumerate(devices):
        if d is not host and not any(host.name in (l.a, l.b) and d.name in (l.a, l.b) for l in links):
            raise c.fail(f"devices[{i}]", f"no link between '{d.name}' and the host cpu '{host.name}' (add a [[links]] entry)")
    p = c.table("policy", top.get("policy", {}), _POLICY_KEYS, ())
    c.choice("policy.objective", p.get("objective", "latency"), OBJECTIVES, "objective")
    if "power_budget_w" in p and p["power_budget_w"] <= 0:
        raise c.fail("policy.power_budget_w", f"must be positive (got {p['power_budget_w']})")
    if "context_tokens" in p and p["context_tokens"] < 1:
        raise c.fail("policy.context_tokens", f"must be at least 1 (got {p['context_tokens']})")
    sparse = p.get("sparse_attention")
    if sparse is not None and sparse.strip() != "none":
        from iree_glm.bundle.sparse_pattern import parse_pattern

        try:
            parse_pattern(sparse, f"{source}: policy.sparse_attention").check_shape(f"{source}: policy.sparse_attention")
        except UserError as e:
            raise ProfileError(str(e)) from None
    sizes = p.get("decode_batch_sizes")
    if sizes is not None:
        if not sizes or any(not isinstance(b, int) or isinstance(b, bool) or b < 1 for b in sizes):
            raise c.fail("policy.decode_batch_sizes", f"expected a list of integers >= 1 (got {sizes!r})")
        if 1 not in sizes or len(set(sizes)) != len(sizes):
            raise c.fail("policy.decode_batch_sizes", f"must include 1 and no size twice (got {sizes!r})")
    if "prefill_chunk" in p and p["prefill_chunk"] < 0:
        raise c.fail("policy.prefill_chunk", f"must be 0 (whole prompt in one call) or a positive number of tokens (got {p['prefill_chunk']})")
    policy = Policy(
        objective=p.get("objective", "latency"), power_budget_w=p.get("power_budget_w"),
        memory_reserve_gb=p.get("memory_reserve_gb", 0.0), context_tokens=p.get("context_tokens"),
        prefix_cache_mb=p.get("prefix_cache_mb"),
        sparse_attention=None if sparse is None or sparse.strip() == "none" else sparse,
        decode_batch_sizes=tuple(sorted(sizes)) if sizes is not None else None,
        prefill_chunk=p.get("prefill_chunk"),
    )
    if host.memory_gb <= policy.memory_reserve_gb:
        i = devices.index(host)
        raise c.fail(f"devices[{i}].memory_gb", f"{host.memory_gb} GB leaves nothing after the policy's reserve of {policy.memory_reserve_gb} GB")
    return Profile(top["name"], top.get("description", ""), devices, links, policy, source)


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


