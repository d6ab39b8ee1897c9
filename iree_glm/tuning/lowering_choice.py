"""Choose the host's lowering by measuring it here: flag variants and the prefill chunk size.

`python -m iree_glm.profile calibrate --driver local-task --lowering` builds a few layers of a
model (seeded random weights with the shape of `--lowering-checkpoint`, default the built-in
model) once per flag variant, times a prefill of `prompt_len` tokens with each in interleaved
rounds (so every variant sees the same machine load), then times the winner's prefill in
chunks of each candidate size. Where this CPU runs more than one of our kernel sets (an
AVX-512 VNNI machine runs the AVX2 set too), it then times int8 and int4 prefills (the formats
whose prompts call the kernels) with each set. The winners go into the written profile: the
device's `flags` (`@defaults` plus the overrides that won), `kernel_set` and
`policy.prefill_chunk`.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

# Each variant overrides flags of lowering.HOST_CPU_FLAGS (same option name, other value).
VARIANTS: dict[str, tuple[str, ...]] = {
    "defaults": (),
    "no-ukernels": ("--iree-llvmcpu-enable-ukernels=none",),
    "no-data-tiling": ("--iree-global-opt-data-tiling=false",),
}
CHUNKS = (0, 64, 128, 256)  # tokens per prefill call; 0: the whole prompt in one call


@dataclass
class LoweringChoice:
    variant: str
    flags: tuple[str, ...]  # overrides of the defaults that won
    prefill_chunk: int
    variant_ms: dict[str, float]  # median prefill of the whole prompt per variant
    chunk_ms: dict[int, float]  # median prefill with the winning flags per chunk size
    prompt_len: int
    layers: int
    kernel_set: str = "best"  # the kernel set that won ("best": only one runs here)
    kernel_set_ms: dict[str, float] = field(default_factory=dict)  # int8 + int4 prefill medians per set

    def summary(self) -> str:
        variants = ", ".join(f"{k} {v:.0f} ms" for k, v in self.variant_ms.items())
        chunks = ", ".join(f"{k or 'off'} {v:.0f} ms" for k, v in self.chunk_ms.items())
        sets = "".join("; kernel sets (int8 + int4) " + ", ".join(f"{k} {v:.0f} ms" for k, v in self.kernel_set_ms.items())
                       for _ in [0] if self.kernel_set_ms)
        return (f"prefill of {self.prompt_len} tokens, {self.layers} layers, medians: flags {variants}; "
                f"chunks ({self.variant}) {chunks}{sets}")


def _slice_checkpoint(checkpoint: Path | None, layers: int, folder: Path) -> tuple[Path, int]:
    """A seeded random checkpoint with the shape of `checkpoint` (or the built-in model) and `layers` layers."""
    from iree_glm.frontend import default_model
    from iree_glm.frontend.checkpoint import random_model, write_checkpoint
    from iree_glm.frontend.hf_config import read_hf_config

    cfg = read_hf_config(checkpoint / "config.json") if checkpoint else default_model.CONFIG
    cfg = replace(cfg, num_layers=min(layers, cfg.num_layers))
    out = folder / "sliced"
    write_checkpoint(random_model(cfg, seed=0), out)
    return out, cfg.num_layers


def _medians(sessions: dict, ids: list[int], chunks: dict, rounds: int) -> dict:
    """Median wall time (ms) of a prefill of `ids` per key, rounds interleaved across keys."""
    times: dict = {k: [] for k in chunks}
    caches = {k: sessions[k].new_cache() for k in chunks}
    for k in chunks:  # warm-up
        sessions[k].prefill_chunk = chunks[k]
        sessions[k].run_prefill(ids, 0, caches[k])
    for _ in range(rounds):
        for k in chunks:
            sessions[k].prefill_chunk = chunks[k]
            t = time.perf_counter()
            sessions[k].run_prefill(ids, 0, caches[k])
            times[k].append((time.perf_counter() - t) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def choose(checkpoint: Path | None = None, layers: int = 2, prompt_len: int = 512, rounds: int = 3,
           variants: dict[str, tuple[str, ...]] = VARIANTS, chunks: tuple[int, ...] = CHUNKS,
           progress: Callable[[str], None] = lambda m: None) -> LoweringChoice:
    """Measure each flag variant and chunk size on this machine; returns the fastest of each."""
    from iree_glm.compiler.build import BuildOptions, build_bundle
    from iree_glm.runtime import Session

    with tempfile.TemporaryDirectory(prefix="iree_glm-lowering-") as work:
        work = Path(work)
        ckpt, layers = _slice_checkpoint(checkpoint, layers, work)
        sessions = {}
        for name, flags in variants.items():
            progress(f"lowering: building {name}")
            out = work / f"bundle-{name}"
            build_bundle(ckpt, out, BuildOptions(max_context=prompt_len + 1, extra_flags=flags))
            sessions[name] = Session.load(out, verify=False)
        vocab = next(iter(sessions.values())).config.vocab_size
        ids = [(i * 7919) % vocab for i in range(1, prompt_len + 1)]
        progress("lowering: timing the flag variants")
        variant_ms = _medians(sessions, ids, {name: 0 for name in variants}, rounds)
        best = min(variant_ms, key=variant_ms.get)
        progress(f"lowering: timing prefill chunks with {best}")
        chunk_ms = _medians({c: sessions[best] for c in chunks}, ids, {c: c for c in chunks}, rounds)
        chunk = min(chunk_ms, key=chunk_ms.get)
        kernel_set, kernel_set_ms = _choose_kernel_set(ckpt, work, variants[best], prompt_len, chunk, rounds, progress)
        return LoweringChoice(best, variants[best], chunk, variant_ms, chunk_ms, prompt_len, layers, kernel_set, kernel_set_ms)


def host_kernel_sets(flags: tuple[str, ...] = ()) -> list[str]:
    """Our kernel sets a host bundle can link on this machine (best first)."""
    from iree_glm.compiler.target import host_cpu_target
    from iree_glm.kernels import target_cpu, toolchain

    cpu = target_cpu.from_flags([*host_cpu_target().flags, *flags])
    return [s.name for s in toolchain.KERNEL_SETS
            if s.arch == cpu.arch and cpu.has(s.features) and toolchain.unavailable_reason(s) is None]


def _choose_kernel_set(ckpt: Path, work: Path, flags: tuple[str, ...], prompt_len: int, chunk: int, rounds: int,
                       progress: Callable[[str], None]) -> tuple[str, dict[str, float]]:
    """The kernel set whose int8 and int4 prefills (summed medians) are fastest here; "best"
    without timing anything where only one set (or none) runs."""
    from iree_glm.compiler.build import BuildOptions, build_bundle
    from iree_glm.runtime import Session
    from iree_glm.transforms.quantize import QuantSpec

    sets = host_kernel_sets(flags)
    if len(sets) < 2:
        return "best", {}
    sessions = {}
    for name in sets:
        for mode in ("int8", "int4"):
            progress(f"lowering: building {mode} with {name}")
            out = work / f"bundle-{name}-{mode}"
            build_bundle(ckpt, out, BuildOptions(max_context=prompt_len + 1, extra_flags=flags, quant=QuantSpec(mode),
                                                 int8_activations="prefill", kernel_set=name))
            sessions[(name, mode)] = Session.load(out, verify=False)
    vocab = next(iter(sessions.values())).config.vocab_size
    ids = [(i * 7919) % vocab for i in range(1, prompt_len + 1)]
    progress("lowering: timing the kernel sets")
    ms = _medians(sessions, ids, {key: chunk for key in sessions}, rounds)
    per_set = {name: ms[(name, "int8")] + ms[(name, "int4")] for name in sets}
    return min(per_set, key=per_set.get), per_set
