"""An export-friendly decoder for GLM, GLM-4 and Llama checkpoints.

Same math and parameter names as transformers' eager implementation, written for
torch.export and IREE. The KV cache is one pair of tensors per layer, [rows, kv_heads,
capacity, head_dim], that the model updates IN PLACE: a request owns one row (its slot), and
a step writes its new keys/values at (slot, position) with `index_put_` and attends over the
first n positions only, n being the length of the `key_positions` input (0..n-1). Exported,
the write is a scatter into the caller's buffer and the attention reads n keys, so a step
costs what the context in use costs, not the capacity. A sliding-window cache
(`--sparse-attention ...,ring`, sparse_attention.py) writes at ring slots instead and reads
its whole small row: it ignores `key_positions`.
"""

from __future__ import annotations

from iree_glm.frontend.kv_cache_ops import read_cache, read_cache_prefix, read_cache_rows, write_cache_

import torch
import torch.nn.functional as F
from torch import nn

from iree_glm.frontend import sparse_attention
from iree_glm.bundle.model_config import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps
        # Set while exporting an exact `verify` (as Attention.decode_form): each row's mean of
        # squares as the row times itself, a [1, D] x [D, 1] product batched over the rows. IREE
        # compiles it as a reduction of its own, which tiles rows by 8 on AVX2; the mean of the
        # prompts' form is fused with the next norm into a dispatch that tiles them by 4, and a
        # full tile of rows sums in another order than a one-row call, so the tiles bound a
        # verify call's exact rows (compiler/exact_rows.py). Prompts keep the mean: the quantize
        # glue (passes/quantize_glue.py) matches it.
        self.decode_form = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        if self.decode_form:
            mean_square = (xf.unsqueeze(-2) @ xf.unsqueeze(-1))[..., 0] / xf.shape[-1]
        else:
            mean_square = xf.pow(2).mean(-1, keepdim=True)
        xf = xf * torch.rsqrt(mean_square + self.eps)
        return self.weight * xf.to(x.dtype)


