"""Prefill attention over a paged KV cache: rows of new query tokens whose keys/values are already
stored in the cache, each attending causally to its whole sequence through its block table.

A row's queries are its new tokens at `positions` [b, t] (right padding repeats the last position,
as the packer writes it, so a padded query is harmless); query i sees keys 0..positions[i], which
for a chunk continuing a cached prefix of c tokens is bottom-right aligned causal attention
(keys 0..c+i).

On CUDA a Triton kernel reads the blocks in place, flash-attention 2 style: a tile of queries
against a tile of keys at a time, online softmax in fp32, key tiles past the tile's last query
never visited. Grouped-query heads sharing a kv head are stacked into one query tile, so each
key/value is loaded once for all of them. A chunk of few queries over a long prefix (a new chat
message after its history) makes too few programs to fill the GPU, so, like decode
(paged_attention.py), its keys are then split across programs and the partial softmax results
merged. Nothing depends on the lengths' values on the host: no sync, no gather copy.

On CPU, and as the reference the kernel is tested against, the blocks are gathered and SDPA runs
with a causal mask. Like decode, both read a cache in the queries' dtype or in float8 e4m3,
converted to the queries' dtype as it is read.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from services.inference.kernels import paged_attention

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs have no Triton; the reference path serves them.
    triton = None

# Query rows (tokens x grouped heads) per program, keys per inner step, pipeline depth.
TILE_ROWS = 64
BLOCK_N = 64
NUM_STAGES = 2


def prefill_reference(
    q: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    block_tables: Tensor,
    context_lens: Tensor,
    positions: Tensor,
) -> Tensor:
    """q [b, t, h, d]; caches [num_blocks, block_size, kvh, d]; positions [b, t] -> [b, t, h, d]."""
    block_size = k_cache.shape[1]
    longest = int(context_lens.max())
    n_blocks = (longest + block_size - 1) // block_size
    table = block_tables[:, :n_blocks].long()
    keys = k_cache[table].flatten(1, 2)[:, :longest].to(q.dtype)  # [b, L, kvh, d]
    values = v_cache[table].flatten(1, 2)[:, :longest].to(q.dtype)
    key_pos = torch.arange(longest, device=q.device)
    mask = (key_pos[None, None, :] <= positions[:, :, None]) & (
        key_pos[None, None, :] < context_lens[:, None, None]
    )
    return F.scaled_dot_product_attention(
        q.transpose(1, 2),
        keys.transpose(1, 2),
        values.transpose(1, 2),
        attn_mask=mask.unsqueeze(1),
        enable_gqa=True,
    ).transpose(1, 2)


def tile_queries(t: int, group: int) -> tuple[int, int]:
    """(queries per tile, grouped heads padded to a power of two): about TILE_ROWS rows, at
    least the 16 a tensor-core dot needs, no wider than the chunk."""
    group_pad = 1 if group == 1 else 1 << (group - 1).bit_length()
    block_m = min(1 << max(t - 1, 0).bit_length(), max(1, TILE_ROWS // group_pad))
    return max(block_m, -(-16 // group_pad)), group_pad


def num_splits(rows: int, query_tiles: int, kv_heads: int) -> int:
    """Key splits per program: enough programs to cover the GPU's SMs about twice (decode's rule)."""
    return paged_attention.num_splits(rows * query_tiles, kv_heads)


def split_counts(kv_heads: int) -> list[int]:
    """Every split count `num_splits` gives a step over `kv_heads` kv heads, 1 included (it falls
    as rows x query tiles grow, to 1 once they fill the GPU)."""
    counts = [num_splits(1, 1, kv_heads)]
    tiles = 1
    while counts[-1] > 1:
        tiles += 1
        if (splits := num_splits(1, tiles, kv_heads)) != counts[-1]:
            counts.append(splits)
    return counts


if triton is not None:

    @triton.jit
    def _key_tile(  # type: ignore[no-untyped-def]
        q,
        acc,
        l_sum,
        m,
        start,
        end,
        pos,
        row,
        kv_head,
        BT,
        K,
        V,
        qk_scale,
        stride_btb,
        stride_kb,
        stride_kt,
        stride_kh,
        HEAD_DIM: tl.constexpr,
        BLOCK_SIZE: tl.constexpr,
        BLOCK_N: tl.constexpr,
        IEEE: tl.constexpr,
        MASKED: tl.constexpr,
    ):
        # One step of the online softmax: keys start..start + BLOCK_N against the query tile.
        n = start + tl.arange(0, BLOCK_N)
        d = tl.arange(0, HEAD_DIM)
        valid = n < end
        if MASKED:
            block = tl.load(BT + row * stride_btb + n // BLOCK_SIZE, mask=valid, other=0).to(tl.int64)
        else:
            block = tl.load(BT + row * stride_btb + n // BLOCK_SIZE).to(tl.int64)
        offsets = block * stride_kb + (n % BLOCK_SIZE) * stride_kt + kv_head * stride_kh
        if MASKED:
            k = tl.load(K + offsets[:, None] + d[None, :], mask=valid[:, None], other=0.0)
            v = tl.load(V + offsets[:, None] + d[None, :], mask=valid[:, None], other=0.0)
        else:
            k = tl.load(K + offsets[:, None] + d[None, :])
            v = tl.load(V + offsets[:, None] + d[None, :])
        # An fp8 cache is widened to q's dtype in registers: the dots run as for a bf16 cache.
        k = k.to(q.dtype)
        v = v.to(q.dtype)
        # fp32 caches (CPU-parity checks) must not silently drop to tf32.
        if IEEE:
            s = tl.dot(q, tl.trans(k), input_precision="ieee") * qk_scale
        else:
            s = tl.dot(q, tl.trans(k)) * qk_scale
        if MASKED:
            s = tl.where(valid[None, :] & (n[None, :] <= pos[:, None]), s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        # A row with no visible key yet (a later split) keeps m = -inf; exp2(-inf - 0) = 0
        # instead of the NaN of -inf - -inf.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m - m_safe)
        p = tl.exp2(s - m_safe[:, None])
        l_sum = l_sum * alpha + tl.sum(p, 1)
        if IEEE:
            acc = acc * alpha[:, None] + tl.dot(p.to(q.dtype), v, input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(q.dtype), v)
        return acc, l_sum, m_new

    # Chunk widths, table widths, the packed positions' row stride and the split count vary from step
    # to step: specializing on them (==1, multiples of 16) would compile a variant for each on
    # first use, mid-request.
    @triton.jit(do_not_specialize=["POS", "T", "stride_btb", "stride_pb", "num_heads", "splits"])
    def _prefill_kernel(  # type: ignore[no-untyped-def]
        Q,
        K,
        V,
        BT,
        LENS,
        POS,
        O,  # noqa: E741
        M_PART,
        L_PART,
        ACC_PART,
        qk_scale,
        T,
        num_heads,
        splits,
        stride_qb,
        stride_qt,
        stride_qh,
        stride_kb,
        stride_kt,
        stride_kh,
        stride_btb,
        stride_pb,
        stride_pt,
        stride_ob,
        stride_ot,
        stride_oh,
        GROUP: tl.constexpr,
        GROUP_PAD: tl.constexpr,
        BLOCK_M: tl.constexpr,
        HEAD_DIM: tl.constexpr,
        BLOCK_SIZE: tl.constexpr,
        BLOCK_N: tl.constexpr,
        IEEE: tl.constexpr,
        SPLIT: tl.constexpr,
    ):
        # One program per (row, query tile, kv head, key split). Tile row r is query
        # r // GROUP_PAD of the tile, with query head kv_head * GROUP + r % GROUP_PAD.
        row = tl.program_id(0)
        tile = tl.program_id(1)
        kv_head = tl.program_id(2) // splits
        split = tl.program_id(2) % splits
        r = tl.arange(0, BLOCK_M * GROUP_PAD)
        query = tile * BLOCK_M + r // GROUP_PAD
        g = r % GROUP_PAD
        head = kv_head * GROUP + g
        real = (query < T) & (g < GROUP)
        d = tl.arange(0, HEAD_DIM)
        # Queries past the chunk take position 0 (key 0 stays visible): every row keeps a finite
        # max and a nonzero sum.
        pos = tl.load(POS + row * stride_pb + query * stride_pt, mask=query < T, other=0)
        q = tl.load(
            Q + row * stride_qb + query[:, None] * stride_qt + head[:, None] * stride_qh + d[None, :],
            mask=real[:, None],
            other=0.0,
        )
        # Causal: no key past the tile's last query position is read.
        hi = tl.minimum(tl.max(pos, 0) + 1, tl.load(LENS + row))
        if SPLIT:
            chunk = tl.cdiv(tl.cdiv(hi, splits), BLOCK_N) * BLOCK_N
            lo = split * chunk
            end = tl.minimum(lo + chunk, hi)
        else:
            lo = 0
            end = hi
        m = tl.full([BLOCK_M * GROUP_PAD], float("-inf"), tl.float32)
        l_sum = tl.zeros([BLOCK_M * GROUP_PAD], tl.float32)
        acc = tl.zeros([BLOCK_M * GROUP_PAD, HEAD_DIM], tl.float32)
        # Key tiles every query of the tile sees in full need no mask; only those past the tile's
        # first position (the diagonal) and a ragged last tile do.
        first = tl.min(tl.where(query < T, pos, hi), 0)
        full_end = tl.minimum(lo + tl.maximum((first + 1 - lo) // BLOCK_N, 0) * BLOCK_N, end)
        for start in range(lo, full_end, BLOCK_N):
            acc, l_sum, m = _key_tile(
                q, acc, l_sum, m, start, end, pos, row, kv_head, BT, K, V, qk_scale,
                stride_btb, stride_kb, stride_kt, stride_kh,
                HEAD_DIM, BLOCK_SIZE, BLOCK_N, IEEE, False,
            )  # fmt: skip
        for start in range(full_end, end, BLOCK_N):
            acc, l_sum, m = _key_tile(
                q, acc, l_sum, m, start, end, pos, row, kv_head, BT, K, V, qk_scale,
                stride_btb, stride_kb, stride_kt, stride_kh,
                HEAD_DIM, BLOCK_SIZE, BLOCK_N, IEEE, True,
            )  # fmt: skip
        if not SPLIT:
            out = acc / l_sum[:, None]
            tl.store(
                O + row * stride_ob + query[:, None] * stride_ot + head[:, None] * stride_oh + d[None, :],
                out.to(O.dtype.element_ty),
                mask=real[:, None],
            )
        else:
            # Partials as decode's merge kernel reads them: one "row" per (row, query), natural-log
            # max (the scores above are in log2 units). An empty split stores -inf, 0, 0.
            part = ((row * T + query) * num_heads + head) * splits + split
            tl.store(M_PART + part, m * 0.6931471805599453, mask=real)
            tl.store(L_PART + part, l_sum, mask=real)
            tl.store(ACC_PART + part[:, None] * HEAD_DIM + d[None, :], acc, mask=real[:, None])

    def prefill_triton(
        q: Tensor,
        k_cache: Tensor,
        v_cache: Tensor,
        block_tables: Tensor,
        context_lens: Tensor,
        positions: Tensor,
        splits: int | None = None,
    ) -> Tensor:
        """The kernel launch, on whatever device the tensors are (CPU under TRITON_INTERPRET=1).

        Shapes as `prefill_reference`; `splits` overrides the key-split rule (tests cover both).
        """
        b, t, heads, head_dim = q.shape
        kv_heads = k_cache.shape[2]
        group = heads // kv_heads
        block_m, group_pad = tile_queries(t, group)
        tiles = triton.cdiv(t, block_m)
        if splits is None:
            splits = num_splits(b, tiles, kv_heads)
        context_lens = context_lens.contiguous()
        block_tables = block_tables.contiguous()
        out = torch.empty(b, t, heads, head_dim, dtype=q.dtype, device=q.device)
        if splits > 1:
            m_part = torch.empty(b, t, heads, splits, dtype=torch.float32, device=q.device)
            l_part = torch.empty_like(m_part)
            acc_part = torch.empty(b, t, heads, splits, head_dim, dtype=torch.float32, device=q.device)
        else:
            m_part = l_part = acc_part = out  # unused by the single-pass kernel
        rows = block_m * group_pad
        _prefill_kernel[(b, tiles, kv_heads * splits)](
            q,
            k_cache,
            v_cache,
            block_tables,
            context_lens,
            positions,
            out,
            m_part,
            l_part,
            acc_part,
            math.log2(math.e) / math.sqrt(head_dim),
            t,
            heads,
            splits,
            q.stride(0),
            q.stride(1),
            q.stride(2),
            k_cache.stride(0),
            k_cache.stride(1),
            k_cache.stride(2),
            block_tables.stride(0),
            positions.stride(0),
            positions.stride(1),
            out.stride(0),
            out.stride(1),
            out.stride(2),
            GROUP=group,
            GROUP_PAD=group_pad,
            BLOCK_M=block_m,
            HEAD_DIM=head_dim,
            BLOCK_SIZE=k_cache.shape[1],
            BLOCK_N=BLOCK_N,
            IEEE=q.dtype == torch.float32,
            SPLIT=splits > 1,
            num_warps=8 if rows > 64 else 4,
            num_stages=NUM_STAGES,
        )
        if splits > 1:
            flat = out.view(b * t, heads, head_dim)
            paged_attention.merge_splits(m_part, l_part, acc_part, flat, splits)
        return out


def warm_up(heads: int, dtype: torch.dtype, cache: Tensor) -> None:
    """Compile, on CUDA, every kernel variant a step of this head layout can pick (each query-tile
    height, one pass and split keys, the merge of each split count), so no request waits for
    Triton's compiler. `dtype` is the queries'; `cache` is one layer's keys [num_blocks, block_size,
    kv_heads, head_dim], whose shape and dtype pick the variants (only its block 0 is read)."""
    if cache.device.type != "cuda" or triton is None:
        return
    launch_every_variant(heads, dtype, cache)


def launch_every_variant(heads: int, dtype: torch.dtype, cache: Tensor) -> None:
    """One launch of each variant `warm_up` compiles (tests run it under Triton's interpreter)."""
    _, block_size, kv_heads, head_dim = cache.shape
    device = cache.device
    group = heads // kv_heads
    heights = sorted({tile_queries(1 << i, group)[0] for i in range(12)})
    for t in heights:
        q = torch.zeros(1, t, heads, head_dim, dtype=dtype, device=device)
        # Every key in block 0: the values do not matter, only the shapes and types.
        tables = torch.zeros(1, -(-t // block_size), dtype=torch.int32, device=device)
        lens = torch.full((1,), t, dtype=torch.int32, device=device)
        positions = torch.arange(t, device=device)[None]
        for splits in (1, 2):
            prefill_triton(q, cache, cache, tables, lens, positions, splits)
    # The merge of split keys is compiled per split count (a constant of its kernel): a chunk
    # continuing a cached prefix would otherwise compile one mid-request, unless a decode graph
    # of a batch with the same count happened to be captured before.
    for splits in split_counts(kv_heads):
        if splits > 2:
            prefill_triton(q, cache, cache, tables, lens, positions, splits)


def prefill(
    q: Tensor,
    k_all: Tensor,
    v_all: Tensor,
    layer: int,
    block_tables: Tensor,
    context_lens: Tensor,
    positions: Tensor,
) -> Tensor:
    """q [b, t, h, d]; k_all/v_all [layers, num_blocks, block_size, kvh, d]; block_tables [b, n];
    context_lens [b] (tokens cached, the new ones included); positions [b, t] -> [b, t, h, d].

    """
    return torch.ops.llamagate.paged_prefill(q, k_all, v_all, layer, block_tables, context_lens, positions)


# An opaque op (CUDA: the kernel; elsewhere: the reference), so a compiled forward calls it as is:
# traced, the reference would read the longest context length on the host and split the graph.
@torch.library.custom_op("llamagate::paged_prefill", mutates_args=())
def _paged_prefill(
    q: Tensor,
    k_all: Tensor,
    v_all: Tensor,
    layer: int,
    block_tables: Tensor,
    context_lens: Tensor,
    positions: Tensor,
) -> Tensor:
    if q.is_cuda and triton is not None:
        return prefill_triton(q, k_all[layer], v_all[layer], block_tables, context_lens, positions)
    return prefill_reference(q, k_all[layer], v_all[layer], block_tables, context_lens, positions)


@_paged_prefill.register_fake
def _(
    q: Tensor,
    k_all: Tensor,
    v_all: Tensor,
    layer: int,
    block_tables: Tensor,
    context_lens: Tensor,
    positions: Tensor,
) -> Tensor:
    return torch.empty(q.shape, dtype=q.dtype, device=q.device)
