"""Fusing a built model's projections for serving: wq/wk/wv -> wqkv, w1/w3 -> w13, once, at load.

Why fuse: at batch 1 a decode step is one matrix-vector product per weight, bound by memory
bandwidth; one product over the stacked rows reads the same bytes in one kernel instead of two or
three, and the small separate products ran further below the bandwidth roofline than the large
ones (bench/RESULTS.md).

Done after loading and sharding: checkpoints are read and resharded by the separate (Meta) names,
and each rank stacks its own column-parallel blocks, which stay column-parallel. Each attention and
feed-forward module keeps its identity (so tensor-parallel hooks stay) and takes the fused class,
as torch.nn.utils.parametrize swaps a module's class; the model file keeps one forward path, which
calls `project` / `gate_up`. The separate weights are freed as each layer is stacked, so memory
peaks at the weights plus one layer's stacked copy. FP8 projections (fp8.py) fuse the same way,
their per-row scales stacked with their rows.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from services.inference.model.fp8 import FP8Linear
from services.inference.model.transformer import Attention, FeedForward, Transformer, TransformerBlock


class FusedAttention(Attention):
    """Attention whose wq, wk, wv run as one matmul; its output splits at `qkv_widths`."""

    wqkv: nn.Linear | FP8Linear
    qkv_widths: tuple[int, int, int]

    @property
    def kv_heads(self) -> int:
        return self.qkv_widths[1] // self.head_dim

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = self.wqkv(x).split(self.qkv_widths, dim=-1)
        return q, k, v


class FusedFeedForward(FeedForward):
    """A SwiGLU block whose w1 and w3 run as one matmul, gate and up halves side by side."""

    w13: nn.Linear | FP8Linear

    def gate_up(self, x: Tensor) -> tuple[Tensor, Tensor]:
        gate, up = self.w13(x).chunk(2, dim=-1)
        return gate, up


def fuse_projections(model: Transformer) -> Transformer:
    """Stack every layer's wq/wk/wv into wqkv and w1/w3 into w13, in place (a no-op when done)."""
    for layer in model.layers:
        assert isinstance(layer, TransformerBlock)
        attention, feed_forward = layer.attention, layer.feed_forward
        if not isinstance(attention, FusedAttention):
            parts = (attention.wq, attention.wk, attention.wv)
            widths = (parts[0].out_features, parts[1].out_features, parts[2].out_features)
            wqkv = stacked_linear(parts)
            del attention.wq, attention.wk, attention.wv
            attention.__class__ = FusedAttention
            assert isinstance(attention, FusedAttention)
            attention.wqkv, attention.qkv_widths = wqkv, widths
        if not isinstance(feed_forward, FusedFeedForward):
            w13 = stacked_linear((feed_forward.w1, feed_forward.w3))
            del feed_forward.w1, feed_forward.w3
            feed_forward.__class__ = FusedFeedForward
            assert isinstance(feed_forward, FusedFeedForward)
            feed_forward.w13 = w13
    return model


def stacked_linear(parts: tuple[nn.Module, ...]) -> nn.Linear | FP8Linear:
    """One bias-free Linear whose output is the parts' outputs side by side. FP8 parts stack their
    scales with their rows (one scale per output row), as quantizing the stacked weight would."""
    fp8 = [part for part in parts if isinstance(part, FP8Linear)]
    if len(fp8) == len(parts):
        return FP8Linear(
            torch.cat([part.weight.detach() for part in fp8]),
            torch.cat([part.scale.detach() for part in fp8]),
        )
    plain = [part for part in parts if isinstance(part, nn.Linear)]
    if len(plain) != len(parts):
        raise TypeError(
            f"cannot stack {[type(part).__name__ for part in parts]}: FP8 and plain weights mixed"
        )
    weight = torch.cat([part.weight.detach() for part in plain])
    fused = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    fused.weight = nn.Parameter(weight, requires_grad=False)
    return fused
