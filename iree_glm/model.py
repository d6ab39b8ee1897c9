"""An export-friendly decoder for GLM, GLM-4 and Llama checkpoints.

Same math and parameter names as transformers' eager implementation, written for
torch.export and IREE: the KV cache is a fixed-capacity tensor passed in and returned
([layers, batch, kv_heads, capacity, head_dim]), written with `scatter`, and attention is
spelled out as matmul + softmax + matmul over the whole cache with a position mask, so one
compiled function serves every position without dynamic cache shapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import sparse_attention
from .config import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class Rotary(nn.Module):
    """Rotary position embedding on the first `rotary_dim` channels of each head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dim = cfg.rotary_dim
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.interleaved = cfg.interleaved_rotary
        self.dim = dim

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [B, S] -> cos, sin [B, 1, S, rotary_dim] in the layout `apply` expects."""
        freqs = positions[..., None].float() * self.inv_freq
        if self.interleaved:
            freqs = torch.stack((freqs, freqs), dim=-1).flatten(-2)
        else:
            freqs = torch.cat((freqs, freqs), dim=-1)
        return freqs.cos()[:, None], freqs.sin()[:, None]

    def apply(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        rot, rest = x[..., : self.dim], x[..., self.dim :]
        if self.interleaved:
            x1, x2 = rot[..., 0::2], rot[..., 1::2]
            rotated = torch.stack((-x2, x1), dim=-1).flatten(-2)
        else:
            x1, x2 = rot[..., : self.dim // 2], rot[..., self.dim // 2 :]
            rotated = torch.cat((-x2, x1), dim=-1)
        out = rot * cos + rotated * sin
        return torch.cat((out, rest), dim=-1) if rest.shape[-1] else out


def _write_cache(cache: torch.Tensor, new: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """cache [B,Hkv,C,D] with new [B,Hkv,S,D] written at positions [B,S] (consecutive per row).

    Written as an elementwise select over the cache (a gather from `new` by offset), which
    IREE fuses into one dispatch; `scatter` and `index_copy` lower badly for large caches.
    """
    b, hkv, capacity, d = cache.shape
    s = new.shape[2]
    offset = torch.arange(capacity, device=cache.device)[None, :] - positions[:, :1]  # [B, C]
    inside = (offset >= 0) & (offset < s)
    index = offset.clamp(0, s - 1)[:, None, :, None].expand(b, hkv, capacity, d)
    return torch.where(inside[:, None, :, None], new.gather(2, index), cache)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        h, kv, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, h * d, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, kv * d, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, kv * d, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(h * d, cfg.hidden_size, bias=cfg.o_proj_bias)
        # Block-sparse pattern (local window + globals), or None for dense attention.
        self.sparse: sparse_attention.SparsePattern | None = None

    def forward(self, x, rotary: Rotary, cos, sin, positions, k_cache, v_cache):
        """x [B,S,hidden]; positions [B,S]; caches [B,Hkv,C,D] -> out, new caches."""
        cfg = self.cfg
        b, s, _ = x.shape
        d, hkv = cfg.head_dim, cfg.num_kv_heads
        group = cfg.num_heads // hkv
        q = self.q_proj(x).view(b, s, cfg.num_heads, d).transpose(1, 2)
        k = self.k_proj(x).view(b, s, hkv, d).transpose(1, 2)
        v = self.v_proj(x).view(b, s, hkv, d).transpose(1, 2)
        q = rotary.apply(q, cos, sin)
        k = rotary.apply(k, cos, sin)

        if self.sparse is not None:  # exported as one marked op; passes/sparse_attention.py lowers it
            out, k_cache, v_cache = sparse_attention.attention(q, k, v, positions, k_cache, v_cache, self.sparse, _write_cache)
            out = out.transpose(1, 2).reshape(b, s, cfg.num_heads * d)
            return self.o_proj(out), k_cache, v_cache

        k_cache = _write_cache(k_cache, k, positions)
        v_cache = _write_cache(v_cache, v, positions)

        # Attend over the whole cache; positions not yet written (or in the future) are masked.
        capacity = k_cache.shape[2]
        key_pos = torch.arange(capacity, device=x.device)
        visible = key_pos[None, None, :] <= positions[:, :, None]  # [B, S, C]
        mask = torch.where(visible, 0.0, float("-inf")).to(q.dtype)[:, None]  # [B, 1, S, C]
        # Grouped-query attention without copying K/V `group` times: the query heads that share
        # a KV head become extra rows of one attention over that head's cache.
        # Rows are ordered (position, group) so the dynamic length stays the outer dimension.
        q = q.reshape(b, hkv, group, s, d).transpose(2, 3).reshape(b, hkv, s * group, d)
        mask = mask[:, :, :, None].expand(b, 1, s, group, capacity).reshape(b, 1, s * group, capacity)
        out = F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=mask)
        out = out.reshape(b, hkv, s, group, d).permute(0, 2, 1, 3, 4).reshape(b, s, cfg.num_heads * d)
        return self.o_proj(out), k_cache, v_cache


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fused = cfg.fused_gate_up
        if self.fused:
            self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        else:
            self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias)
            self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias and not self.fused)

    def forward(self, x):
        if self.fused:
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(up * F.silu(gate))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_norms = cfg.has_post_norms
        if self.post_norms:
            self.post_self_attn_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
            self.post_mlp_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, rotary, cos, sin, positions, k_cache, v_cache):
        h, k_cache, v_cache = self.self_attn(
            self.input_layernorm(x), rotary, cos, sin, positions, k_cache, v_cache
        )
        if self.post_norms:
            h = self.post_self_attn_layernorm(h)
        x = x + h
        h = self.mlp(self.post_attention_layernorm(x))
        if self.post_norms:
            h = self.post_mlp_layernorm(h)
        return x + h, k_cache, v_cache


class Body(nn.Module):
    """The `model.` part of a checkpoint: embeddings, layers, final norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary = Rotary(cfg)


