"""The FP8 kernels (kernels/fp8_linear.py) equal the dequantize-then-matmul reference (model/fp8.py):
the Triton skinny GEMM for 1..16 rows with ragged shapes, the custom op on batched inputs and under
torch.compile(fullgraph=True); on CUDA also the FP8 tensor-core prefill path, and the engine's
greedy tokens with FP8 weights (compiled, graph-captured decode steps) follow the eager FP8 model.

The kernels run where Triton can run them: on CUDA, or on CPU under TRITON_INTERPRET=1 (read when
a kernel is defined, so tests/integration/inference_service/test_kernels_interpreted.py runs
this file again in a child process that sets it).
"""

from __future__ import annotations

import copy

import pytest
import torch

from services.common.sampling import SamplingParams
from services.inference.engine.config import EngineConfig
from services.inference.engine.request import GenerationRequest
from services.inference.engine.runner import build_runner
from services.inference.engine.scheduler import Scheduler
from services.inference.kernels import fp8_linear, w8a8_gemm
from services.inference.model.fp8 import FP8Linear, dequantize, fp8_layers, quantize, quantize_projections
from services.inference.model.transformer import Transformer, init_random_weights
from tests.unit.engine.kernel_env import CUDA, DEVICE, HAS_TRITON, INTERPRETING
from tests.unit.engine.stepping import ARGS, PROMPTS, run_to_completion

FP8_GPU = CUDA and torch.cuda.get_device_capability() >= (8, 9)
kernels = pytest.mark.skipif(
    not HAS_TRITON or not (FP8_GPU or INTERPRETING),
    reason="needs Triton on a GPU with FP8 (compute capability 8.9+), or TRITON_INTERPRET=1",
)


def fp8_weight(n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of very different magnitudes, as a real projection has: per-channel scales matter."""
    g = torch.Generator().manual_seed(seed)
    rows = (
        torch.randn(n, k, generator=g)
        / k**0.5
        * torch.logspace(-2, 1, n)[torch.randperm(n, generator=g), None]
    )
    weight, scale = quantize(rows)
    return weight.to(DEVICE), scale.to(DEVICE)


def reference(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The exact product of the dequantized weight, in float64."""
    return x.double() @ (weight.double() * scale.double()[:, None]).t()


def assert_close_to_reference(
    out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor
) -> None:
    expected = reference(x, weight, scale)
    # fp32 accumulation, one rounding to the output's dtype at the end (relative to its scale).
    step = 2**-8 if out.dtype == torch.bfloat16 else 2**-11
    atol = 2 * step * float(expected.abs().max())
    torch.testing.assert_close(out.double(), expected, atol=atol, rtol=2 * step)


@kernels
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m", [1, 2, 5, 16])
@pytest.mark.parametrize(("n", "k"), [(64, 256), (37, 200)])
@pytest.mark.parametrize("config", [{"BLOCK_N": 16, "BLOCK_K": 64}, {"BLOCK_N": 32, "BLOCK_K": 32}])
def test_fp8_skinny_gemm_equals_the_dequantized_reference(
    dtype: torch.dtype, m: int, n: int, k: int, config: dict[str, int]
) -> None:
    """Ragged N and K (37 x 200) exercise the masked loads; 1 row takes the GEMV kernel."""
    weight, scale = fp8_weight(n, k, seed=m * n + k)
    x = torch.randn(m, k, dtype=dtype, device=DEVICE)
    out = torch.full((m, n), float("nan"), dtype=dtype, device=DEVICE)
    fp8_linear.launch(x, weight, scale, out, config)
    assert_close_to_reference(out, x, weight, scale)


@kernels
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("n", "k"), [(64, 256), (37, 200)])
@pytest.mark.parametrize("tuned", [False, True] if CUDA else [False])
def test_fp8_one_row_through_the_tensor_core_kernel(dtype: torch.dtype, n: int, k: int, tuned: bool) -> None:
    """One row padded to 16 through tl.dot: the alternative the one-row timing may choose."""
    weight, scale = fp8_weight(n, k, seed=n + k)
    x = torch.randn(1, k, dtype=dtype, device=DEVICE)
    out = torch.full((1, n), float("nan"), dtype=dtype, device=DEVICE)
    config = None if tuned else {"BLOCK_N": 16, "BLOCK_K": 64}
    fp8_linear.launch(x, weight, scale, out, config, one_row_dot=True)
    assert_close_to_reference(out, x, weight, scale)


