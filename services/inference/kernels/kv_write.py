"""A decode step's rotary embedding and KV-cache write as one kernel per layer.

Unfused, each layer of a decode step runs an inductor kernel for rotary (q and k), another for the
slot index math, and two `index_copy_` kernels (k, v): four launches for a few KiB of data. Here
one Triton program per (row, head) rotates its head of q into a new tensor, or rotates its head of
k and copies its head of v straight into the row's cache slot. Registered as an opaque custom op
(like paged_attention's ops) so torch.compile(fullgraph=True) and CUDA graph capture keep it whole.

`rotary_write_kv_reference` (apply_rotary + write_kv's index_copy_) is what the kernel is tested
against and what CPU runs use. Into an fp8 cache the kernel stores what the reference stores: k
rounded to its own dtype after rotary (as apply_rotary returns it), then saturated to +-448 and
rounded to e4m3.
"""

from __future__ import annotations

import torch
from torch import Tensor

from services.inference.kernels import paged_attention
from services.inference.model.fp8 import FP8_DTYPE
from services.inference.model.transformer import apply_rotary

try:
    import triton
    import triton.language as tl

    from services.inference.kernels.e4m3 import round_to_e4m3
except ImportError:  # CPU-only installs: the reference path serves them.
    triton = None


def fused_available(device: torch.device, head_dim: int) -> bool:
    """Whether decode steps on `device` can use the kernel (it splits heads in power-of-two halves)."""
    return device.type == "cuda" and triton is not None and head_dim >= 2 and head_dim & (head_dim - 1) == 0


def rotary_write_kv_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cos: Tensor,
    sin: Tensor,
    k_all: Tensor,
    v_all: Tensor,
    layer: int,
    slots: Tensor,
) -> Tensor:
    """q [b, h, d], k/v [b, kvh, d] (before rotary), cos/sin [b, d/2] -> rotated q; k (rotated) and v
    are stored at `slots` [b] of `layer`."""
    q = apply_rotary(q[:, None], cos[:, None], sin[:, None])[:, 0]
    k = apply_rotary(k[:, None], cos[:, None], sin[:, None])[:, 0]
    paged_attention.write_kv(k_all, v_all, layer, slots, k, v)
    return q


if triton is not None:

    @triton.jit
    def _store(dst, x, src_dtype: tl.constexpr, FP8: tl.constexpr):  # type: ignore[no-untyped-def]
        # x as the reference stores it: in dst's dtype; for an fp8 cache rounded to the source's
        # dtype first (apply_rotary returns k in it), then saturated and rounded to e4m3.
        if FP8:
            x = round_to_e4m3(x.to(src_dtype).to(tl.float32))
        tl.store(dst, x.to(dst.dtype.element_ty))

    @triton.jit
    def _rotate_head(src, dst, i, cos, sin, FP8: tl.constexpr):  # type: ignore[no-untyped-def]
        # Interleaved pairs (x[2i], x[2i+1]) as Meta's complex formulation; rotated in fp32.
        x0 = tl.load(src + 2 * i).to(tl.float32)
        x1 = tl.load(src + 2 * i + 1).to(tl.float32)
        _store(dst + 2 * i, x0 * cos - x1 * sin, src.dtype.element_ty, FP8)
        _store(dst + 2 * i + 1, x0 * sin + x1 * cos, src.dtype.element_ty, FP8)

    @triton.jit
    def _rotary_write_kernel(  # type: ignore[no-untyped-def]
        Q,
        K,
        V,
        COS,
        SIN,
        K_CACHE,
        V_CACHE,
        SLOTS,
        Q_OUT,
        stride_qb,
        stride_qh,
        stride_kb,
        stride_kh,
        stride_vb,
        stride_vh,
        stride_cos,
        stride_sin,
        stride_slots,
        stride_slot,
        stride_cache_h,
        stride_ob,
        stride_oh,
        NUM_HEADS: tl.constexpr,
        HALF: tl.constexpr,
        FP8: tl.constexpr,
    ):
        row = tl.program_id(0)
        head = tl.program_id(1)
        i = tl.arange(0, HALF)
        cos = tl.load(COS + row * stride_cos + i)
        sin = tl.load(SIN + row * stride_sin + i)
        if head < NUM_HEADS:
            _rotate_head(
                Q + row * stride_qb + head * stride_qh,
                Q_OUT + row * stride_ob + head * stride_oh,
                i,
                cos,
                sin,
                False,
            )
        else:
            kv_head = head - NUM_HEADS
            slot = tl.load(SLOTS + row * stride_slots).to(tl.int64)
            cache_offset = slot * stride_slot + kv_head * stride_cache_h
            _rotate_head(K + row * stride_kb + kv_head * stride_kh, K_CACHE + cache_offset, i, cos, sin, FP8)
            d = tl.arange(0, 2 * HALF)
            values = tl.load(V + row * stride_vb + kv_head * stride_vh + d)
            _store(V_CACHE + cache_offset + d, values, V.dtype.element_ty, FP8)

    @torch.library.custom_op("llamagate::rotary_write_kv", mutates_args=("k_all", "v_all"))
    def _rotary_write_kv(
        q: Tensor,
        k: Tensor,
        v: Tensor,
        cos: Tensor,
        sin: Tensor,
        k_all: Tensor,
        v_all: Tensor,
        layer: int,
        slots: Tensor,
    ) -> Tensor:
        b, heads, head_dim = q.shape
        kv_heads = k.shape[1]
        # The kernel reads each head's elements contiguously; q/k/v are column slices of the wqkv output.
        q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
        cos, sin = cos.contiguous(), sin.contiguous()
        k_cache = k_all[layer].view(-1, kv_heads, head_dim)
        v_cache = v_all[layer].view(-1, kv_heads, head_dim)
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        _rotary_write_kernel[(b, heads + kv_heads)](
            q,
            k,
            v,
            cos,
            sin,
            k_cache,
            v_cache,
            slots,
            out,
            q.stride(0),
            q.stride(1),
            k.stride(0),
            k.stride(1),
            v.stride(0),
            v.stride(1),
            cos.stride(0),
            sin.stride(0),
            slots.stride(0),  # a column of the runner's packed inputs
            k_cache.stride(0),
            k_cache.stride(1),
            out.stride(0),
            out.stride(1),
            NUM_HEADS=heads,
            HALF=head_dim // 2,
            FP8=k_all.dtype == FP8_DTYPE,
            num_warps=1,
        )
        return out

    @_rotary_write_kv.register_fake
    def _(
        q: Tensor,
        k: Tensor,
        v: Tensor,
        cos: Tensor,
        sin: Tensor,
        k_all: Tensor,
        v_all: Tensor,
        layer: int,
        slots: Tensor,
    ) -> Tensor:
        return torch.empty(q.shape, dtype=q.dtype, device=q.device)


def rotary_write_kv(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cos: Tensor,
    sin: Tensor,
    k_all: Tensor,
    v_all: Tensor,
    layer: int,
    slots: Tensor,
) -> Tensor:
    """The fused kernel (callers check `fused_available`, or run it under TRITON_INTERPRET on CPU);
    same contract as `rotary_write_kv_reference`."""
    return torch.ops.llamagate.rotary_write_kv(q, k, v, cos, sin, k_all, v_all, layer, slots)
