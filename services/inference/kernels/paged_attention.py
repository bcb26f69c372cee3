"""Decode attention over a paged KV cache: one query token per row, keys/values found through
the row's block table.

On CUDA a Triton kernel reads the blocks in place (no gather copy, no host sync, so the decode
step can be captured in a CUDA graph and compiled: it is registered as an opaque custom op). On
CPU, and as the reference the kernel is tested against, the blocks are gathered and SDPA runs
with a length mask. Both take a cache in the queries' dtype or in float8 e4m3 (converted to the
queries' dtype as it is read); `write_kv` converts new keys/values to the cache's dtype.

One program per (row, kv head) leaves most of the GPU idle at small batch (batch 1 of a 7B model
is 32 programs on 132 SMs), so there each row's context is also split into chunks run by separate
programs (flash-decoding); a second small kernel merges the chunks' partial softmax results. The
split count depends only on the batch shape, so a captured graph keeps it fixed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from services.inference.model.fp8 import FP8_DTYPE, saturate_to_fp8

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs have no Triton; the reference path serves them.
    triton = None

# Enough programs to cover the GPU's SMs about twice; at most this many chunks per row.
TARGET_PROGRAMS = 264
MAX_SPLITS = 16


def num_splits(rows: int, kv_heads: int) -> int:
    programs = rows * kv_heads
    if programs >= TARGET_PROGRAMS // 2:
        return 1
    return max(1, min(MAX_SPLITS, -(-TARGET_PROGRAMS // programs)))


def decode_tiles(fp8_cache: bool, splits: int, cuda_cores: bool = False) -> tuple[int, int]:
    """(keys per tile, pipeline depth) of the decode kernel. An fp8 cache's tile of 64 keys is half a
    bf16 tile's bytes; without splits (many rows) 128-key tiles two deep read it 14% faster on an
    H200 (bench/paged_attention_bench.py); bf16 caches and split steps keep the tiles they were
    tuned with. On CUDA cores a tile's keys and values are held in registers as fp32: 32 keys of
    128 dims are 32 registers a thread each at 4 warps (not yet tuned on a GPU)."""
    if cuda_cores:
        return (32, 2)
    return (128, 2) if fp8_cache and splits == 1 else (64, 3)


# Query heads per kv head up to which the engine's CUDA-core option applies: one (7B, 13B) or two.
# Larger groups fill a tensor-core dot's 16 rows better, and their fp32 products
# [group, keys, head_dim] outgrow the registers.
CUDA_CORE_MAX_GROUP = 2


def cuda_cores_suit(heads: int, kv_heads: int) -> bool:
    """Whether decode attention on CUDA cores suits a model of `heads` query and `kv_heads` kv heads."""
    return heads // kv_heads <= CUDA_CORE_MAX_GROUP


def decode_reference(
    q: Tensor, k_cache: Tensor, v_cache: Tensor, block_tables: Tensor, context_lens: Tensor
) -> Tensor:
    """q [b, h, d]; caches [num_blocks, block_size, kvh, d]; -> [b, h, d]."""
    block_size = k_cache.shape[1]
    longest = int(context_lens.max())
    n_blocks = (longest + block_size - 1) // block_size
    table = block_tables[:, :n_blocks].long()
    keys = k_cache[table].flatten(1, 2)[:, :longest].to(q.dtype)  # [b, L, kvh, d]
    values = v_cache[table].flatten(1, 2)[:, :longest].to(q.dtype)
    mask = torch.arange(longest, device=q.device)[None, :] < context_lens[:, None]
    out = F.scaled_dot_product_attention(
        q.unsqueeze(2),  # [b, h, 1, d]
        keys.transpose(1, 2),
        values.transpose(1, 2),
        attn_mask=mask[:, None, None, :],
        enable_gqa=True,
    )
    return out.squeeze(2)


if triton is not None:

    @triton.jit
    def _dot(a, b, IEEE: tl.constexpr):  # type: ignore[no-untyped-def]
        # fp32 operands (CPU-parity checks) must not silently drop to tf32.
        return tl.dot(a, b, input_precision="ieee") if IEEE else tl.dot(a, b)

    @triton.jit
    def _fp8_dot(a, b, DOT_FP32: tl.constexpr):  # type: ignore[no-untyped-def]
        # e4m3 operands on FP8 tensor cores; Triton's CPU interpreter has no fp8 dot, and fp32 holds
        # every e4m3 value and product exactly.
        return _dot(a.to(tl.float32), b.to(tl.float32), True) if DOT_FP32 else tl.dot(a, b)

    @triton.jit
    def _decode_kernel(  # type: ignore[no-untyped-def]
        Q,
        K,
        V,
        BT,
        LENS,
        O,  # noqa: E741
        M_PART,
        L_PART,
        ACC_PART,
        scale,
        stride_qb,
        stride_qh,
        stride_kb,
        stride_kt,
        stride_kh,
        stride_btb,
        stride_ob,
        stride_oh,
        GROUP: tl.constexpr,
        GROUP_PAD: tl.constexpr,
        HEAD_DIM: tl.constexpr,
        BLOCK_SIZE: tl.constexpr,
        BLOCK_N: tl.constexpr,
        IEEE: tl.constexpr,
        NUM_HEADS: tl.constexpr,
        SPLITS: tl.constexpr,
        FP8_DOTS: tl.constexpr = 0,
        DOT_FP32: tl.constexpr = False,
        CUDA_CORES: tl.constexpr = False,
    ):
        # One program per (row, kv head): the GROUP query heads sharing that kv head are one
        # small matrix, so each key/value is read once for all of them (grouped-query attention).
        row = tl.program_id(0)
        kv_head = tl.program_id(1)
        split = tl.program_id(2)
        length = tl.load(LENS + row)
        if SPLITS == 1:
            lo = 0
            hi = length
        else:
            chunk = tl.cdiv(tl.cdiv(length, SPLITS), BLOCK_N) * BLOCK_N
            lo = split * chunk
            hi = tl.minimum(lo + chunk, length)
        g = tl.arange(0, GROUP_PAD)
        d = tl.arange(0, HEAD_DIM)
        heads = kv_head * GROUP + g
        q = tl.load(
            Q + row * stride_qb + heads[:, None] * stride_qh + d[None, :],
            mask=(g < GROUP)[:, None],
            other=0.0,
        )
        if CUDA_CORES:
            q_f32 = q.to(tl.float32)
        if FP8_DOTS > 0:
            # e4m3 queries, one scale per query row (its absmax maps to 448), so that q.k runs on
            # FP8 tensor cores straight from an fp8 cache's bytes; the scale goes onto the scores.
            q_f32 = q.to(tl.float32)
            q_scale = tl.maximum(tl.max(tl.abs(q_f32), 1), 1e-12) / 448.0
            q_dot = (q_f32 / q_scale[:, None]).to(K.dtype.element_ty)
            s_scale = q_scale * scale
        m = tl.full([GROUP_PAD], float("-inf"), tl.float32)
        l_sum = tl.zeros([GROUP_PAD], tl.float32)
        acc = tl.zeros([GROUP_PAD, HEAD_DIM], tl.float32)
        for start in range(lo, hi, BLOCK_N):
            n = start + tl.arange(0, BLOCK_N)
            valid = n < hi
            block = tl.load(BT + row * stride_btb + n // BLOCK_SIZE, mask=valid, other=0).to(tl.int64)
            offsets = block * stride_kb + (n % BLOCK_SIZE) * stride_kt + kv_head * stride_kh
            k = tl.load(K + offsets[:, None] + d[None, :], mask=valid[:, None], other=0.0)
            v = tl.load(V + offsets[:, None] + d[None, :], mask=valid[:, None], other=0.0)
            if CUDA_CORES:
                # [G, 1, D] * [1, N, D] summed over D, in fp32 on CUDA cores: the group is not padded
                # to the 16 rows a tensor-core dot takes (a 7B kv head has a group of one) and no
                # tile is staged in shared memory, so more programs share an SM to hide latency.
                s = tl.sum(q_f32[:, None, :] * k.to(tl.float32)[None, :, :], 2) * scale
            elif FP8_DOTS > 0:
                s = _fp8_dot(q_dot, tl.trans(k), DOT_FP32) * s_scale[:, None]
            else:
                # An fp8 cache is widened to q's dtype in registers: the dots run as for a bf16 cache.
                s = _dot(q, tl.trans(k.to(q.dtype)), IEEE) * scale
            s = tl.where(valid[None, :], s, float("-inf"))
            m_new = tl.maximum(m, tl.max(s, 1))
            alpha = tl.exp(m - m_new)
            p = tl.exp(s - m_new[:, None])
            l_sum = l_sum * alpha + tl.sum(p, 1)
            if CUDA_CORES:
                pv = tl.sum(p[:, :, None] * v.to(tl.float32)[None, :, :], 1)
            elif FP8_DOTS == 2:
                # Probabilities in e4m3 too (scaled by 448 into its range): p.v on FP8 tensor cores.
                pv = _fp8_dot((p * 448.0).to(V.dtype.element_ty), v, DOT_FP32) * (1.0 / 448.0)
            else:
                pv = _dot(p.to(q.dtype), v.to(q.dtype), IEEE)
            acc = acc * alpha[:, None] + pv
            m = m_new
        if SPLITS == 1:
            out = acc / l_sum[:, None]
            tl.store(
                O + row * stride_ob + heads[:, None] * stride_oh + d[None, :],
                out.to(O.dtype.element_ty),
                mask=(g < GROUP)[:, None],
            )
        else:
            # Unnormalised partials of this chunk; an empty chunk leaves m = -inf, l = 0, acc = 0.
            part = (row * NUM_HEADS + heads) * SPLITS + split
            tl.store(M_PART + part, m, mask=g < GROUP)
            tl.store(L_PART + part, l_sum, mask=g < GROUP)
            tl.store(ACC_PART + part[:, None] * HEAD_DIM + d[None, :], acc, mask=(g < GROUP)[:, None])

    @triton.jit
    def _merge_kernel(  # type: ignore[no-untyped-def]
        M_PART,
        L_PART,
        ACC_PART,
        O,  # noqa: E741
        stride_ob,
        stride_oh,
        NUM_HEADS: tl.constexpr,
        HEAD_DIM: tl.constexpr,
        SPLITS: tl.constexpr,
        SPLITS_PAD: tl.constexpr,
    ):
        # One program per (row, head): rescale each chunk to the common max and normalise once.
        row = tl.program_id(0)
        head = tl.program_id(1)
        s = tl.arange(0, SPLITS_PAD)
        d = tl.arange(0, HEAD_DIM)
        part = (row * NUM_HEADS + head) * SPLITS + s
        used = s < SPLITS
        m = tl.load(M_PART + part, mask=used, other=float("-inf"))
        l_sum = tl.load(L_PART + part, mask=used, other=0.0)
        acc = tl.load(ACC_PART + part[:, None] * HEAD_DIM + d[None, :], mask=used[:, None], other=0.0)
        weight = tl.exp(m - tl.max(m, 0))  # chunk 0 is never empty, so the max is finite
        out = tl.sum(acc * weight[:, None], 0) / tl.sum(l_sum * weight, 0)
        tl.store(O + row * stride_ob + head * stride_oh + d, out.to(O.dtype.element_ty))

    def merge_splits(m_part: Tensor, l_part: Tensor, acc_part: Tensor, out: Tensor, splits: int) -> None:
        """Write out [rows, h, d] from the unnormalised partials of each (row, head)'s splits:
        m/l [rows, h, splits], acc [rows, h, splits, d], contiguous. Prefill (paged_prefill.py)
        merges its split queries with this too, one row per query."""
        rows, heads, head_dim = out.shape
        _merge_kernel[(rows, heads)](
            m_part,
            l_part,
            acc_part,
            out,
            out.stride(0),
            out.stride(1),
            NUM_HEADS=heads,
            HEAD_DIM=head_dim,
            SPLITS=splits,
            SPLITS_PAD=triton.next_power_of_2(splits),
        )

    def launch_decode(
        q: Tensor,
        k_cache: Tensor,
        v_cache: Tensor,
        block_tables: Tensor,
        context_lens: Tensor,
        splits: int,
        tiles: tuple[int, int, int] | None = None,
        fp8_dots: int = 0,
        cuda_cores: bool = False,
    ) -> Tensor:
        """Decode attention of q [b, h, d] over one layer's caches, each row's keys in `splits`
        chunks. tiles: (keys per tile, warps, pipeline depth), default decode_tiles' with 4 warps.
        fp8_dots (an fp8 cache only): 0 widens keys and values for bf16/fp16 dots; 1 runs q.k on
        FP8 tensor cores (per-row e4m3 queries); 2 also p.v (probabilities in e4m3). cuda_cores:
        both products as fp32 multiply-adds instead of dots, for groups of few query heads. The
        engine uses fp8_dots 0, and cuda_cores with --decode-attention cuda-cores;
        bench/paged_attention_bench.py times every combination."""
        b, heads, head_dim = q.shape
        kv_heads = k_cache.shape[2]
        group = heads // kv_heads
        if fp8_dots and k_cache.dtype != FP8_DTYPE:
            raise ValueError("fp8_dots needs an fp8 cache")
        if fp8_dots and cuda_cores:
            raise ValueError("fp8_dots runs on tensor cores: it cannot be combined with cuda_cores")
        out = torch.empty_like(q)
        if splits > 1:
            m_part = torch.empty(b, heads, splits, dtype=torch.float32, device=q.device)
            l_part = torch.empty_like(m_part)
            acc_part = torch.empty(b, heads, splits, head_dim, dtype=torch.float32, device=q.device)
        else:
            m_part = l_part = acc_part = out  # unused by the single-pass kernel
        if tiles is None:
            block_n, stages = decode_tiles(k_cache.element_size() == 1, splits, cuda_cores)
            tiles = (block_n, 4, stages)
        block_n, warps, stages = tiles
        _decode_kernel[(b, kv_heads, splits)](
            q,
            k_cache,
            v_cache,
            block_tables,
            context_lens,
            out,
            m_part,
            l_part,
            acc_part,
            1.0 / math.sqrt(head_dim),
            q.stride(0),
            q.stride(1),
            k_cache.stride(0),
            k_cache.stride(1),
            k_cache.stride(2),
            block_tables.stride(0),
            out.stride(0),
            out.stride(1),
            GROUP=group,
            # A tensor-core dot takes at least 16 rows.
            GROUP_PAD=triton.next_power_of_2(group) if cuda_cores else max(16, triton.next_power_of_2(group)),
            HEAD_DIM=head_dim,
            BLOCK_SIZE=k_cache.shape[1],
            BLOCK_N=block_n,
            IEEE=q.dtype == torch.float32,
            NUM_HEADS=heads,
            SPLITS=splits,
            FP8_DOTS=fp8_dots,
            DOT_FP32=not q.is_cuda,
            CUDA_CORES=cuda_cores,
            num_warps=warps,
            num_stages=stages,
        )
        if splits > 1:
            merge_splits(m_part, l_part, acc_part, out, splits)
        return out

    @torch.library.custom_op("llamagate::paged_decode", mutates_args=())
    def _paged_decode(
        q: Tensor,
        k_all: Tensor,
        v_all: Tensor,
        layer: int,
        block_tables: Tensor,
        context_lens: Tensor,
        cuda_cores: bool = False,
    ) -> Tensor:
        kv_heads = k_all.shape[3]
        splits = num_splits(q.shape[0], kv_heads)
        return launch_decode(
            q.contiguous(),
            k_all[layer],
            v_all[layer],
            block_tables,
            context_lens.contiguous(),
            splits,
            cuda_cores=cuda_cores,
        )

    @_paged_decode.register_fake
    def _(
        q: Tensor,
        k_all: Tensor,
        v_all: Tensor,
        layer: int,
        block_tables: Tensor,
        context_lens: Tensor,
        cuda_cores: bool = False,
    ) -> Tensor:
        return torch.empty_like(q)


def to_cache_dtype(x: Tensor, dtype: torch.dtype) -> Tensor:
    """New keys or values as a cache of `dtype` stores them (an e4m3 cache saturates at +-448)."""
    return saturate_to_fp8(x) if dtype == FP8_DTYPE else x.to(dtype)


@torch.library.custom_op("llamagate::write_kv", mutates_args=("k_all", "v_all"))
def _write_kv(k_all: Tensor, v_all: Tensor, layer: int, slots: Tensor, k: Tensor, v: Tensor) -> None:
    kv_heads, head_dim = k.shape[-2:]
    for cache, new in ((k_all, k), (v_all, v)):
        rows = cache[layer].view(-1, kv_heads, head_dim)
        stored = to_cache_dtype(new.reshape(-1, kv_heads, head_dim), cache.dtype)
        if cache.dtype == FP8_DTYPE:  # index_copy_ has no float8 kernel; the same bytes as uint8 do
            rows, stored = rows.view(torch.uint8), stored.view(torch.uint8)
        rows.index_copy_(0, slots, stored)


@_write_kv.register_fake
def _(k_all: Tensor, v_all: Tensor, layer: int, slots: Tensor, k: Tensor, v: Tensor) -> None:
    return None


def write_kv(k_all: Tensor, v_all: Tensor, layer: int, slots: Tensor, k: Tensor, v: Tensor) -> None:
    """Store new keys/values at flat cache slots of one layer, in place, in the cache's dtype.

    An opaque op taking the whole cache (not a view of it) so torch.compile updates the cache in
    place; traced as a plain index_put on a view it clones the whole cache every step.
    """
    torch.ops.llamagate.write_kv(k_all, v_all, layer, slots, k, v)


def decode(
    q: Tensor,
    k_all: Tensor,
    v_all: Tensor,
    layer: int,
    block_tables: Tensor,
    context_lens: Tensor,
    cuda_cores: bool = False,
) -> Tensor:
    """q [b, h, d]; k_all/v_all [layers, num_blocks, block_size, kvh, d] -> [b, h, d] for `layer`.
    cuda_cores: the kernel's products on CUDA cores (launch_decode)."""
    if q.is_cuda and triton is not None:
        return torch.ops.llamagate.paged_decode(
            q, k_all, v_all, layer, block_tables, context_lens, cuda_cores
        )
    return decode_reference(q, k_all[layer], v_all[layer], block_tables, context_lens)