@kernels
@pytest.mark.parametrize("m", [1, 5])
def test_fp8_matmul_op_takes_batched_inputs(m: int) -> None:
    """The op as the model calls it: [b, 1, K] activations, tuned configs on CUDA."""
    weight, scale = fp8_weight(96, 128, seed=m)
    x = torch.randn(m, 1, 128, dtype=torch.bfloat16, device=DEVICE)
    out = torch.ops.llamagate.fp8_matmul(x, weight, scale)
    assert out.shape == (m, 1, 96) and out.dtype == torch.bfloat16
    assert_close_to_reference(out[:, 0], x[:, 0], weight, scale)


@kernels
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_dequantize_kernel_rounds_once_as_the_reference_does(dtype: torch.dtype) -> None:
    weight, scale = fp8_weight(37, 600, seed=4)
    got = torch.ops.llamagate.fp8_dequantize(weight, scale, dtype)
    expected = dequantize(weight, scale, dtype)
    if INTERPRETING and dtype == torch.bfloat16:
        # The interpreter rounds fp32 -> bf16 toward zero (a GPU to nearest): one step apart at most.
        torch.testing.assert_close(got, expected, rtol=2**-7, atol=0)
    else:
        assert torch.equal(got, expected)


@kernels
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m", [17, 40, 64])
@pytest.mark.parametrize(("n", "k"), [(64, 256), (37, 200)])
@pytest.mark.parametrize("config", [{"BLOCK_N": 16, "BLOCK_K": 64}, {"BLOCK_N": 32, "BLOCK_K": 128}, None])
def test_w8a8_kernel_equals_the_product_of_the_scaled_operands(
    dtype: torch.dtype, m: int, n: int, k: int, config: dict[str, int] | None
) -> None:
    """Both operands e4m3 with their own scales (per token, per channel); ragged N and K exercise the
    masked loads, rows past M the padded tile. None: autotuned on CUDA, the fixed CPU config else."""
    weight, scale = fp8_weight(n, k, seed=m + n + k)
    values, row_scale = fp8_linear.quantize_rows(torch.randn(m, k, device=DEVICE))
    out = torch.full((m, n), float("nan"), dtype=dtype, device=DEVICE)
    w8a8_gemm.launch(values, row_scale.reshape(-1), weight, scale, out, config)
    assert_close_to_reference(out, values.double() * row_scale.double(), weight, scale)


@kernels
def test_w8a8_kernel_refuses_more_rows_than_one_tile() -> None:
    weight, scale = fp8_weight(32, 64, seed=1)
    values, row_scale = fp8_linear.quantize_rows(torch.randn(w8a8_gemm.MAX_ROWS + 1, 64, device=DEVICE))
    out = torch.empty(w8a8_gemm.MAX_ROWS + 1, 32, dtype=torch.bfloat16, device=DEVICE)
    with pytest.raises(ValueError, match="at most 64 rows"):
        w8a8_gemm.launch(values, row_scale.reshape(-1), weight, scale, out)


@kernels
@pytest.mark.parametrize("rows", [20, 64])
def test_scaled_matmul_through_triton_quantizes_each_token(rows: int) -> None:
    """The decode path of 17..64 rows with tensor_cores="triton": the activations' own e4m3 rounding
    bounds the error at a few percent of the output's scale (as the cuBLAS path's test below)."""
    weight, scale = fp8_weight(48, 256, seed=rows)
    x = torch.randn(rows, 1, 256, dtype=torch.bfloat16, device=DEVICE)
    out = fp8_linear.scaled_matmul(x, weight, scale, "triton")
    assert out.shape == (rows, 1, 48) and out.dtype == torch.bfloat16
    expected = reference(x[:, 0], weight, scale)
    error = float((out[:, 0].double() - expected).abs().max() / expected.abs().max())
    assert error < 0.08, error


def test_use_fp8_kernels_names_the_tensor_core_choices() -> None:
    with pytest.raises(ValueError, match="tensor_cores must be one of triton, cublas"):
        fp8_linear.use_fp8_kernels(torch.nn.Linear(2, 2), tensor_cores="cutlass")


@kernels
def test_fp8_op_compiles_with_fullgraph() -> None:
    weight, scale = fp8_weight(48, 64, seed=3)
    x = torch.randn(4, 1, 64, dtype=torch.bfloat16, device=DEVICE)

    def step(x: torch.Tensor) -> torch.Tensor:
        return torch.ops.llamagate.fp8_matmul(x * 2, weight, scale) + 1

    with torch.inference_mode():
        compiled = torch.compile(step, fullgraph=True)(x)
    assert_close_to_reference(compiled[:, 0] - 1, x[:, 0] * 2, weight, scale)


