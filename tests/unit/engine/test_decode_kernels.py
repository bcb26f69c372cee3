"""The decode-step Triton kernels equal their references: the fused rotary + KV-cache write
(kv_write.py) equals apply_rotary + index_copy_ (into an fp8 cache too), paged decode attention
over an fp8 cache equals its reference, the skinny GEMM (decode_gemm.py) equals F.linear, both
survive torch.compile(fullgraph=True), and on CUDA the engine generates the same tokens with them
as without (with an fp8 cache: as the reference paths over one).

The kernels run where Triton can run them: on CUDA, or on CPU under TRITON_INTERPRET=1 (Triton reads
that variable when a kernel is defined, so on CPU tests/integration/inference_service/
test_kernels_interpreted.py runs this file again in a child process that sets it).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from services.common.sampling import SamplingParams
from services.inference.config import parse_config
from services.inference.engine.cache_replay import decode_through_cache
from services.inference.engine.config import EngineConfig
from services.inference.engine.request import GenerationRequest
from services.inference.engine.runner import ModelRunner, build_runner, graph_batch_sizes
from services.inference.engine.scheduler import Scheduler
from services.inference.kernels import decode_block, decode_gemm, kv_write, paged_attention, paged_prefill
from services.inference.model.fp8 import FP8_DTYPE, FP8_MAX, saturate_to_fp8
from services.inference.model.fusion import fuse_projections
from services.inference.model.transformer import Transformer, init_random_weights, rope_tables
from tests.unit.engine.kernel_env import CUDA, DEVICE, HAS_TRITON, INTERPRETING, kernels
from tests.unit.engine.stepping import (
    ARGS,
    DECODE_ROWS,
    PROMPTS,
    decode_step_cache,
    random_kv_storage,
    run_to_completion,
)


def decode_inputs(
    heads: int, kv_heads: int, head_dim: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v as column slices of one wqkv output (as the model makes them), cos/sin at scattered
    positions, and slots as a strided column of packed ints (as the runner passes them)."""
    rows = 4
    qkv = torch.randn(rows, (heads + 2 * kv_heads) * head_dim, dtype=dtype, device=DEVICE)
    q, k, v = qkv.split((heads * head_dim, kv_heads * head_dim, kv_heads * head_dim), dim=-1)
    cos, sin = rope_tables(head_dim, 512, 10000.0)
    positions = torch.tensor([0, 5, 130, 511])
    # Row 3 is a padded row: slot 0 of the reserved block.
    packed = torch.tensor([[9, 1], [22, 2], [3, 3], [0, 4]], device=DEVICE)
    return (
        q.view(rows, heads, head_dim),
        k.view(rows, kv_heads, head_dim),
        v.view(rows, kv_heads, head_dim),
        cos[positions].to(DEVICE),
        sin[positions].to(DEVICE),
        packed[:, 0],
    )


@kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(4, 4, 16), (8, 2, 32), (32, 32, 128)])
def test_fused_rotary_kv_write_equals_rotary_then_index_copy(
    dtype: torch.dtype, heads: int, kv_heads: int, head_dim: int
) -> None:
    torch.manual_seed(heads + head_dim)
    q, k, v, cos, sin, slots = decode_inputs(heads, kv_heads, head_dim, dtype)
    caches = torch.randn(2, 3, 8, 4, kv_heads, head_dim, dtype=dtype, device=DEVICE)
    expected_k, expected_v = caches[0].clone(), caches[1].clone()
    got_k, got_v = caches[0].clone(), caches[1].clone()
    expected_q = kv_write.rotary_write_kv_reference(q, k, v, cos, sin, expected_k, expected_v, 1, slots)
    got_q = kv_write.rotary_write_kv(q, k, v, cos, sin, got_k, got_v, 1, slots)
    # The same fp32 arithmetic up to rounding: on a GPU the kernel fuses x*cos - y*sin into a
    # multiply-add (one rounding instead of two: measured 1.2e-7 apart on an H200); bf16 may
    # differ in the last bit where rounding of the result differs.
    tolerance = {} if dtype != torch.float32 else {"atol": 1e-6, "rtol": 1e-5}
    torch.testing.assert_close(got_q, expected_q, **tolerance)  # type: ignore[arg-type]
    torch.testing.assert_close(got_k, expected_k, **tolerance)  # type: ignore[arg-type]
    assert torch.equal(got_v, expected_v)
    assert not torch.equal(got_k[1], caches[0][1])  # layer 1 was written ...
    assert torch.equal(got_k[0], caches[0][0]) and torch.equal(got_k[2], caches[0][2])  # ... and only it


