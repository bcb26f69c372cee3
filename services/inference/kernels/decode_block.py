"""A decode step's transformer block in four projection kernels plus attention.

At batch 1 a decode step is bound by reading the weights, and the small kernels between the
projections (the two RMSNorms, the SwiGLU product, the residual adds) read almost nothing but each
costs a launch and a few microseconds of an otherwise idle GPU: ~100 of them in a 7B step. Here
each of them rides in a projection's kernel (skinny_gemm.Fusion):

    wqkv(rmsnorm(x))  ->  rotary + KV write + attention  ->  h = x + wo(.)
    silu(gate) * up of w13(rmsnorm(h))                    ->  h + w2(.)

`use_fused_decode_block(model)` swaps each (fused: model/fusion.py) TransformerBlock's class for
FusedDecodeBlock in place; its forward takes this path on CUDA decode steps of up to MAX_ROWS rows
in bf16/fp16 (bf16 or FP8 weights), and the model's own forward everywhere else (prefill, CPU, more
rows). Numerics: the kernels keep the normalised activations and the gate/up products in fp32 where
the model rounds them to bf16 between ops, so logits differ from the unfused path by bf16 rounding.

Tensor parallelism: wo and w2 are row-parallel and their block's output is summed over the ranks
(parallel.py hooks the attention and feed-forward modules, which this path does not call), so the
block sums it itself, and only rank 0 adds the residual before the sum.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed._functional_collectives as funcol
from torch import Tensor, nn

from services.inference.kernels import decode_gemm, fp8_linear, skinny_gemm
from services.inference.model.fp8 import FP8_DTYPE, FP8Linear
from services.inference.model.fusion import FusedAttention, FusedFeedForward
from services.inference.model.parallel import all_reduce_group
from services.inference.model.transformer import AttentionCache, RMSNorm, TransformerBlock

# Batch 1 only: there the GEMV kernel with the fused work beat the unfused step (7B bf16 on an H200:
# 4.40 -> 4.00 ms per step), while at 16 rows the fused tensor-core kernel lost to cuBLAS
# (5.2 -> 6.8 ms per step). Rows between were not measured.
MAX_ROWS = 1
_DTYPES = (torch.bfloat16, torch.float16)

if skinny_gemm.triton is not None:

    @torch.library.custom_op("llamagate::fused_projection", mutates_args=())
    def _fused_projection(
        x: Tensor,
        weight: Tensor,
        scale: Tensor | None,
        norm_weight: Tensor | None,
        eps: float,
        glu: bool,
        residual: Tensor | None,
    ) -> Tensor:
        rows = x.reshape(-1, x.shape[-1])
        if rows.stride(-1) != 1:
            rows = rows.contiguous()
        n = weight.shape[0] // 2 if glu else weight.shape[0]
        if residual is not None:
            residual = residual.reshape(rows.shape[0], n).contiguous()
        fusion = skinny_gemm.Fusion(norm_weight, eps, glu, residual)
        result = torch.empty(*x.shape[:-1], n, dtype=x.dtype, device=x.device)
        out = result.view(-1, n)
        if weight.dtype == FP8_DTYPE:
            assert scale is not None, "FP8 weights come with their scales"
            fp8_linear.launch(rows, weight, scale, out, fusion=fusion)
        else:
            decode_gemm.launch(rows, weight, out, fusion=fusion)
        return result

    @_fused_projection.register_fake
    def _(
        x: Tensor,
        weight: Tensor,
        scale: Tensor | None,
        norm_weight: Tensor | None,
        eps: float,
        glu: bool,
        residual: Tensor | None,
    ) -> Tensor:
        return x.new_empty(*x.shape[:-1], weight.shape[0] // 2 if glu else weight.shape[0])


def project(
    module: nn.Module,
    x: Tensor,
    norm: RMSNorm | None = None,
    glu: bool = False,
    residual: Tensor | None = None,
) -> Tensor:
    """module(norm(x)), then silu(gate) * up if `glu`, then + residual: one kernel."""
    return torch.ops.llamagate.fused_projection(
        x,
        module.weight,
        module.scale if isinstance(module, FP8Linear) else None,
        None if norm is None else norm.weight,
        0.0 if norm is None else norm.eps,
        glu,
        residual,
    )


class FusedDecodeBlock(TransformerBlock):
    """A TransformerBlock whose CUDA decode steps run as four fused projections and attention."""

    attention: FusedAttention
    feed_forward: FusedFeedForward
    # Set by use_fused_decode_block: the group the block's output is summed over (None at MP 1),
    # and whether this rank adds the residual (rank 0 of that group).
    sum_group: Any = None
    adds_residual: bool = True

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: AttentionCache | None) -> Tensor:
        if cache is None or not fused_path_applies(x):
            return super().forward(x, cos, sin, cache)
        return self.fused_forward(x, cos, sin, cache)

    def fused_forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: AttentionCache) -> Tensor:
        attention, feed_forward = self.attention, self.feed_forward
        b, t, _ = x.shape
        qkv = project(attention.wqkv, x, norm=self.attention_norm)
        q, k, v = (
            part.view(b, t, -1, attention.head_dim) for part in qkv.split(attention.qkv_widths, dim=-1)
        )
        mixed = cache.attend(attention.layer_id, q, k, v, cos, sin).reshape(b, t, -1)
        h = self._summed(project(attention.wo, mixed, residual=x if self.adds_residual else None))
        hidden = project(feed_forward.w13, h, norm=self.ffn_norm, glu=True)
        return self._summed(project(feed_forward.w2, hidden, residual=h if self.adds_residual else None))

    def _summed(self, partial: Tensor) -> Tensor:
        if self.sum_group is None:
            return partial
        return funcol.all_reduce(partial, "sum", self.sum_group)


def fused_path_applies(x: Tensor) -> bool:
    """CUDA decode steps ([b, 1, dim], b <= MAX_ROWS) in bf16/fp16."""
    return (
        skinny_gemm.triton is not None
        and x.is_cuda
        and x.dim() == 3
        and x.shape[1] == 1
        and x.shape[0] <= MAX_ROWS
        and x.dtype in _DTYPES
    )


def _fusable(layer: TransformerBlock) -> bool:
    attention, feed_forward = layer.attention, layer.feed_forward
    if not isinstance(attention, FusedAttention) or not isinstance(feed_forward, FusedFeedForward):
        return False
    projections = (attention.wqkv, attention.wo, feed_forward.w13, feed_forward.w2)
    dtype = layer.attention_norm.weight.dtype
    return all(
        p.weight.stride(-1) == 1 and (isinstance(p, FP8Linear) or p.weight.dtype == dtype)
        for p in projections
    )


def use_fused_decode_block(model: nn.Module, on: bool = True) -> int:
    """Give every fusable block the fused decode path (or, with on=False, the model's own forward
    back), in place; returns how many blocks have it. A block is fusable once fusion.py has stacked
    its projections and they are bf16/fp16 (as its norms) or FP8."""
    fused = 0
    layers = model.get_submodule("layers")
    assert isinstance(layers, nn.ModuleList)
    for layer in layers:
        assert isinstance(layer, TransformerBlock)
        if not on or not _fusable(layer):
            layer.__class__ = TransformerBlock
            continue
        layer.__class__ = FusedDecodeBlock
        assert isinstance(layer, FusedDecodeBlock)
        group = all_reduce_group(layer.attention)
        layer.sum_group = group
        layer.adds_residual = group is None or torch.distributed.get_rank(group) == 0
        fused += 1
    return fused