class Rotary(nn.Module):
    """Rotary position embedding on the first `rotary_dim` channels of each head.

    Where it can, `apply` is one elementwise expression over the whole head, x * cos +
    swap(x) * sin, with cos 1 and sin 0 on the channels past rotary_dim: compiled, one fused
    dispatch per projection instead of slices, a stack and a concatenation (each its own small
    dispatch in a decode step). Only a partial rotary over halves (no such model family here)
    keeps the sliced form."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dim = cfg.rotary_dim
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.interleaved = cfg.interleaved_rotary
        self.dim = dim
        self.head_dim = cfg.head_dim
        self.whole_head = self.interleaved or dim == cfg.head_dim

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [B, S] -> cos, sin [B, 1, S, head_dim] (rotary_dim without `whole_head`)
        in the layout `apply` expects."""
        freqs = positions[..., None].float() * self.inv_freq
        if self.interleaved:
            freqs = torch.stack((freqs, freqs), dim=-1).flatten(-2)
        else:
            freqs = torch.cat((freqs, freqs), dim=-1)
        cos, sin = freqs.cos(), freqs.sin()
        if self.whole_head and self.dim < self.head_dim:  # channels past rotary_dim pass through
            cos = F.pad(cos, (0, self.head_dim - self.dim), value=1.0)
            sin = F.pad(sin, (0, self.head_dim - self.dim), value=0.0)
        return cos[:, None], sin[:, None]

    def apply(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        if self.whole_head:
            # signs (-1, 1) computed, not a literal: IREE's CPU backend rejects a bf16 constant here
            sign = torch.arange(2, device=x.device).to(x.dtype) * 2 - 1
            if self.interleaved:  # pairs (x0, x1) -> (-x1, x0)
                swapped = x.unflatten(-1, (-1, 2)).flip(-1) * sign
            else:  # halves (x1, x2) -> (-x2, x1)
                swapped = x.unflatten(-1, (2, -1)).flip(-2) * sign[:, None]
            return x * cos + swapped.flatten(-2) * sin
        rot, rest = x[..., : self.dim], x[..., self.dim :]
        x1, x2 = rot[..., : self.dim // 2], rot[..., self.dim // 2 :]
        out = rot * cos + torch.cat((-x2, x1), dim=-1) * sin
        return torch.cat((out, rest), dim=-1)


def decode_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention of one query position: q [B,Hkv,G,D] (G query heads per KV head), keys and
    values [n,B,Hkv,D] in f32 (`read_cache_prefix`), additive mask [B,1,G,n] -> [B,Hkv,G,D].

    Written as broadcast products summed over D (scores) and over n (output) rather than as
    SDPA: IREE makes each one reduction that reads the cache where it lies, whereas the
    matmul form is data-tiled and re-packs every attended key and value of every layer at
    every step. Scores and softmax are computed in f32 whatever the cache dtype."""
    scale = q.shape[-1] ** -0.5
    scores = (q.float()[None] * keys[:, :, :, None, :]).sum(-1) * scale  # [n,B,Hkv,G]
    scores = scores + mask.float().permute(3, 0, 1, 2)
    weights = torch.softmax(scores, dim=0)
    return (weights[..., None] * values[:, :, :, None, :]).sum(0).to(q.dtype)


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
        self.sparse_as_mask = False  # the pattern as the mask of the dense form (sparse_attention.enable)
        # A prompt's attention over whole cache rows under a padded mask, for a build whose
        # attention kernel reads them in place (passes/attention_kernel.py); IREE's own lowering
        # would compute the padding.
        self.keys_in_place = False
        # Set while exporting an exact `verify`, whose rows must compute as one-row calls do for
        # any row count: with `keys_in_place` (our attention kernel), the prompt's form over whole
        # cache rows, which our kernel computes (its rows do not depend on the call,
        # passes/attention_kernel.py); else the decode step's attention (broadcast products and
        # reductions that IREE generates, whose row tiles compiler/exact_rows.py reads).
        self.decode_form = False
        self.fused_qkv = False  # see fuse_qkv

    def fuse_qkv(self) -> None:
        """Replace q_proj, k_proj and v_proj by one `qkv_proj` whose rows are [q; k; v] (biases
        too): compiled, one matmul reads one weight per layer instead of three. Per-row
        quantization (quant.py) of the fused weight equals that of the three parts."""
        parts = (self.q_proj, self.k_proj, self.v_proj)
        fused = nn.Linear(self.cfg.hidden_size, sum(p.out_features for p in parts), bias=parts[0].bias is not None)
        fused = fused.to(dtype=parts[0].weight.dtype)
        with torch.no_grad():
            fused.weight.copy_(torch.cat([p.weight for p in parts]))
            if fused.bias is not None:
                fused.bias.copy_(torch.cat([p.bias for p in parts]))
        del self.q_proj, self.k_proj, self.v_proj
        self.qkv_proj = fused
        self.fused_qkv = True

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B,S,hidden] -> q [B,S,H*D], k and v [B,S,Hkv*D]."""
        if not self.fused_qkv:
            return self.q_proj(x), self.k_proj(x), self.v_proj(x)
        cfg = self.cfg
        kv = cfg.num_kv_heads * cfg.head_dim
        return self.qkv_proj(x).split([cfg.num_heads * cfg.head_dim, kv, kv], dim=-1)

    def forward(self, x, rotary: Rotary, cos, sin, positions, slots, key_positions, k_cache, v_cache):
        """x [B,S,hidden]; positions [B,S]; slots [B]; key_positions [n]; caches [R,Hkv,C,D]
        (updated in place) -> out [B,S,hidden]."""
        cfg = self.cfg
        b, s, _ = x.shape
        d, hkv = cfg.head_dim, cfg.num_kv_heads
        group = cfg.num_heads // hkv
        q, k, v = self.project_qkv(x)
        q = q.view(b, s, cfg.num_heads, d).transpose(1, 2)
        k = k.view(b, s, hkv, d).transpose(1, 2)
        v = v.view(b, s, hkv, d).transpose(1, 2)
        q = rotary.apply(q, cos, sin)
        k = rotary.apply(k, cos, sin)

        if self.sparse is not None and not self.sparse_as_mask:  # one marked op; passes/sparse_attention.py lowers it
            out = sparse_attention.attention(q, k, v, positions, slots, key_positions, k_cache, v_cache, self.sparse)
            out = out.transpose(1, 2).reshape(b, s, cfg.num_heads * d)
            return self.o_proj(out)

        write_cache_(k_cache, k, slots, positions)
        write_cache_(v_cache, v, slots, positions)

        # Attend over the n keys asked for; positions not yet written (or in the future) are masked.
        sparse_step = self.sparse_as_mask and type(s) is int and s == 1
        if sparse_step:
            # A sparse decode step attends over whole cache rows (no gather of the n keys; the
            # kernel's pass gives the kernel the cache and the row, which it reads in place):
            # the kernel, told the pattern, visits only the pattern's blocks of it.
            keys, values = read_cache_rows(k_cache, slots), read_cache_rows(v_cache, slots)
            within = torch.arange(k_cache.shape[2], device=x.device)
            visible = (within < key_positions.shape[0])[None, None, :] & (within[None, None, :] <= positions[:, :, None])
            key_positions = within
        else:
            visible = key_positions[None, None, :] <= positions[:, :, None]  # [B, S, n]
        n = key_positions.shape[0]
        if self.sparse_as_mask:
            visible = visible & sparse_attention.in_pattern(key_positions, positions, self.sparse)
        mask = torch.where(visible, 0.0, float("-inf")).to(q.dtype)[:, None]  # [B, 1, S, n]
        # Grouped-query attention without copying K/V `group` times: the query heads that share
        # a KV head become extra rows of one attention over that head's cache.
        # Rows are ordered (position, group) so the dynamic length stays the outer dimension.
        q = q.reshape(b, hkv, group, s, d).transpose(2, 3).reshape(b, hkv, s * group, d)
        mask = mask[:, :, :, None].expand(b, 1, s, group, n).reshape(b, 1, s * group, n)
        in_place = self.keys_in_place and not sparse_step and b == 1
        if (self.decode_form and not in_place or type(s) is int and s == 1) and not sparse_step:  # a decode step (static query length) or exact verify
            out = decode_attention(q, read_cache_prefix(k_cache, slots, n), read_cache_prefix(v_cache, slots, n), mask)
        else:
            if in_place:
                # The whole cache row, the mask padded over the keys past n: the kernel's pass
                # hands the kernel the cache, the row and the unpadded mask (n keys), which it
                # reads in place; a gather of the n keys would copy them at every call.
                keys, values = read_cache_rows(k_cache, slots), read_cache_rows(v_cache, slots)
                mask = F.pad(mask, (0, k_cache.shape[2] - n), value=float("-inf"))
            elif not sparse_step:
                keys, values = read_cache(k_cache, slots, key_positions), read_cache(v_cache, slots, key_positions)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        out = out.reshape(b, hkv, s, group, d).permute(0, 2, 1, 3, 4).reshape(b, s, cfg.num_heads * d)
        return self.o_proj(out)


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

    def forward(self, x, rotary, cos, sin, positions, slots, key_positions, k_cache, v_cache):
        h = self.self_attn(self.input_layernorm(x), rotary, cos, sin, positions, slots, key_positions, k_cache, v_cache)
        if self.post_norms:
            h = self.post_self_attn_layernorm(h)
        x = x + h
        h = self.mlp(self.post_attention_layernorm(x))
        if self.post_norms:
            h = self.post_mlp_layernorm(h)
        return x + h


class Body(nn.Module):
    """The `model.` part of a checkpoint: embeddings, layers, final norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary = Rotary(cfg)


class CausalLM(nn.Module):
    """Decoder with a fixed-capacity KV cache, one (k, v) pair of [R,Hkv,C,D] per layer.

    forward(tokens [B,S] int64, start [B] int64, slots [B] int64, key_positions [n] int64,
            k_0, v_0, k_1, v_1, ...) -> logits of the last position [B,V]
            (with `all_rows` set: of every position [B,S,V], for speculative verification)
    Token i of row b is written at position start[b] + i of cache row slots[b] (in place) and
    sees the positions <= it among key_positions (0..n-1, n covering every position in use).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.model = Body(cfg)
        self.all_rows = False  # what forward returns; set while exporting the verify entry point
        if not cfg.tie_word_embeddings:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def fuse_qkv(self) -> "CausalLM":
        """Every layer's q/k/v projections as one (`Attention.fuse_qkv`), in place; returns self.
        Done after loading (and pruning), so the checkpoint's names are unchanged."""
        for layer in self.model.layers:
            layer.self_attn.fuse_qkv()
        return self

    def output_weight(self) -> torch.Tensor:
        return self.model.embed_tokens.weight if self.cfg.tie_word_embeddings else self.lm_head.weight

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden states -> logits; a quantized `lm_head` (iree_glm.quant) replaces the tied weight."""
        head = getattr(self, "lm_head", None)
        return head(x) if head is not None else F.linear(x, self.model.embed_tokens.weight)

    def hidden_states(self, tokens, start, slots, key_positions, caches):
        s = tokens.shape[1]
        positions = start[:, None] + torch.arange(s, device=tokens.device)[None, :]
        x = self.model.embed_tokens(tokens)
        cos, sin = self.model.rotary.cos_sin(positions)
        for i, layer in enumerate(self.model.layers):
            x = layer(x, self.model.rotary, cos, sin, positions, slots, key_positions, caches[2 * i], caches[2 * i + 1])
        return self.model.norm(x)

    def forward(self, tokens, start, slots, key_positions, *caches):
        x = self.hidden_states(tokens, start, slots, key_positions, caches)
        return self.project(x if self.all_rows else x[:, -1])

    def all_logits(self, tokens, start, k_cache, v_cache):
        """Logits for every position (tests and tools; not exported). Caches are stacked
        [L,B,Hkv,C,D] (row b of the batch is cache row b), updated in place and returned."""
        b, capacity = tokens.shape[0], k_cache.shape[3]
        slots = torch.arange(b, device=tokens.device)
        keys = torch.arange(capacity, device=tokens.device)
        caches = [c for i in range(self.cfg.num_layers) for c in (k_cache[i], v_cache[i])]
        x = self.hidden_states(tokens, start, slots, keys, caches)
        return self.project(x), k_cache, v_cache

    def empty_cache(self, batch: int, capacity: int, dtype=torch.float32):
        """Stacked caches [L,B,Hkv,C,D] for `all_logits`."""
        cfg = self.cfg
        shape = (cfg.num_layers, batch, cfg.num_kv_heads, capacity, cfg.head_dim)
        return torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype)