# Triton's interpreter (3.9) rounds fp32 to bf16 by truncation, so a bf16 k lands on the other side of
# an e4m3 rounding boundary now and then: bf16 sources are compared on CUDA only.
FP8_SOURCES = (
    [torch.float32, torch.float16] if INTERPRETING else [torch.float32, torch.bfloat16, torch.float16]
)


@kernels
@pytest.mark.parametrize("dtype", FP8_SOURCES)
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(4, 4, 16), (8, 2, 32)])
def test_fused_rotary_kv_write_into_an_fp8_cache_stores_what_the_reference_write_stores(
    dtype: torch.dtype, heads: int, kv_heads: int, head_dim: int
) -> None:
    """Values past 448 saturate (a plain cast would store NaN), small ones land on e4m3's subnormals,
    the rest round to nearest even, exactly as write_kv's conversion does."""
    torch.manual_seed(heads + head_dim)
    q, k, v, cos, sin, slots = decode_inputs(heads, kv_heads, head_dim, dtype)
    k[0, 0] *= 1000  # rotated, still far past 448 whichever way
    v[1, 0, :4] = torch.tensor([1000.0, -1000.0, 449.0, 1e-3], dtype=dtype)
    v[2] *= 1e-2
    caches = saturate_to_fp8(torch.randn(2, 3, 8, 4, kv_heads, head_dim)).to(DEVICE)
    expected_k, expected_v = caches[0].clone(), caches[1].clone()
    got_k, got_v = caches[0].clone(), caches[1].clone()
    expected_q = kv_write.rotary_write_kv_reference(q, k, v, cos, sin, expected_k, expected_v, 1, slots)
    got_q = kv_write.rotary_write_kv(q, k, v, cos, sin, got_k, got_v, 1, slots)
    assert got_k.dtype == got_v.dtype == FP8_DTYPE
    tolerance = {} if dtype != torch.float32 else {"atol": 1e-6, "rtol": 1e-5}
    torch.testing.assert_close(got_q, expected_q, **tolerance)  # type: ignore[arg-type]
    torch.testing.assert_close(got_v.float(), expected_v.float(), atol=0, rtol=0)
    row = slots[1]
    assert got_v[1].flatten(0, 1)[row, 0, :3].tolist() == [FP8_MAX, -FP8_MAX, FP8_MAX]
    assert got_k[1].flatten(0, 1)[slots[0], 0].float().abs().max() == FP8_MAX
    if CUDA:
        # The kernel fuses x*cos - y*sin into a multiply-add: an fp32 result one bit off may round
        # to the neighbouring e4m3 value, rarely.
        off = got_k.float() != expected_k.float()
        assert off.float().mean() < 1e-3
        torch.testing.assert_close(got_k.float(), expected_k.float(), atol=2**-9, rtol=0.13)
    else:
        torch.testing.assert_close(got_k.float(), expected_k.float(), atol=0, rtol=0)
    assert torch.equal(got_k[0].float(), caches[0][0].float())  # only layer 1 was written


@kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16] if INTERPRETING else [torch.bfloat16])
@pytest.mark.parametrize("rows", [2, 34])
def test_decode_kernel_over_an_fp8_cache_equals_the_reference(dtype: torch.dtype, rows: int) -> None:
    """The kernel widens each e4m3 key/value to the queries' dtype as the reference does; few rows
    split their keys across programs, many run one pass (over tiles of 128 keys for an fp8 cache:
    up to 160 keys here, so some rows take two)."""
    heads, kv_heads, head_dim, block, per_row = 8, 4, 16, 4, 40
    torch.manual_seed(rows)
    lengths = torch.randint(1, block * per_row, (rows,), dtype=torch.int32)
    num_blocks = rows * per_row + 1
    tables = (torch.randperm(num_blocks - 1)[: rows * per_row] + 1).view(rows, per_row).to(torch.int32)
    k_all, v_all = (saturate_to_fp8(torch.randn(1, num_blocks, block, kv_heads, head_dim)) for _ in range(2))
    q = torch.randn(rows, heads, head_dim).to(dtype)
    k_all, v_all, q, tables, lengths = (t.to(DEVICE) for t in (k_all, v_all, q, tables, lengths))
    assert (paged_attention.num_splits(rows, kv_heads) > 1) == (rows == 2)
    out = torch.ops.llamagate.paged_decode(q, k_all, v_all, 0, tables, lengths)
    expected = paged_attention.decode_reference(q, k_all[0], v_all[0], tables, lengths)
    assert out.dtype == dtype
    tolerance = 2e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.float(), expected.float(), atol=tolerance, rtol=tolerance)


