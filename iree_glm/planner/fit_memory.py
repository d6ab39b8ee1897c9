"""`compile --fit-memory`: the weight quantization and context that fit a device's memory.

The budget is the profile's memory minus its reserve: the host CPU's `memory_gb` minus
`policy.memory_reserve_gb`, plus the memory of devices that do not share it (no
`shared_memory` link to the host). A bundle needs, while it serves:
  - its weights, counted exactly: the model is built on torch's meta device (no data) and
    quantized as `compile --quant` would, and the packed tensors' bytes are summed;
  - the KV cache at that context (f32 K and V of every layer), once per decode stream (the
    largest `--batch-sizes` entry);
  - the runtime's working set while a prompt that fills the context is prefilled in calls of
    the profile's `prefill_chunk` tokens: a fixed base (Python, the IREE runtime, the
    tokenizer), extra copies of the KV cache (the attended keys gathered per call), the
    activations of one call, and the attention scores (IREE materializes them per query head:
    rows x keys, several buffers of the last, largest call; the runtime's allocator also keeps
    a share of the smaller calls' buffers). The constants come from peak RSS measured on the
    default model at contexts 1k and 4k, chunks 256 / 1024 / whole prompt and a sparse pattern
    (`python tools/fit_memory_check.py`); the estimate is at or above every measurement;
  - the prefix cache's budget: the profile's `prefix_cache_mb`, else the runtime's default
    (512 MiB, what `serve` uses for a bundle whose profile sets none).
Choice: the most exact weights (none, then int8, then int4) that fit with a useful context,
i.e. the largest of target, target/2, ... down to `min_context`; nothing fits -> UserError.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from iree_glm.bundle.model_config import ModelConfig
from iree_glm.errors import UserError
from iree_glm.planner.profile import Profile
from iree_glm.transforms.quantize import QuantSpec
from iree_glm.bundle.kv_layout import DEFAULT_BUDGET_BYTES

QUANT_ORDER = ("none", "int8", "int4")  # most exact first
MIN_USEFUL_CONTEXT = 512
MiB = 2**20
# Fitted to peak RSS of the default model's bundles (tools/fit_memory_check.py): a
# loaded session is ~80 MiB with its 20 MiB of weights; a 4k prompt in calls of 256 tokens adds
# ~1.5 KV caches beyond the cache itself, ~5 score-sized buffers of the last call and ~70% of
# the score buffers of all calls (kept by the allocator as the key count grows per call).
RUNTIME_BASE_BYTES = 60 * MiB
KV_EXTRA_COPIES = 1.5  # the attended keys gathered into a packed copy per call, and staging
ACTIVATION_FACTOR = 2.0  # x 4 bytes x (hidden + intermediate + vocab) per token of a call
SCORE_BUFFERS = 5  # f32 score-sized buffers per query head of the last (largest) call
KEPT_SCORE_SHARE = 0.7  # share of every call's score buffers still held at the peak

@dataclass(frozen=True)
class Need:
    weights: int
    kv_cache: int
    working_set: int
    prefix_cache: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.working_set + self.prefix_cache

    def __str__(self) -> str:
        return (f"weights {self.weights / MiB:.1f} + KV {self.kv_cache / MiB:.1f} + working set "
                f"{self.working_set / MiB:.1f} + prefix cache {self.prefix_cache / MiB:.1f} = {self.total / MiB:.1f} MiB")


@dataclass(frozen=True)
class Choice:
    quant: str
    context: int
    need: Need
    budget: int
    report: tuple[str, ...]  # one line per candidate weight format, then the reason


def weight_bytes(cfg: ModelConfig, quant: QuantSpec) -> int:
    """Bytes of the bundle's parameter tensors for `quant`, from shapes only (meta device)."""
    import torch

    from iree_glm.frontend.model import CausalLM
    from iree_glm.transforms.quantize import quantize_model, state_bytes

    with torch.device("meta"):
        model = quantize_model(CausalLM(cfg), quant)
    return state_bytes(model.state_dict())


def kv_cache_bytes(cfg: ModelConfig, context: int) -> int:
    """f32 K and V for every layer at `context` positions, one sequence."""
    return 2 * cfg.num_layers * cfg.num_kv_heads * context * cfg.head_dim * 4


