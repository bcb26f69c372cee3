"""Paged prefill attention: chunks whose keys/values are already in the paged cache attend causally
over their whole sequence, bottom-right aligned after the cached prefix.

The reference (the CPU path) equals dense causal attention row by row; the Triton kernel equals the
reference, over a cache in the queries' dtype and over an fp8 cache. The kernel runs where Triton
can run it: on CUDA, or on CPU under TRITON_INTERPRET=1
(tests/integration/inference_service/test_kernels_interpreted.py runs this file again in a child
process that sets it). Inputs are packed by the engine's packer, so rows are right-padded to the
widest chunk exactly as a step runs them.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from services.inference.engine.step_inputs import pack
from services.inference.engine.step_plan import StepPlan, StepRow
from services.inference.kernels import paged_prefill
from services.inference.kernels.paged_attention import to_cache_dtype
from services.inference.model.fp8 import FP8_DTYPE
from tests.unit.engine.kernel_env import CUDA, DEVICE, HAS_TRITON, INTERPRETING, kernels

BLOCK = 16
HEAD_DIM = 16
# (cached tokens, new tokens) per row: no prefix, a prefix ending inside a block, one ending on a
# block boundary, and chunks of 1, 7, 16 and 33 tokens.
ROWS = [(0, 7), (5, 33), (16, 1), (32, 16)]


class Step:
    """One packed prefill step over a cache whose rows own shuffled blocks."""

    def __init__(
        self,
        rows: list[tuple[int, int]],
        kv_heads: int,
        dtype: torch.dtype,
        seed: int,
        head_dim: int = HEAD_DIM,
        cache_dtype: torch.dtype | None = None,
    ) -> None:
        generator = torch.Generator().manual_seed(seed)
        needed = [-(-(cached + new) // BLOCK) for cached, new in rows]
        num_blocks = sum(needed) + 3
        # Block 0 stays out of every table: padded queries' slots point there.
        order = (torch.randperm(num_blocks - 1, generator=generator) + 1).tolist()
        step_rows = []
        for (cached, new), count in zip(rows, needed, strict=True):
            table, order = order[:count], order[count:]
            positions = list(range(cached, cached + new))
            step_rows.append(
                StepRow(
                    tokens=[3] * new,
                    positions=positions,
                    slots=[table[p // BLOCK] * BLOCK + p % BLOCK for p in positions],
                    block_table=table,
                    context_len=cached + new,
                    sample_index=new - 1,
                    temperature=0.0,
                    top_p=1.0,
                    seed=0,
                    step=0,
                    batch_slot=0,
                    samples=True,
                )
            )
        layout, ints, _ = pack(StepPlan(decode=False, fresh=False, rows=step_rows), pin=False)
        ints = ints.to(DEVICE)
        self.rows = rows
        self.positions = ints[:, layout.positions]  # a strided view, as the runner passes it
        self.block_tables = ints[:, layout.table :].to(torch.int32)
        self.context_lens = ints[:, layout.context_len].to(torch.int32)
        self.head_dim = head_dim
        shape = (num_blocks, BLOCK, kv_heads, head_dim)
        cache_dtype = cache_dtype or dtype
        self.k_cache = to_cache_dtype(torch.randn(shape, generator=generator), cache_dtype).to(DEVICE)
        self.v_cache = to_cache_dtype(torch.randn(shape, generator=generator), cache_dtype).to(DEVICE)

    def queries(self, heads: int, dtype: torch.dtype) -> torch.Tensor:
        shape = (len(self.rows), self.positions.shape[1], heads, self.head_dim)
        return torch.randn(shape).to(DEVICE, dtype)

    def reference(self, q: torch.Tensor) -> torch.Tensor:
        return paged_prefill.prefill_reference(
            q, self.k_cache, self.v_cache, self.block_tables, self.context_lens, self.positions
        )

    def kernel(self, q: torch.Tensor, splits: int | None = None) -> torch.Tensor:
        return paged_prefill.prefill_triton(
            q, self.k_cache, self.v_cache, self.block_tables, self.context_lens, self.positions, splits
        )


def dense_causal(step: Step, q: torch.Tensor) -> torch.Tensor:
    """Each row on its own: its first cached + new keys, query i seeing keys 0..cached + i."""
    out = torch.zeros(q.shape, dtype=torch.float64)
    for i, (cached, new) in enumerate(step.rows):
        total = cached + new
        table = step.block_tables[i].long().cpu()
        keys = step.k_cache.cpu()[table].flatten(0, 1)[:total].double()
        values = step.v_cache.cpu()[table].flatten(0, 1)[:total].double()
        mask = torch.ones(new, total, dtype=torch.bool).tril(diagonal=cached)
        out[i, :new] = F.scaled_dot_product_attention(
            q[i, :new].cpu().double().transpose(0, 1),
            keys.transpose(0, 1),
            values.transpose(0, 1),
            attn_mask=mask,
            enable_gqa=True,
        ).transpose(0, 1)
    return out


def real_queries(step: Step, out: torch.Tensor) -> list[torch.Tensor]:
    """Each row's outputs for its own tokens (padding queries are nobody's)."""
    return [out[i, :new].cpu() for i, (_, new) in enumerate(step.rows)]


@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 4), (4, 2), (4, 1)])
def test_reference_equals_dense_causal_attention_after_each_prefix(heads: int, kv_heads: int) -> None:
    step = Step(ROWS, kv_heads, torch.float32, seed=heads + kv_heads)
    q = step.queries(heads, torch.float32)
    got, expected = real_queries(step, step.reference(q)), real_queries(step, dense_causal(step, q))
    for row_got, row_expected in zip(got, expected, strict=True):
        torch.testing.assert_close(row_got.double(), row_expected, atol=1e-5, rtol=1e-5)


@kernels
@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 2), (4, 1)])
def test_kernel_equals_the_reference_in_fp32(heads: int, kv_heads: int, splits: int) -> None:
    """Every row shape at once; one pass over the keys, and the keys split across programs."""
    step = Step(ROWS, kv_heads, torch.float32, seed=10 * heads + kv_heads)
    q = step.queries(heads, torch.float32)
    out = step.kernel(q, splits)
    torch.testing.assert_close(out, step.reference(q), atol=2e-5, rtol=1e-5)


# Triton's interpreter (3.9) multiplies bf16 dots as their raw uint16 bits: bf16 runs on CUDA only.
HALF_DTYPES = [torch.float16] if INTERPRETING else [torch.bfloat16, torch.float16]


@kernels
@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_kernel_equals_the_reference_in_half_precision(dtype: torch.dtype) -> None:
    step = Step(ROWS, 2, dtype, seed=3)
    q = step.queries(4, dtype)
    out = step.kernel(q)
    assert out.dtype == dtype
    expected = dense_causal(step, q)
    for row_got, row_expected in zip(real_queries(step, out), real_queries(step, expected), strict=True):
        error = (row_got.double() - row_expected).abs().max()
        assert error < 2e-2, f"max abs error {error:.2e}"


@kernels
@pytest.mark.parametrize("dtype", [torch.float32, *HALF_DTYPES])
def test_kernel_over_an_fp8_cache_equals_the_reference(dtype: torch.dtype) -> None:
    """Keys and values in e4m3, widened to the queries' dtype as they are read: in fp32 the reference
    over the same cache (which widens the gathered ones), in half precision dense attention in
    fp64 over it, with the tolerances of a cache in the queries' own dtype."""
    step = Step(ROWS, 2, dtype, seed=7, cache_dtype=FP8_DTYPE)
    q = step.queries(4, dtype)
    out = step.kernel(q)
    assert out.dtype == dtype
    if dtype == torch.float32:
        torch.testing.assert_close(out, step.reference(q), atol=2e-5, rtol=1e-5)
        return
    expected = dense_causal(step, q)
    for row_got, row_expected in zip(real_queries(step, out), real_queries(step, expected), strict=True):
        error = (row_got.double() - row_expected).abs().max()
        assert error < 2e-2, f"max abs error {error:.2e}"