@kernels
@pytest.mark.parametrize("fp8_dots", [1, 2])
@pytest.mark.parametrize("rows", [2, 34])
def test_decode_kernel_with_e4m3_operands_stays_near_the_reference(fp8_dots: int, rows: int) -> None:
    """q.k (fp8_dots 1), and also p.v (2), on FP8 tensor cores: the queries are rounded to e4m3 with
    one scale per row (and the probabilities to e4m3), which moves the output by a few per cent of
    its size, not more; the widening kernel (fp8_dots 0) stays at half-precision rounding."""
    heads, kv_heads, head_dim, block, per_row = 8, 4, 32, 4, 40  # FP8 dots need K >= 32
    torch.manual_seed(rows)
    lengths = torch.randint(1, block * per_row, (rows,), dtype=torch.int32)
    num_blocks = rows * per_row + 1
    tables = (torch.randperm(num_blocks - 1)[: rows * per_row] + 1).view(rows, per_row).to(torch.int32)
    k_cache, v_cache = (saturate_to_fp8(torch.randn(num_blocks, block, kv_heads, head_dim)) for _ in range(2))
    # Triton's CPU interpreter computes bf16 dots wrongly (numpy has no bf16): fp16 queries there.
    q = torch.randn(rows, heads, head_dim).to(torch.float16 if INTERPRETING else torch.bfloat16)
    k_cache, v_cache, q, tables, lengths = (t.to(DEVICE) for t in (k_cache, v_cache, q, tables, lengths))
    splits = paged_attention.num_splits(rows, kv_heads)
    expected = paged_attention.decode_reference(q.float(), k_cache, v_cache, tables, lengths)
    size = expected.abs().mean()

    def error(fp8_dots: int) -> tuple[float, float]:
        out = paged_attention.launch_decode(q, k_cache, v_cache, tables, lengths, splits, fp8_dots=fp8_dots)
        assert out.dtype == q.dtype
        difference = (out.float() - expected).abs()
        return float(difference.mean() / size), float(difference.max())

    widened, widened_max = error(0)
    mean, largest = error(fp8_dots)
    assert widened < 0.01 and widened_max < 0.02
    assert 0 < mean < (0.06 if fp8_dots == 1 else 0.1)
    assert largest < 0.4


@kernels
@pytest.mark.parametrize("fp8_cache", [False, True])
@pytest.mark.parametrize(("heads", "kv_heads"), [(8, 8), (8, 2)])
@pytest.mark.parametrize("rows", [2, 34])
def test_decode_kernel_on_cuda_cores_equals_the_reference(
    fp8_cache: bool, heads: int, kv_heads: int, rows: int
) -> None:
    """Both products as fp32 multiply-adds: a group of one query head (7B, 13B) is not padded to 16
    rows, a group of four is; split and single-pass rows alike, over either cache."""
    head_dim, block, per_row = 16, 4, 40
    torch.manual_seed(rows + kv_heads)
    lengths = torch.randint(1, block * per_row, (rows,), dtype=torch.int32)
    num_blocks = rows * per_row + 1
    tables = (torch.randperm(num_blocks - 1)[: rows * per_row] + 1).view(rows, per_row).to(torch.int32)
    dtype = torch.float16 if INTERPRETING else torch.bfloat16
    shape = (num_blocks, block, kv_heads, head_dim)
    k_cache, v_cache = (
        saturate_to_fp8(torch.randn(shape)) if fp8_cache else torch.randn(shape).to(dtype) for _ in range(2)
    )
    q = torch.randn(rows, heads, head_dim).to(dtype)
    k_cache, v_cache, q, tables, lengths = (t.to(DEVICE) for t in (k_cache, v_cache, q, tables, lengths))
    splits = paged_attention.num_splits(rows, kv_heads)
    out = paged_attention.launch_decode(q, k_cache, v_cache, tables, lengths, splits, cuda_cores=True)
    expected = paged_attention.decode_reference(q.float(), k_cache, v_cache, tables, lengths)
    assert out.dtype == dtype
    # fp32 products and sums; the one rounding is the output's, to half precision.
    torch.testing.assert_close(out.float(), expected, atol=1e-2, rtol=1e-2)