def working_set_bytes(cfg: ModelConfig, context: int, attended: int | None = None, chunk: int | None = None) -> int:
    """Runtime memory beyond weights and one KV cache while a full-context prompt is prefilled
    in calls of `chunk` tokens (None or 0: one call); `attended`: keys each query sees (default:
    every earlier position; fewer with sparse attention)."""
    chunk = min(chunk or context, context)

    def scores(first: int) -> int:  # score bytes of the call prefilling first..first+chunk
        rows = min(chunk, context - first)
        keys = min(first + rows, attended or context)
        return 4 * cfg.num_heads * rows * keys

    calls = [scores(first) for first in range(0, context, chunk)]
    activations = ACTIVATION_FACTOR * 4 * (cfg.hidden_size + cfg.intermediate_size + cfg.vocab_size) * chunk
    return int(RUNTIME_BASE_BYTES + KV_EXTRA_COPIES * kv_cache_bytes(cfg, context) + activations
               + SCORE_BUFFERS * calls[-1] + KEPT_SCORE_SHARE * sum(calls))


def budget_bytes(profile: Profile) -> int:
    """What a bundle may use on `profile`: the host pool after the reserve, plus unshared devices."""
    host = profile.host
    pool = (host.memory_gb - profile.policy.memory_reserve_gb) * 1e9
    for d in profile.devices:
        link = profile.link(host.name, d.name)
        if d is not host and not (link is not None and link.shared_memory):
            pool += d.memory_gb * 1e9
    return int(pool)


def attended_keys(sparse) -> int | None:
    """Keys a query attends to under a sparse pattern (globals, window, one partial block)."""
    return None if sparse is None else sparse.global_ + sparse.local + sparse.block


def need(cfg: ModelConfig, weights: int, context: int, streams: int, prefix_cache: int, attended: int | None = None,
         cache_slots: int | None = None, chunk: int | None = None) -> Need:
    """`cache_slots`: a sliding-window KV cache's size (it does not grow with the context);
    `chunk`: tokens per prefill call (None: the whole prompt in one)."""
    kv = kv_cache_bytes(cfg, cache_slots or context) * streams
    return Need(weights, kv, working_set_bytes(cfg, context, attended, chunk), prefix_cache)


def contexts(target: int, min_context: int) -> list[int]:
    """target, target/2, ... while >= min_context (target itself always, if it is the smaller)."""
    out = [target]
    while out[-1] // 2 >= min_context:
        out.append(out[-1] // 2)
    return out


def choose(
    cfg: ModelConfig,
    profile: Profile,
    target_context: int,
    quant_modes: tuple[str, ...] = QUANT_ORDER,
    template: QuantSpec = QuantSpec(),
    streams: int = 1,
    min_context: int = MIN_USEFUL_CONTEXT,
    attended: int | None = None,
    cache_slots: int | None = None,
    chunk: int | None = None,
) -> Choice:
    """The most exact weights in `quant_modes` that fit with the largest context in
    `contexts(target_context, min(min_context, target_context))`; UserError if nothing fits.
    `template` gives the other quantization options (group size, head, embeddings); `chunk`:
    tokens per prefill call (default: the profile's `prefill_chunk`)."""
    chunk = profile.policy.prefill_chunk if chunk is None else chunk
    group_size = template.group_size
    budget = budget_bytes(profile)
    mb = profile.policy.prefix_cache_mb
    prefix = DEFAULT_BUDGET_BYTES if mb is None else int(mb * MiB)
    floor = min(min_context, target_context)
    lines, chosen, smallest = [], None, None
    for mode in quant_modes:
        w = weight_bytes(cfg, replace(template, mode=mode))
        fit = next(((c, n) for c in contexts(target_context, floor) if (n := need(cfg, w, c, streams, prefix, attended, cache_slots, chunk)).total <= budget), None)
        if fit is None:
            n = need(cfg, w, floor, streams, prefix, attended, cache_slots, chunk)
            if smallest is None or n.total < smallest[1].total:
                smallest = (mode, n)
            lines.append(f"  {_label(mode, group_size):>9}: does not fit even at context {floor} ({n})")
            continue
        c, n = fit
        lines.append(f"  {_label(mode, group_size):>9}: context {c} fits ({n})")
        if chosen is None:
            chosen = (mode, c, n)
    name = profile.source or profile.name
    if chosen is None:
        mode, n = smallest
        raise UserError(
            f"--fit-memory: nothing fits {name}'s {budget / MiB:.0f} MiB (memory minus reserve): the smallest choice, "
            f"{_label(mode, group_size)} at context {floor}, needs {n.total / MiB:.0f} MiB"
        )
    mode, c, n = chosen
    why = "the most exact weights that fit" + (f" with a context of at least {floor}" if c < target_context else f" at the full context {target_context}")
    skipped = quant_modes[: quant_modes.index(mode)]
    if skipped:
        why += f"; {', '.join(_label(m, group_size) for m in skipped)} does not fit at context {floor}"
    lines.append(f"chose --quant {mode} --max-context {c}: {why}")
    return Choice(mode, c, n, budget, tuple(lines))


def _label(mode: str, group_size: int) -> str:
    return {"none": "fp32", "int8": "int8", "int4": f"int4 g{group_size}"}[mode]