class CausalLM(nn.Module):
    """Decoder with a fixed-capacity KV cache.

    forward(tokens [B,S] int64, start [B] int64, k_cache, v_cache [L,B,Hkv,C,D])
      -> (logits of the last position [B,V], k_cache, v_cache)
    Token i of row b is written at cache position start[b] + i and sees positions <= it.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.model = Body(cfg)
        if not cfg.tie_word_embeddings:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def output_weight(self) -> torch.Tensor:
        return self.model.embed_tokens.weight if self.cfg.tie_word_embeddings else self.lm_head.weight

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden states -> logits; a quantized `lm_head` (iree_glm.quant) replaces the tied weight."""
        head = getattr(self, "lm_head", None)
        return head(x) if head is not None else F.linear(x, self.model.embed_tokens.weight)

    def hidden_states(self, tokens, start, k_cache, v_cache):
        s = tokens.shape[1]
        positions = start[:, None] + torch.arange(s, device=tokens.device)[None, :]
        x = self.model.embed_tokens(tokens)
        cos, sin = self.model.rotary.cos_sin(positions)
        new_k, new_v = [], []
        for i, layer in enumerate(self.model.layers):
            x, k, v = layer(x, self.model.rotary, cos, sin, positions, k_cache[i], v_cache[i])
            new_k.append(k)
            new_v.append(v)
        return self.model.norm(x), torch.stack(new_k), torch.stack(new_v)

    def forward(self, tokens, start, k_cache, v_cache):
        x, k_cache, v_cache = self.hidden_states(tokens, start, k_cache, v_cache)
        logits = self.project(x[:, -1])
        return logits, k_cache, v_cache

    def all_logits(self, tokens, start, k_cache, v_cache):
        """Logits for every position (tests and fidelity tools; not exported)."""
        x, k_cache, v_cache = self.hidden_states(tokens, start, k_cache, v_cache)
        return self.project(x), k_cache, v_cache

    def empty_cache(self, batch: int, capacity: int, dtype=torch.float32):
        cfg = self.cfg
        shape = (cfg.num_layers, batch, cfg.num_kv_heads, capacity, cfg.head_dim)
        return torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype)