@kernels
@pytest.mark.parametrize("cuda_cores", [True, False])
def test_the_engine_op_runs_the_kernel_it_is_asked_for(cuda_cores: bool) -> None:
    """The op as the engine calls it gives the chosen kernel's output, bit for bit (the two kinds
    of core round differently, so the wrong one would show)."""
    heads, kv_heads, head_dim, block, per_row, rows = 8, 2, 16, 4, 10, 3
    torch.manual_seed(heads * kv_heads)
    lengths = torch.randint(1, block * per_row, (rows,), dtype=torch.int32)
    tables = (torch.randperm(rows * per_row) + 1).view(rows, per_row).to(torch.int32)
    dtype = torch.float16 if INTERPRETING else torch.bfloat16
    k_all, v_all = (torch.randn(1, rows * per_row + 1, block, kv_heads, head_dim).to(dtype) for _ in range(2))
    q = torch.randn(rows, heads, head_dim).to(dtype)
    k_all, v_all, q, tables, lengths = (t.to(DEVICE) for t in (k_all, v_all, q, tables, lengths))
    out = torch.ops.llamagate.paged_decode(q, k_all, v_all, 0, tables, lengths, cuda_cores)
    splits = paged_attention.num_splits(rows, kv_heads)
    kernel = paged_attention.launch_decode(
        q, k_all[0], v_all[0], tables, lengths, splits, cuda_cores=cuda_cores
    )
    other = paged_attention.launch_decode(
        q, k_all[0], v_all[0], tables, lengths, splits, cuda_cores=not cuda_cores
    )
    assert torch.equal(out, kernel) and not torch.equal(out, other)


@pytest.mark.parametrize(("heads", "kv_heads", "on_cuda_cores"), [(8, 8, True), (8, 4, True), (8, 2, False)])
def test_the_runner_takes_cuda_cores_for_small_groups_only(
    heads: int, kv_heads: int, on_cuda_cores: bool
) -> None:
    """Asked for CUDA cores, a runner takes them for groups of up to two query heads per kv head
    and keeps tensor cores for larger ones (70B's eight); asked for tensor cores, it never takes them."""
    model = Transformer(replace(ARGS, n_heads=heads, n_kv_heads=kv_heads))
    for attention, expected in (("cuda-cores", on_cuda_cores), ("tensor-cores", False)):
        config = EngineConfig(max_seq_len=64, max_batch_size=2, num_kv_blocks=8, decode_attention=attention)
        runner, _ = build_runner(model, config)
        assert runner.cuda_core_attention == expected


@kernels
def test_fp8_dots_and_cuda_cores_are_refused_together() -> None:
    k_cache = saturate_to_fp8(torch.randn(3, 4, 2, 32)).to(DEVICE)
    q = torch.randn(1, 2, 32, device=DEVICE)
    tables = torch.zeros(1, 2, dtype=torch.int32, device=DEVICE)
    lengths = torch.ones(1, dtype=torch.int32, device=DEVICE)
    with pytest.raises(ValueError, match="cannot be combined with cuda_cores"):
        paged_attention.launch_decode(q, k_cache, k_cache, tables, lengths, 1, fp8_dots=1, cuda_cores=True)


