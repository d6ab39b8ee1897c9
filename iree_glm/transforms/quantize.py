"""Weight-only quantization: int8 per output channel, int4 per group, in pre-packed layouts.

The layouts are chosen for the CPU decode kernel our dequant-matmul pass builds
(passes/dequant_matmul.py): output channels are tiled by 16 and the tile is the innermost
dimension, so one vector load brings 16 output channels of one input channel.

- int8: `qweight` i8 [N/16, K, 16], `scale` f32 [N]; y = (x @ q) * scale.
- bf16 (`compile --compute-dtype bf16` where our AMX kernel runs, not a --quant mode):
  `qweight` bf16 [N/16, K2, 16, 2], K2 = ceil(K/2): per tile of 16 output channels and pair
  of k, the 16 channels' two values (AMX's B-tile layout, kernels/x86_64_amx/bf16.c); no scale.
- int4: `qweight` i8 [N, K/G, G/2] holding two nibbles per byte, each the value + 8 (0..15,
  as llama.cpp's Q4_0; "halves": the low nibble of byte j of a group is its element j, the
  high nibble element j + G/2), `scale` f16 [N, K/G]. Rows are contiguous so the CPU decode kernel
  (kernels/x86_64_avx2/int4.c) streams whole rows; the generic fused form (other
  targets, prefill) reads the same layout.

int8's N is padded to a multiple of 16 with zero rows; the padded outputs are sliced off.
The modules' forward is plain torch (it runs eagerly for fidelity checks) and, exported,
becomes the dequantize-then-matmul graph that the pass fuses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from iree_glm.errors import UserError

MODES = ("none", "int8", "int4")
GROUP_SIZES = (32, 64, 128)
TILE = 16  # output channels per packed tile


@dataclass(frozen=True)
class QuantSpec:
    """What to quantize and how."""

    mode: str = "none"
    group_size: int = 32  # int4 only
    head: str = "int8"  # output head: "none" or "int8"
    embeddings: str = "int8"  # token embeddings: "int8" (per row, dequantized on gather) or "none"

    def to_dict(self) -> dict:
        d = {"mode": self.mode}
        if self.mode != "none":
            d.update(head=self.head, embeddings=self.embeddings)
        if self.mode == "int4":
            d["group_size"] = self.group_size
        return d

    def check(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"--quant: unknown mode '{self.mode}' (choose from {', '.join(MODES)})")
        if self.group_size not in GROUP_SIZES:
            raise UserError(f"--group-size: {self.group_size} is not one of {', '.join(map(str, GROUP_SIZES))}")
        for opt, value in (("--quant-head", self.head), ("--quant-embeddings", self.embeddings)):
            if value not in ("none", "int8"):
                raise UserError(f"{opt}: unknown mode '{value}' (choose from none, int8)")


def _pad_rows(w: torch.Tensor) -> torch.Tensor:
    n = w.shape[0]
    padded = -(-n // TILE) * TILE
    return F.pad(w, (0, 0, 0, padded - n)) if padded != n else w


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w [N, K] -> (qweight i8 [N'/16, K, 16], scale f32 [N']) with N' = N rounded up to 16."""
    w = _pad_rows(w.detach().float())
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    n, k = q.shape
    return q.view(n // TILE, TILE, k).permute(0, 2, 1).contiguous(), scale


def dequantize_int8(qweight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    a, k, t = qweight.shape
    return qweight.permute(0, 2, 1).reshape(a * t, k).float() * scale[:, None]


def pack_bf16(w: torch.Tensor) -> torch.Tensor:
    """w [N, K] -> bf16 [N'/16, K2, 16, 2] (round to nearest even; N' = N rounded up to 16 with
    zero rows, K2 = ceil(K/2), an odd K's last pair ending in a zero)."""
    w = _pad_rows(w.detach().float())
    n, k = w.shape
    w = F.pad(w, (0, k % 2))
    return w.to(torch.bfloat16).view(n // TILE, TILE, (k + 1) // 2, 2).permute(0, 2, 1, 3).contiguous()


def unpack_bf16(qweight: torch.Tensor) -> torch.Tensor:
    """bf16 [N'/16, K2, 16, 2] -> f32 [N', 2 * K2] (the padded matrix)."""
    a, k2, t, _ = qweight.shape
    return qweight.permute(0, 2, 1, 3).reshape(a * t, k2 * 2).float()


def quantize_int4(w: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """w [N, K] -> (qweight i8 [N, K/G, G/2] two nibbles (value + 8) a byte, scale f16 [N, K/G])."""
    w = w.detach().float()
    n, k = w.shape
    g = w.view(n, k // group, group)
    scale = (g.abs().amax(dim=2).clamp(min=1e-12) / 7.0).half().clamp(min=2**-24)  # [N, K/G]
    q = torch.round(g / scale.float()[:, :, None]).clamp(-8, 7).to(torch.int8) + 8  # [N, K/G, G], 0..15
    low, high = q[:, :, : group // 2], q[:, :, group // 2 :]
    packed = low | (high << 4)  # int8 arithmetic wraps: high nibbles >= 8 make the byte negative
    return packed.contiguous(), scale.contiguous()


def _unpack_int4(qweight: torch.Tensor) -> torch.Tensor:
    """i8 [N, Gn, G/2] -> signed values i8 [N, Gn, 2, G/2] (low nibbles, then high)."""
    shifts = torch.tensor([0, 4], dtype=torch.int8).view(1, 1, 2, 1)
    # tensors, not Python scalars: IREE cannot lower some scalar i8 ops the exporter emits
    mask, offset = torch.tensor([15], dtype=torch.int8), torch.tensor([8], dtype=torch.int8)
    return torch.bitwise_and(torch.bitwise_right_shift(qweight[:, :, None], shifts), mask) - offset


def dequantize_int4(qweight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    n, gn, half = qweight.shape
    return (_unpack_int4(qweight).float() * scale.float()[:, :, None, None]).reshape(n, gn * 2 * half)


ACT_BLOCK = 32  # activations quantized to int8 per block of this many inputs by the CPU int4 and int8 kernels


def quantize_activations(x: torch.Tensor, group: int) -> torch.Tensor:
    """What the CPU int4 kernels (and, with group 32, the int8 decode kernel) do to x [..., K]:
    int8 per block of 32 (scale = max|x| / 127, round half to even), returned dequantized. Blocks follow the packed bytes: block j of a group
    holds its elements j*16..j*16+15 and G/2 + j*16..G/2 + j*16+15 (for G = 32: the whole group)."""
    *lead, k = x.shape
    half = group // 2
    v = x.float().reshape(*lead, k // group, 2, half // 16, 16).transpose(-3, -2)  # [..., Gn, parts, 2, 16]
    d = v.abs().amax(dim=(-2, -1), keepdim=True) / 127.0
    inv = torch.where(d > 0, 1.0 / torch.where(d > 0, d, torch.ones_like(d)), torch.zeros_like(d))
    q = torch.round(v * inv)  # the kernel multiplies by the inverse too
    return (q * d).transpose(-3, -2).reshape(*lead, k).to(x.dtype)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations to int8 per row, as the integer matmul does it at run time (passes/dequant_matmul.py):
    (q as float holding integers, the row scale max|x| / 127)."""
    amax = x.abs().amax(dim=-1, keepdim=True)
    q = torch.round(x * (127.0 / amax.clamp(min=1e-30)))  # round half to even, like math.roundeven
    return q, amax / 127.0


class QuantLinear(nn.Module):
    """A Linear layer with packed int8 / int4 weights (buffers, so they export as i8 parameters).

    `integer_rows` (eager only, never set while exporting: the pass makes that choice in the
    graph): an int8 layer quantizes its input rows too and multiplies integers, the reference
    for bundles whose prefill runs i8 x i8 matmuls."""

    integer_rows = False

    def __init__(self, linear: nn.Linear, mode: str, group: int = 32):
        super().__init__()
        self.mode, self.out_features, self.in_features = mode, linear.out_features, linear.in_features
        self.group = group
        # Eager reference of the CPU int4 kernels and the int8 decode kernel: x quantized like
        # they do. Never set for export; see quantize_activations.
        self.quantized_activations = False
        # Export of the `verify` entry point where the int8 decode kernel runs (build.py's
        # mark_verify_like_decode): x per block of 32 in the graph, as that kernel does.
        self.verify_like_decode = False
        # Export of the `decode` entry point for another device than the CPU whose int8 decode
        # kernel it must match (build.py's mark_like_int8_kernel): x per block of 32 in the graph.
        self.decode_like_kernel = False
        if mode == "bf16":
            q, s = pack_bf16(linear.weight), None
        elif mode == "int8":
            q, s = quantize_int8(linear.weight)
        else:
            q, s = quantize_int4(linear.weight, group)
        self.register_buffer("qweight", q)
        if s is not None:
            self.register_buffer("scale", s)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.in_features
        if self.mode == "bf16":  # x stays f32 here: the kernel (or IREE's demotion) rounds it
            a, k2, t, _ = self.qweight.shape
            x = F.pad(x, (0, 2 * k2 - k)) if 2 * k2 != k else x
            # [A, K2, 16, 2] -> [K2 * 2, A * 16]: the weight as a [K, N'] matmul operand.
            w = self.qweight.to(x.dtype).permute(1, 3, 0, 2).reshape(2 * k2, a * t)
            y = torch.matmul(x, w)
        elif self.mode == "int8":
            if self.quantized_activations:  # the CPU int8 decode kernel: x per block of 32
                x = quantize_activations(x, ACT_BLOCK)
            a, _, t = self.qweight.shape
            # [A, K, 16] -> [K, A*16]: the weight as a [K, N'] matmul operand, dequantized.
            w = self.qweight.to(x.dtype).permute(1, 0, 2).reshape(k, a * t)
            if self.integer_rows:  # exact integer sums in float64, then the two scales
                q, row_scale = quantize_rows(x)
                y = (torch.matmul(q.double(), w.double()) * row_scale.double()).to(x.dtype) * self.scale.to(x.dtype)
            else:
                y = torch.matmul(x, w) * self.scale.to(x.dtype)
        else:
            if self.quantized_activations:
                x = quantize_activations(x, self.group)
            n, gn, half = self.qweight.shape
            w = _unpack_int4(self.qweight).to(x.dtype) * self.scale[:, :, None, None].to(x.dtype)  # convert after the reshape: one elementwise chain
            # [N, Gn, 2, G/2] -> [K, N]
            w = w.permute(1, 2, 3, 0).reshape(k, n)
            y = torch.matmul(x, w)
        y = y[..., : self.out_features]
        return y if self.bias is None else y + self.bias


class QuantEmbedding(nn.Module):
    """Token embeddings with int8 rows and one fp32 scale per row (a gather needs no pass)."""

    def __init__(self, emb: nn.Embedding):
        super().__init__()
        w = emb.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        self.register_buffer("qweight", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.embedding(tokens, self.qweight).float() * F.embedding(tokens, self.scale[:, None])


def check_group_size(model: nn.Module, spec: QuantSpec) -> None:
    """Every int4 layer's input dimension must be a multiple of the group size."""
    if spec.mode != "int4":
        return
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and _is_layer_linear(name) and mod.in_features % spec.group_size:
            raise UserError(
                f"--group-size {spec.group_size} does not divide the input dimension "
                f"{mod.in_features} of layer '{name}'"
            )


def _is_layer_linear(name: str) -> bool:
    return name.startswith("model.layers.")


def quantize_model(model: nn.Module, spec: QuantSpec) -> nn.Module:
    """Replace the model's Linear layers (in place) by quantized ones, as `spec` says."""
    spec.check()
    if spec.mode == "none":
        return model
    check_group_size(model, spec)
    for name, mod in list(model.named_modules()):
        if isinstance(mod, nn.Linear) and _is_layer_linear(name):
            _set(model, name, QuantLinear(mod, spec.mode, spec.group_size))
    if spec.head == "int8":
        cfg = model.cfg
        head = model.lm_head if not cfg.tie_word_embeddings else _linear_from(model.model.embed_tokens.weight)
        model.lm_head = QuantLinear(head, "int8")
    if spec.embeddings == "int8":
        if model.cfg.tie_word_embeddings and getattr(model, "lm_head", None) is None:
            model.lm_head = _linear_from(model.model.embed_tokens.weight)  # an fp32 head keeps the fp32 table
        model.model.embed_tokens = QuantEmbedding(model.model.embed_tokens)
    return model


def bf16_layers(model: nn.Module) -> nn.Module:
    """Replace the model's layer Linears and an untied head (in place) by bf16 ones in the AMX
    kernel's layout (`compile --compute-dtype bf16` where that kernel runs): the archive holds
    bf16 weights. A tied head keeps multiplying the f32 embedding table (IREE's demotion)."""
    for name, mod in list(model.named_modules()):
        if isinstance(mod, nn.Linear) and (_is_layer_linear(name) or name == "lm_head"):
            _set(model, name, QuantLinear(mod, "bf16"))
    return model


def _linear_from(weight: torch.Tensor) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    lin.weight = nn.Parameter(weight.detach().clone())
    return lin


def _set(root: nn.Module, dotted: str, value: nn.Module) -> None:
    parent, _, leaf = dotted.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, value)


def state_bytes(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def quantized_layer_count(model: nn.Module) -> int:
    """How many matmuls read packed weights (one per QuantLinear per exported function)."""
    return sum(isinstance(m, QuantLinear) for m in model.modules())
