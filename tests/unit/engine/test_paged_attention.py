"""Paged decode attention equals dense attention over the same keys, wherever the blocks lie."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from services.inference.kernels import paged_attention


def scattered_cache(
    lengths: list[int], kv_heads: int, head_dim: int, block_size: int, dtype: torch.dtype, device: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """A cache whose rows own shuffled blocks, plus each row's dense keys/values for reference."""
    needed = [(n + block_size - 1) // block_size for n in lengths]
    num_blocks = sum(needed) + 3
    k_cache = torch.randn(num_blocks, block_size, kv_heads, head_dim, dtype=dtype, device=device)
    v_cache = torch.randn_like(k_cache)
    order = torch.randperm(num_blocks - 1)[: sum(needed)] + 1
    width = max(needed)
    tables = torch.zeros(len(lengths), width, dtype=torch.int32)
    dense = []
    start = 0
    for row, (n, count) in enumerate(zip(lengths, needed, strict=True)):
        blocks = order[start : start + count]
        start += count
        tables[row, :count] = blocks.int()
        keys = k_cache[blocks.to(device)].flatten(0, 1)[:n]
        values = v_cache[blocks.to(device)].flatten(0, 1)[:n]
        dense.append((keys, values))
    return k_cache, v_cache, tables.to(device), dense


def dense_attention(q: torch.Tensor, dense: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    rows = []
    for i, (keys, values) in enumerate(dense):
        out = F.scaled_dot_product_attention(
            q[i, :, None].double(),
            keys.transpose(0, 1).double(),
            values.transpose(0, 1).double(),
            enable_gqa=True,
        )
        rows.append(out[:, 0])
    return torch.stack(rows)


@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 4), (8, 2), (64, 8)])
def test_reference_path_matches_dense_attention(heads: int, kv_heads: int) -> None:
    torch.manual_seed(heads)
    lengths = [1, 17, 40, 5]
    k_cache, v_cache, tables, dense = scattered_cache(lengths, kv_heads, 16, 4, torch.float32, "cpu")
    q = torch.randn(len(lengths), heads, 16)
    lens = torch.tensor(lengths, dtype=torch.int32)
    out = paged_attention.decode_reference(q, k_cache, v_cache, tables, lens)
    torch.testing.assert_close(out.double(), dense_attention(q, dense), atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or paged_attention.triton is None, reason="needs CUDA and Triton"
)
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(32, 32, 128), (64, 8, 128), (8, 2, 64)])
def test_triton_kernel_matches_dense_attention(heads: int, kv_heads: int, head_dim: int) -> None:
    torch.manual_seed(heads + kv_heads)
    lengths = [1, 16, 17, 63, 64, 65, 700, 2000]
    k_cache, v_cache, tables, dense = scattered_cache(lengths, kv_heads, head_dim, 16, torch.bfloat16, "cuda")
    q = torch.randn(len(lengths), heads, head_dim, dtype=torch.bfloat16, device="cuda")
    lens = torch.tensor(lengths, dtype=torch.int32, device="cuda")
    out = paged_attention.decode(q, k_cache[None], v_cache[None], 0, tables, lens)
    expected = dense_attention(q, dense)
    error = (out.double() - expected).norm() / expected.norm()
    assert error < 1e-2, f"relative error {error:.2e}"


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or paged_attention.triton is None, reason="needs CUDA and Triton"
)
@pytest.mark.parametrize(("heads", "kv_heads"), [(32, 32), (64, 8)])
@pytest.mark.parametrize("lengths", [[2000], [5], [130, 1]])
def test_split_context_kernel_matches_dense_attention(heads: int, kv_heads: int, lengths: list[int]) -> None:
    """Few rows: the context is split across programs and merged (flash-decoding)."""
    assert paged_attention.num_splits(len(lengths), kv_heads) > 1
    torch.manual_seed(len(lengths) + kv_heads)
    k_cache, v_cache, tables, dense = scattered_cache(lengths, kv_heads, 128, 16, torch.bfloat16, "cuda")
    q = torch.randn(len(lengths), heads, 128, dtype=torch.bfloat16, device="cuda")
    lens = torch.tensor(lengths, dtype=torch.int32, device="cuda")
    out = paged_attention.decode(q, k_cache[None], v_cache[None], 0, tables, lens)
    expected = dense_attention(q, dense)
    error = (out.double() - expected).norm() / expected.norm()
    assert error < 1e-2, f"relative error {error:.2e}"