def random_linear(m: int, n: int, k: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(m, k, dtype=dtype, device=DEVICE)
    weight = torch.randn(n, k, dtype=dtype, device=DEVICE) / k**0.5
    return x, weight


def assert_close_to_linear(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> None:
    # fp32 accumulation in both; the result is rounded once to x's dtype.
    expected = (x.double() @ weight.double().t()).to(x.dtype)
    tolerance = 2e-2 if x.dtype == torch.bfloat16 else 2e-3
    torch.testing.assert_close(out, expected, atol=tolerance, rtol=tolerance)


@kernels
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m", [1, 3, 16])
@pytest.mark.parametrize(("n", "k"), [(64, 256), (40, 96), (37, 200)])
@pytest.mark.parametrize("config", [{"BLOCK_N": 16, "BLOCK_K": 64}, {"BLOCK_N": 32, "BLOCK_K": 32}])
def test_skinny_gemm_equals_linear(
    dtype: torch.dtype, m: int, n: int, k: int, config: dict[str, int]
) -> None:
    """Ragged N and K (37 x 200) exercise the masked loads; 1 row takes the GEMV kernel."""
    torch.manual_seed(m * n + k)
    x, weight = random_linear(m, n, k, dtype)
    out = torch.full((m, n), float("nan"), dtype=dtype, device=DEVICE)
    decode_gemm.launch(x, weight, out, config)
    assert_close_to_linear(out, x, weight)


@kernels
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("n", "k"), [(64, 256), (37, 200)])
@pytest.mark.parametrize("tuned", [False, True] if CUDA else [False])
def test_one_row_through_the_tensor_core_kernel(dtype: torch.dtype, n: int, k: int, tuned: bool) -> None:
    """One row padded to 16 through tl.dot: the alternative the one-row timing may choose."""
    torch.manual_seed(n + k)
    x, weight = random_linear(1, n, k, dtype)
    out = torch.full((1, n), float("nan"), dtype=dtype, device=DEVICE)
    decode_gemm.launch(x, weight, out, None if tuned else {"BLOCK_N": 16, "BLOCK_K": 64}, one_row_dot=True)
    assert_close_to_linear(out, x, weight)


@kernels
@pytest.mark.parametrize("kind", ["triton", "auto"] if CUDA else ["triton"])
@pytest.mark.parametrize("m", [1, 5])
def test_decode_matmul_op_takes_batched_inputs(kind: str, m: int) -> None:
    """The op as the model calls it: [b, 1, K] activations, tuned configs on CUDA."""
    torch.manual_seed(m)
    x, weight = random_linear(m, 96, 128, torch.bfloat16)
    out = torch.ops.llamagate.decode_matmul(x[:, None], weight, kind)
    assert out.shape == (m, 1, 96)
    assert_close_to_linear(out[:, 0], x, weight)


@kernels
def test_both_ops_compile_with_fullgraph() -> None:
    heads, kv_heads, head_dim = 8, 2, 32
    torch.manual_seed(0)
    q, k, v, cos, sin, slots = decode_inputs(heads, kv_heads, head_dim, torch.bfloat16)
    weight = torch.randn(48, heads * head_dim, dtype=torch.bfloat16, device=DEVICE) / 16

    def step(fused: bool, k_all: torch.Tensor, v_all: torch.Tensor) -> torch.Tensor:
        if fused:
            rotated = kv_write.rotary_write_kv(q, k, v, cos, sin, k_all, v_all, 0, slots)
            return torch.ops.llamagate.decode_matmul(rotated.flatten(1) * 2, weight, "triton")
        rotated = kv_write.rotary_write_kv_reference(q, k, v, cos, sin, k_all, v_all, 0, slots)
        return F.linear(rotated.flatten(1) * 2, weight)

    caches = torch.zeros(4, 1, 4, 8, kv_heads, head_dim, dtype=torch.bfloat16, device=DEVICE)
    with torch.inference_mode():
        compiled = torch.compile(step, fullgraph=True)(True, caches[0], caches[1])
        expected = step(False, caches[2], caches[3])
    torch.testing.assert_close(compiled, expected, atol=3e-2, rtol=2e-2)
    torch.testing.assert_close(caches[0], caches[2])  # the compiled op wrote the cache in place
    assert torch.equal(caches[1], caches[3]) and caches[1].abs().sum() > 0


@kernels
@pytest.mark.parametrize("cache", [torch.float32, FP8_DTYPE])
def test_model_logits_and_cache_are_the_same_through_the_fused_path(cache: torch.dtype) -> None:
    """A decode forward of the tiny engine model with `fused_rotary` on and off (fp32: exact), over
    a cache in fp32 and in fp8."""
    model = Transformer(ARGS)
    init_random_weights(model, 5)
    model = model.to(DEVICE).eval().requires_grad_(False)
    fuse_projections(model)
    tokens = torch.tensor([[3], [7]], device=DEVICE)
    positions = torch.tensor(DECODE_ROWS, device=DEVICE)[:, :1]
    results = []
    for fused in (False, True):
        storage = random_kv_storage(cache, DEVICE)
        with torch.inference_mode():
            results.append(
                (model(tokens, positions, decode_step_cache(storage, fused)), storage.k, storage.v)
            )
    for unfused, fused_result in zip(results[0], results[1], strict=True):
        torch.testing.assert_close(fused_result.float(), unfused.float(), atol=1e-5, rtol=1e-5)


def test_use_decode_gemm_swaps_projections_in_place_and_back() -> None:
    """Same weights (not copies), tensor-parallel hooks kept; off CUDA the swapped model is F.linear."""
    model = Transformer(ARGS)
    init_random_weights(model, 2)
    fuse_projections(model.eval().requires_grad_(False))
    weights = {name: p.data_ptr() for name, p in model.named_parameters()}
    gathered: list[torch.Tensor] = []
    model.output.register_forward_hook(lambda module, inputs, out: gathered.append(out))
    tokens = torch.tensor([[1, 5, 9]])
    with torch.inference_mode():
        before = model(tokens)
        decode_gemm.use_decode_gemm(model, "triton")
        swapped = [m for m in model.modules() if isinstance(m, decode_gemm.DecodeLinear)]
        # wqkv, wo, w13, w2 per layer, and the output head
        assert len(swapped) == 4 * ARGS.n_layers + 1
        assert {name: p.data_ptr() for name, p in model.named_parameters()} == weights
        assert torch.equal(model(tokens), before) and len(gathered) == 2
        decode_gemm.use_decode_gemm(model, "cublas")
        assert not any(isinstance(m, decode_gemm.DecodeLinear) for m in model.modules())
        assert {name: p.data_ptr() for name, p in model.named_parameters()} == weights
        assert torch.equal(model(tokens), before) and len(gathered) == 3
    with pytest.raises(ValueError, match="use one of cublas, triton, auto"):
        decode_gemm.use_decode_gemm(model, "cutlass")


def eager_greedy_with_gaps(model: Transformer, prompt: list[int], n: int) -> tuple[list[int], list[float]]:
    """The plain model recomputing the whole sequence per token, and each step's top-2 logit gap."""
    tokens, gaps = list(prompt), []
    with torch.inference_mode():
        for _ in range(n):
            logits = model(torch.tensor([tokens], device=model.output.weight.device))[0, -1].float()
            top = logits.topk(2).values
            gaps.append(float(top[0] - top[1]))
            tokens.append(int(logits.argmax()))
    return tokens[len(prompt) :], gaps


def cuda_bf16_model() -> Transformer:
    # Each runner compiles the same decode function again, and dynamo's per-function recompile
    # limit counts every runner of this process: start each test's count afresh.
    torch._dynamo.reset()
    model = Transformer(ARGS)
    init_random_weights(model, 7)
    return model.to("cuda", torch.bfloat16).eval().requires_grad_(False)


def cuda_engine_tokens(model: Transformer, **options: Any) -> tuple[ModelRunner, list[list[int]]]:
    """12 greedy tokens of each of PROMPTS through compiled, graph-captured decode steps (batch sizes
    1, 2 and 4) of a runner over a copy of `model`; `options`: EngineConfig's fields to change."""
    config = replace(
        EngineConfig(
            max_seq_len=128,
            max_batch_size=4,
            kv_block_size=4,
            num_kv_blocks=80,
            prefill_chunk=7,
            device="cuda",
            dtype="bfloat16",
            graph_sizes=(1, 2),
        ),
        **options,
    )
    runner, allocator = build_runner(copy.deepcopy(model), config)
    runner.capture()
    assert runner._fused_rotary
    scheduler = Scheduler(config, allocator, eos_id=-1)
    params = SamplingParams(temperature=0, max_gen_len=12)
    sequences = [scheduler.add(GenerationRequest(str(i), tuple(p), params, 0)) for i, p in enumerate(PROMPTS)]
    run_to_completion(scheduler, runner, max_steps=200)
    return runner, [s.tokens[len(p) :] for p, s in zip(PROMPTS, sequences, strict=True)]


def assert_parted_only_at_near_ties(
    generated: list[list[int]], expected: list[tuple[list[int], list[float]]]
) -> None:
    """Each sequence follows the reference's tokens until a step whose two best logits lie within 0.1."""
    for got, (tokens, gaps) in zip(generated, expected, strict=True):
        first = next((i for i, (a, b) in enumerate(zip(got, tokens, strict=True)) if a != b), None)
        assert first is None or gaps[first] < 0.1, (got, tokens, gaps)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA or not HAS_TRITON, reason="needs CUDA and Triton")