@kernels
@pytest.mark.parametrize(("m", "k"), [(3, 200), (4, 5000)])
def test_the_one_kernel_activation_quantizer_equals_quantize_rows(m: int, k: int) -> None:
    """5000 columns take two blocks of the row; the all-zero row keeps scale 1."""
    x = torch.randn(m, k, device=DEVICE) * torch.logspace(-3, 2, m, device=DEVICE)[:, None]
    x[-1] = 0
    values, row_scale = fp8_linear.quantize_rows_fused(x.to(torch.float16))
    expected_values, expected_scale = fp8_linear.quantize_rows(x.to(torch.float16))
    assert values.dtype == torch.float8_e4m3fn and row_scale.shape == (m, 1)
    torch.testing.assert_close(row_scale, expected_scale, rtol=1e-6, atol=0)
    assert float(row_scale[-1]) == 1.0
    # Division may round the last fp32 bit differently: at most one e4m3 step (1/8) apart.
    torch.testing.assert_close(values.float(), expected_values.float(), rtol=0.125, atol=2**-9)


# Interpreted kernels take fp16: the Triton CPU interpreter's bf16 dots are wrong.
PREFILL_DTYPE = torch.bfloat16 if CUDA else torch.float16


@kernels
@pytest.mark.parametrize("tensor_cores", fp8_linear.TENSOR_CORES)
@pytest.mark.parametrize("fp8_activations", [False, True])
@pytest.mark.parametrize("rows", [1, 16, 17, 64, 80])
def test_the_prefill_op_picks_its_kernel_by_row_count(
    rows: int, fp8_activations: bool, tensor_cores: str
) -> None:
    """Up to max_rows the skinny kernel, exact up to one rounding; beyond, FP8 tensor cores (the
    W8A8 kernel up to 64 rows, cuBLAS past it), whose e4m3 activations bound the error at a few
    percent, or the dequantized weight, exact again."""
    weight, scale = fp8_weight(48, 256, seed=rows)
    x = torch.randn(1, rows, 256, dtype=PREFILL_DTYPE, device=DEVICE)
    out = torch.ops.llamagate.fp8_prefill_linear(x, weight, scale, 16, fp8_activations, tensor_cores)
    assert out.shape == (1, rows, 48) and out.dtype == PREFILL_DTYPE
    if fp8_activations and rows > 16:
        expected = reference(x[0], weight, scale)
        error = float((out[0].double() - expected).abs().max() / expected.abs().max())
        assert error < 0.08, error
    else:
        assert_close_to_reference(out[0], x[0], weight, scale)


@kernels
@pytest.mark.parametrize("fp8_activations", [False, True])
def test_the_prefill_op_is_one_graph_across_its_kernel_changes(fp8_activations: bool) -> None:
    """What keeps the compiled prefill of an FP8 model at bf16's graph count: row counts on both
    sides of the kernel changes (16 and 64 rows) run one dynamic graph."""
    torch._dynamo.reset()
    weight, scale = fp8_weight(48, 64, seed=5)

    def project(x: torch.Tensor) -> torch.Tensor:
        return torch.ops.llamagate.fp8_prefill_linear(x * 2, weight, scale, 16, fp8_activations, "triton") + 1

    compiled = torch.compile(project, dynamic=True, fullgraph=True)
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    with torch.inference_mode(), torch._dynamo.config.patch(error_on_recompile=True):
        for rows in (3, 16, 40, 70):
            x = torch.randn(1, rows, 64, dtype=PREFILL_DTYPE, device=DEVICE)
            out = compiled(x)
            expected = torch.ops.llamagate.fp8_prefill_linear(
                x * 2, weight, scale, 16, fp8_activations, "triton"
            )
            torch.testing.assert_close(out, expected + 1)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - before == 1


def tiny_fp8_model(device: str, dtype: torch.dtype) -> Transformer:
    model = Transformer(ARGS)
    init_random_weights(model, 7)
    model = model.to(device, dtype).eval().requires_grad_(False)
    quantize_projections(model)
    return model


def test_the_kernel_module_falls_back_to_the_reference_off_cuda() -> None:
    """On CPU (and for fp32 activations) the swapped modules compute exactly what FP8Linear does."""
    model = tiny_fp8_model("cpu", torch.float32)
    tokens = torch.tensor([PROMPTS[0]])
    with torch.inference_mode():
        before = model(tokens)
        assert fp8_linear.use_fp8_kernels(model) == 7 * ARGS.n_layers
        assert all(isinstance(m, fp8_linear.FP8KernelLinear) for m in fp8_layers(model))
        assert torch.equal(model(tokens), before)
        fp8_linear.use_fp8_kernels(model, on=False)
        assert not any(isinstance(m, fp8_linear.FP8KernelLinear) for m in model.modules())