@kernels
def test_one_query_continuing_a_long_prefix_splits_its_keys() -> None:
    """A new chat message after its history: few programs, so the keys are split by default."""
    step = Step([(200, 1), (37, 2)], 1, torch.float32, seed=5)
    tiles = -(-step.positions.shape[1] // paged_prefill.tile_queries(step.positions.shape[1], 4)[0])
    assert paged_prefill.num_splits(2, tiles, 1) > 1
    q = step.queries(4, torch.float32)
    torch.testing.assert_close(step.kernel(q), step.reference(q), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("kv_heads", [1, 2, 8, 32, 40])
def test_the_warm_up_covers_every_split_count_a_step_can_take(kv_heads: int) -> None:
    """The merge kernel compiles per split count: the warm-up launches each one."""
    counts = paged_prefill.split_counts(kv_heads)
    # Only rows x query tiles matters; 400 of them fill the GPU whatever the kv head count.
    taken = {paged_prefill.num_splits(rows, 1, kv_heads) for rows in range(1, 401)}
    assert taken == set(counts) and counts[-1] == 1


@kernels
def test_every_variant_the_engine_warms_up_launches() -> None:
    """What ModelRunner.capture compiles before serving: each query-tile height, one pass and split."""
    dtype = torch.float16 if INTERPRETING else torch.bfloat16
    paged_prefill.launch_every_variant(
        8, dtype, torch.zeros(1, BLOCK, 2, HEAD_DIM, dtype=dtype, device=DEVICE)
    )


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA or not HAS_TRITON, reason="needs CUDA and Triton")
@pytest.mark.parametrize(("heads", "kv_heads"), [(32, 32), (64, 8)])
@pytest.mark.parametrize("rows", [[(3000, 30)], [(0, 512)], [(1000, 100), (17, 64), (512, 1)]])
def test_kernel_on_model_shapes_equals_dense_attention(
    heads: int, kv_heads: int, rows: list[tuple[int, int]]
) -> None:
    """7B and 70B head layouts (head_dim 128) in bf16, long prefixes, with and without key splits."""
    step = Step(rows, kv_heads, torch.bfloat16, seed=heads, head_dim=128)
    q = step.queries(heads, torch.bfloat16)
    out = step.kernel(q)
    expected = dense_causal(step, q)
    for row_got, row_expected in zip(real_queries(step, out), real_queries(step, expected), strict=True):
        error = (row_got.double() - row_expected).norm() / row_expected.norm()
        assert error < 1e-2, f"relative error {error:.2e}"