@pytest.mark.parametrize(
    ("gemm", "fused_block", "attention"),
    [
        ("cublas", False, "tensor-cores"),
        ("triton", False, "tensor-cores"),
        ("auto", False, "tensor-cores"),
        ("auto", True, "tensor-cores"),
        ("auto", True, "cuda-cores"),
    ],
)
def test_engine_tokens_on_cuda_follow_the_eager_model_with_the_kernels(
    gemm: str, fused_block: bool, attention: str
) -> None:
    """Compiled, graph-captured decode steps (batch sizes 1, 2 and 4) with the fused KV write and
    each decode GEMM, with and without the fused decode block, and with decode attention on either
    kind of core, give the plain eager model's greedy tokens; bf16 rounding differs between
    kernels, so a sequence may leave the reference only where its two best logits nearly tie."""
    model = cuda_bf16_model()
    expected = [eager_greedy_with_gaps(model, p, 12) for p in PROMPTS]
    runner, generated = cuda_engine_tokens(
        model, decode_gemm=gemm, fused_decode_block=fused_block, decode_attention=attention
    )
    fused_layers = [isinstance(layer, decode_block.FusedDecodeBlock) for layer in runner.model.layers]
    assert fused_layers == [fused_block] * ARGS.n_layers
    assert_parted_only_at_near_ties(generated, expected)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA or not HAS_TRITON, reason="needs CUDA and Triton")