@pytest.mark.gpu
@pytest.mark.skipif(not FP8_GPU, reason="needs a GPU with FP8 (compute capability 8.9+)")
@pytest.mark.parametrize("tensor_cores", fp8_linear.TENSOR_CORES)
@pytest.mark.parametrize("scaled_mm", ["decode", "always"])
@pytest.mark.parametrize("shape", [(1, 1), (16, 1), (40, 1), (64, 1), (1, 300)])
def test_fp8_paths_on_7b_shapes_follow_the_reference(
    shape: tuple[int, int], scaled_mm: str, tensor_cores: str
) -> None:
    """The path each step shape takes on CUDA (the kernel up to 16 rows; beyond, FP8 tensor cores
    with per-token activation scales for decode steps, dequantized weights for prefill, unless
    `always`) against the exact product: the activations' own e4m3 rounding (tensor cores only)
    bounds the error at a few percent of the output's scale, bf16 rounding the rest."""
    weight, scale = fp8_weight(4096, 11008, seed=sum(shape))
    module = fp8_linear.FP8KernelLinear(weight, scale)
    fp8_linear.use_fp8_kernels(module, scaled_mm=scaled_mm, tensor_cores=tensor_cores)
    x = torch.randn(*shape, 11008, dtype=torch.bfloat16, device="cuda")
    with torch.inference_mode():
        out = module(x)
    expected = reference(x.flatten(0, 1), weight, scale)
    error = float((out.flatten(0, 1).double() - expected).abs().max() / expected.abs().max())
    rows = shape[0] * shape[1]
    fp8_activations = rows > fp8_linear.MAX_ROWS and (scaled_mm == "always" or shape[1] == 1)
    assert error < (0.08 if fp8_activations else 0.01), error


@pytest.mark.gpu
@pytest.mark.skipif(
    not FP8_GPU or not HAS_TRITON, reason="needs Triton on a GPU with FP8 (compute capability 8.9+)"
)
@pytest.mark.parametrize("fused_block", [True, False])
def test_engine_tokens_with_fp8_weights_follow_the_eager_fp8_model(fused_block: bool) -> None:
    """Compiled, graph-captured decode steps (batch sizes 1, 2 and 4) over FP8 projections, with and
    without the fused decode block, give the eager FP8 model's greedy tokens (the reference
    forward: dequantize, bf16 matmul); the kernel rounds differently, so a sequence may leave the
    reference only where its two best logits nearly tie."""
    # Each runner compiles the same decode function again, and dynamo's per-function recompile
    # limit counts every runner of this process: start each test's count afresh.
    torch._dynamo.reset()
    model = tiny_fp8_model("cuda", torch.bfloat16)
    assert len(fp8_layers(model)) == 7 * ARGS.n_layers
    expected = []
    with torch.inference_mode():
        for prompt in PROMPTS:
            tokens, gaps = list(prompt), []
            for _ in range(12):
                logits = model(torch.tensor([tokens], device="cuda"))[0, -1].float()
                top = logits.topk(2).values
                gaps.append(float(top[0] - top[1]))
                tokens.append(int(logits.argmax()))
            expected.append((tokens[len(prompt) :], gaps))
    config = EngineConfig(
        max_seq_len=128,
        max_batch_size=4,
        kv_block_size=4,
        num_kv_blocks=80,
        prefill_chunk=7,
        device="cuda",
        dtype="bfloat16",
        graph_sizes=(1, 2),
        fused_decode_block=fused_block,
    )
    engine_model = copy.deepcopy(model)
    runner, allocator = build_runner(engine_model, config)
    runner.capture()
    # Fused to wqkv / w13 and on the kernels, still FP8; the output head stays bf16.
    assert len(fp8_layers(engine_model)) == 4 * ARGS.n_layers
    assert all(isinstance(m, fp8_linear.FP8KernelLinear) for m in fp8_layers(engine_model))
    assert engine_model.output.weight.dtype == torch.bfloat16
    scheduler = Scheduler(config, allocator, eos_id=-1)
    params = SamplingParams(temperature=0, max_gen_len=12)
    sequences = [scheduler.add(GenerationRequest(str(i), tuple(p), params, 0)) for i, p in enumerate(PROMPTS)]
    run_to_completion(scheduler, runner, max_steps=200)
    for prompt, sequence, (tokens, gaps) in zip(PROMPTS, sequences, expected, strict=True):
        generated = sequence.tokens[len(prompt) :]
        first = next((i for i, (a, b) in enumerate(zip(generated, tokens, strict=True)) if a != b), None)
        assert first is None or gaps[first] < 0.1, (generated, tokens, gaps)


def test_reference_forward_is_dequantize_then_linear() -> None:
    weight, scale = quantize(torch.randn(24, 40))
    x = torch.randn(3, 40)
    assert torch.equal(FP8Linear(weight, scale)(x), x @ dequantize(weight, scale, torch.float32).t())
