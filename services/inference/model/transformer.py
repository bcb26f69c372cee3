"""The Llama 2 transformer: RMSNorm, rotary embeddings, grouped-query attention, SwiGLU.

Parameter names match Meta's consolidated.NN.pth checkpoints. The model does not know about tensor
parallelism (parallel.py shards an already-built model), about fused projections (fusion.py swaps
them in after loading) nor about paged KV caches: attention either runs causally over the given
tokens, or hands q/k/v to an `AttentionCache` that rotates them, stores k/v and attends.
Head counts in views are written as -1 so a sharded model (fewer local heads) runs unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class ModelArgs:
    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None
    vocab_size: int = 32000
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_seq_len: int = 4096
    # Explicit SwiGLU width (Hugging Face's intermediate_size); None applies the reference's rule.
    ffn_hidden_dim: int | None = None

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def hidden_dim(self) -> int:
        """The reference's SwiGLU width: 2/3 of 4*dim, scaled, rounded up to multiple_of."""
        if self.ffn_hidden_dim is not None:
            return self.ffn_hidden_dim
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

    @classmethod
    def from_params(cls, params: dict[str, Any], **overrides: Any) -> ModelArgs:
        """Build from a Meta params.json (vocab_size -1 there means "take it from the tokenizer")."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in params.items() if k in known and v is not None}
        values.update(overrides)
        return cls(**values)


# The released Llama 2 shapes (vocab 32000, max_seq_len 4096).
CONFIGS: dict[str, ModelArgs] = {
    "7B": ModelArgs(dim=4096, n_layers=32, n_heads=32),
    "13B": ModelArgs(dim=5120, n_layers=40, n_heads=40),
    "70B": ModelArgs(
        dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, ffn_dim_multiplier=1.3, multiple_of=4096
    ),
}


class AttentionCache(Protocol):
    """Rotates a layer's new queries/keys, stores the new keys/values and attends the queries over
    everything cached. q/k arrive unrotated, so a cache may rotate them in the kernel that stores
    k/v (the paged cache does on CUDA decode steps); `apply_rotary` is the rotation to match."""

    def attend(self, layer_id: int, q: Tensor, k: Tensor, v: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """q: [b, t, heads, head_dim]; k, v: [b, t, kv_heads, head_dim]; cos, sin: [b, t, head_dim/2]
        -> [b, t, heads, head_dim]."""
        ...


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # Normalise in fp32 as the reference does: bf16 squares lose too much precision.
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def rope_tables(head_dim: int, max_positions: int, theta: float) -> tuple[Tensor, Tensor]:
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64)[: head_dim // 2] / head_dim))
    angles = torch.outer(torch.arange(max_positions, dtype=torch.float64), freqs)
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate interleaved pairs (x0, x1), (x2, x3), ... as Meta's complex-number formulation does.

    x: [b, t, h, d]; cos, sin: [b, t, d/2]. Computed in fp32, returned in x's dtype.
    """
    pairs = x.float().unflatten(-1, (-1, 2))
    x0, x1 = pairs[..., 0], pairs[..., 1]
    c, s = cos.unsqueeze(2), sin.unsqueeze(2)
    rotated = torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1)
    return rotated.flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs, layer_id: int) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.head_dim = args.head_dim
        self.wq = nn.Linear(args.dim, args.n_heads * args.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, args.kv_heads * args.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, args.kv_heads * args.head_dim, bias=False)
        self.wo = nn.Linear(args.n_heads * args.head_dim, args.dim, bias=False)

    @property
    def kv_heads(self) -> int:
        """Key/value heads held here (fewer than the model's on a tensor-parallel rank)."""
        return self.wk.out_features // self.head_dim

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x -> q, k, v before the split into heads."""
        return self.wq(x), self.wk(x), self.wv(x)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: AttentionCache | None) -> Tensor:
        b, t, _ = x.shape
        q, k, v = (part.view(b, t, -1, self.head_dim) for part in self.project(x))
        if cache is not None:
            return self.wo(cache.attend(self.layer_id, q, k, v, cos, sin).reshape(b, t, -1))
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=True
        ).transpose(1, 2)
        return self.wo(out.reshape(b, t, -1))


class FeedForward(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.w1 = nn.Linear(args.dim, args.hidden_dim, bias=False)
        self.w2 = nn.Linear(args.hidden_dim, args.dim, bias=False)
        self.w3 = nn.Linear(args.dim, args.hidden_dim, bias=False)

    def gate_up(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.w1(x), self.w3(x)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x)
        return self.w2(F.silu(gate) * up)


class TransformerBlock(nn.Module):
    def __init__(self, args: ModelArgs, layer_id: int) -> None:
        super().__init__()
        self.attention = Attention(args, layer_id)
        self.feed_forward = FeedForward(args)
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: AttentionCache | None) -> Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin, cache)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(TransformerBlock(args, i) for i in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        # Twice max_seq_len as in the reference, so positions near the end never index past the table.
        cos, sin = rope_tables(args.head_dim, args.max_seq_len * 2, args.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def build_rope(self, device: torch.device) -> None:
        """(Re)compute the fp32 rotary tables on `device`, e.g. after loading weights into a meta-built model."""
        args = self.args
        cos, sin = rope_tables(args.head_dim, args.max_seq_len * 2, args.rope_theta)
        self.rope_cos, self.rope_sin = cos.to(device), sin.to(device)

    def forward(
        self, tokens: Tensor, positions: Tensor | None = None, cache: AttentionCache | None = None
    ) -> Tensor:
        """tokens, positions: [b, t] -> logits [b, t, vocab] in fp32.

        Without a cache the tokens are one causal sequence per row starting at position 0.
        """
        if positions is None:
            positions = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
        cos, sin = self.rope_cos[positions], self.rope_sin[positions]
        h = self.tok_embeddings(tokens)
        for layer in self.layers:
            h = layer(h, cos, sin, cache)
        return self.output(self.norm(h)).float()

    def _apply(self, fn: Any, recurse: bool = True) -> Transformer:
        # Rotary tables stay fp32 whatever dtype the weights move to: rebuilt, not cast back,
        # because a bf16 round trip of the angles would already have lost the precision.
        super()._apply(fn, recurse)
        if self.rope_cos.device.type != "meta":
            self.build_rope(self.rope_cos.device)
        return self


def init_random_weights(model: Transformer, seed: int) -> None:
    """Seeded random weights with a scale that keeps activations bounded (demo and benchmark models)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                fan_in = param.shape[-1] if name != "tok_embeddings.weight" else 1
                std = 1.0 / math.sqrt(fan_in)
                param.copy_(torch.randn(param.shape, generator=generator) * std)