@pytest.mark.skipif(CUDA and torch.cuda.get_device_capability() < (8, 9), reason="needs a GPU with FP8")
def test_engine_tokens_on_cuda_over_an_fp8_cache_follow_the_reference_paths_over_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Compiled, graph-captured decode steps with the fused KV write and the Triton attention kernels
    over an fp8 cache give the greedy tokens of the eager reference paths over an fp8 cache
    (write_kv's conversion, gather + SDPA), parting only where the reference's two best logits
    nearly tie (bf16 rounding differs between kernels)."""
    model = cuda_bf16_model()
    expected = []
    with monkeypatch.context() as patch:
        # No Triton for attention: on the GPU too, decode and prefill take their reference paths.
        patch.setattr(paged_attention, "triton", None)
        patch.setattr(paged_prefill, "triton", None)
        for prompt in PROMPTS:
            tokens, logits = decode_through_cache(model, prompt, 12, "fp8")
            top = logits.float().topk(2, dim=-1).values
            expected.append((tokens, (top[:, 0] - top[:, 1]).tolist()))
    # Every prompt whole in one fresh step, as the reference prefills it.
    runner, generated = cuda_engine_tokens(model, prefill_chunk=128, kv_cache_dtype="fp8")
    assert runner.storage.k.dtype == runner.storage.v.dtype == FP8_DTYPE
    assert_parted_only_at_near_ties(generated, expected)


def test_captured_sizes_can_be_chosen_and_always_cover_the_largest_batch() -> None:
    assert graph_batch_sizes(64, (1, 4, 64)) == [1, 4, 64]
    assert graph_batch_sizes(64, (4, 1, 200)) == [1, 4, 64]
    assert graph_batch_sizes(20) == [1, 2, 4, 8, 16, 20]


def test_an_unknown_decode_gemm_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="--decode-gemm must be one of cublas, triton, auto"):
        EngineConfig(decode_gemm="cutlass").validate()
    with pytest.raises(ValueError, match="graph batch sizes must be >= 1"):
        EngineConfig(graph_sizes=(0, 4)).validate()
    with pytest.raises(
        ValueError, match="--decode-attention must be one of tensor-cores, cuda-cores, got 'cuda'"
    ):
        EngineConfig(decode_attention="cuda").validate()


def test_the_decode_attention_flag(capsys: pytest.CaptureFixture[str]) -> None:
    required = ["--ckpt-dir", "ckpt", "--tokenizer-path", "tok.model", "--device", "cpu"]
    assert parse_config(required).engine.decode_attention == "tensor-cores"
    assert (
        parse_config([*required, "--decode-attention", "cuda-cores"]).engine.decode_attention == "cuda-cores"
    )
    with pytest.raises(SystemExit):
        parse_config([*required, "--decode-attention", "cuda"])
    assert "invalid choice: 'cuda' (choose from" in capsys.readouterr().err
