"""FP8 weights (model/fp8.py, `--weights-dtype fp8`) on CPU: the format's round trip, the reference
forward, which layers are quantized, fusion and sharding of the scales, loading from Meta and
Hugging Face checkpoints, the engine over an FP8 model, and the flag's errors. Two torchrun ranks:
tests/integration/inference_service/test_fp8_ranks.py; the kernels: tests/unit/engine/test_fp8_kernels.py."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from services.common.sampling import SamplingParams
from services.inference.engine.config import EngineConfig
from services.inference.engine.request import GenerationRequest
from services.inference.engine.runner import build_runner
from services.inference.engine.scheduler import Scheduler
from services.inference.model.checkpoint import load_model
from services.inference.model.fp8 import (
    FP8_DTYPE,
    FP8_MAX,
    FP8Linear,
    FP8Unsupported,
    check_fp8_device,
    dequantize,
    fp8_layers,
    quantize,
    quantize_projections,
)
from services.inference.model.fusion import fuse_projections
from services.inference.model.parallel import local_shard, split_dim, whole_row_absmax
from tests.support.models import CPU_MP1, PROMPT_TOKENS, meta_and_hf_checkpoints, random_model, tiny_args
from tests.unit.engine.stepping import run_to_completion
from tests.unit.inference_fp8.flags import parse, pretend_gpu

# e4m3: 3 mantissa bits, so rounding a normal value errs by at most half a step, 2**-4 relative;
# below 2**-6 (in units of the scale) values are subnormal, spaced 2**-9 apart.
RELATIVE_STEP = 2**-4
SUBNORMAL_HALF_STEP = 2**-10


def uneven_rows(n: int, k: int, seed: int) -> torch.Tensor:
    """Rows four orders of magnitude apart, as real projections have: one scale per tensor would fail."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g) * torch.logspace(-3, 1, n)[:, None]


def assert_close_logits(got: torch.Tensor, expected: torch.Tensor) -> None:
    """FP8 against full-precision weights in a tiny random model: a few percent of the logits'
    spread on average, and mostly the same top token (random logits have many near ties)."""
    assert float((got - expected).abs().mean() / expected.std()) < 0.05
    assert float((got.argmax(-1) == expected.argmax(-1)).float().mean()) >= 0.75


def test_round_trip_error_is_half_an_e4m3_step_of_each_rows_own_range() -> None:
    weight = uneven_rows(32, 256, seed=0)
    values, scale = quantize(weight)
    assert values.dtype == FP8_DTYPE and scale.dtype == torch.float32 and scale.shape == (32,)
    back = dequantize(values, scale, torch.float32)
    bound = torch.maximum(weight.abs() * RELATIVE_STEP, scale[:, None] * SUBNORMAL_HALF_STEP)
    assert ((back - weight).abs() <= bound * (1 + 1e-6)).all()
    # Each row's largest value maps to e4m3's largest and comes back exactly (up to fp32 rounding).
    torch.testing.assert_close(back.abs().amax(1), weight.abs().amax(1), rtol=1e-6, atol=0)
    assert float(values.float().abs().amax()) == FP8_MAX
    # Gaussian rows: the typical error is a fraction of the bound.
    relative = (back - weight).norm(dim=1) / weight.norm(dim=1)
    assert float(relative.max()) < 0.04


def test_zero_rows_and_extreme_values_stay_finite() -> None:
    weight = torch.zeros(3, 16)
    weight[1] = torch.linspace(-1e4, 1e4, 16)
    weight[2, 0] = 1e-30
    values, scale = quantize(weight)
    back = dequantize(values, scale, torch.float32)
    assert torch.isfinite(back).all() and torch.equal(back[0], weight[0]) and float(scale[0]) == 1.0
    torch.testing.assert_close(back[1], weight[1], rtol=RELATIVE_STEP, atol=0)


def test_an_explicit_row_absmax_is_honoured() -> None:
    """A row-parallel block quantizes with whole-row maxima it does not itself contain."""
    weight = uneven_rows(8, 64, seed=1)
    wide = weight.abs().amax(1) * 3
    values, scale = quantize(weight, wide)
    torch.testing.assert_close(scale, wide / FP8_MAX)
    assert float(values.float().abs().amax()) < FP8_MAX


def test_fp8_linear_is_the_dequantized_linear_and_close_to_the_original() -> None:
    linear = nn.Linear(96, 40, bias=False)
    with torch.no_grad():
        linear.weight.copy_(uneven_rows(40, 96, seed=2))
    fp8 = FP8Linear.from_weight(linear.weight)
    assert (fp8.in_features, fp8.out_features) == (96, 40)
    x = torch.randn(5, 96)
    exact = F.linear(x, dequantize(fp8.weight, fp8.scale, torch.float32))
    assert torch.equal(fp8(x), exact)
    expected = linear(x).detach()
    # Each weight errs by at most 2**-4 of itself (no row here reaches e4m3's subnormals), so an
    # output errs by at most 2**-4 |x| |w_row| (Cauchy-Schwarz); rounding errors mostly cancel.
    bound = RELATIVE_STEP * x.norm(dim=1)[:, None] * linear.weight.detach().norm(dim=1)[None, :]
    ratio = (fp8(x).detach() - expected).abs() / bound
    assert float(ratio.max()) <= 1 and float(ratio.mean()) < 0.25
    with pytest.raises(TypeError, match=r"takes torch\.float8_e4m3fn weights"):
        FP8Linear(linear.weight.detach(), fp8.scale)


def test_moving_a_quantized_model_to_another_dtype_keeps_the_format() -> None:
    model = quantize_projections(random_model(tiny_args(), seed=3))
    layer = fp8_layers(model)[0]
    weight, scale = layer.weight.clone(), layer.scale.clone()
    model.to(torch.bfloat16)
    assert layer.weight.dtype == FP8_DTYPE and torch.equal(
        layer.weight.view(torch.uint8), weight.view(torch.uint8)
    )
    assert layer.scale.dtype == torch.float32 and torch.equal(layer.scale, scale)
    assert model.output.weight.dtype == torch.bfloat16  # the rest follows .to() as before


def test_only_the_layer_projections_are_quantized() -> None:
    args = tiny_args()
    model = random_model(args, seed=4)
    tokens = torch.tensor(PROMPT_TOKENS)
    with torch.inference_mode():
        expected = model(tokens)
        quantize_projections(model)
        got = model(tokens)
    names = {name for name, module in model.named_modules() if isinstance(module, FP8Linear)}
    assert len(names) == 7 * args.n_layers
    assert {name.split(".", 2)[2] for name in names} == {
        *(f"attention.{w}" for w in ("wq", "wk", "wv", "wo")),
        *(f"feed_forward.{w}" for w in ("w1", "w2", "w3")),
    }
    assert type(model.output) is nn.Linear and model.output.weight.dtype == torch.float32
    assert model.tok_embeddings.weight.dtype == torch.float32
    # Weight bytes: 1 per projection weight plus 4 per row.
    projection_bytes = sum(m.weight.numel() + 4 * m.out_features for m in fp8_layers(model))
    assert sum(p.numel() * p.element_size() for p in fp8_layers(model)[0].parameters()) == (
        fp8_layers(model)[0].weight.numel() + 4 * fp8_layers(model)[0].out_features
    )
    assert projection_bytes < sum(m.weight.numel() for m in fp8_layers(model)) * 1.1
    assert_close_logits(got, expected)


def test_quantizing_commutes_with_fusion() -> None:
    """Per-row scales: fusing FP8 parts stacks their rows and scales, as quantizing the fused weight does."""
    model = random_model(tiny_args(), seed=5)
    quantize_then_fuse = fuse_projections(quantize_projections(copy.deepcopy(model)))
    fuse_then_quantize = quantize_projections(fuse_projections(copy.deepcopy(model)))
    a, b = dict(quantize_then_fuse.named_parameters()), dict(fuse_then_quantize.named_parameters())
    assert a.keys() == b.keys() and "layers.0.attention.wqkv.scale" in a
    for name in a:
        assert torch.equal(a[name].view(torch.uint8), b[name].view(torch.uint8)), name
    tokens = torch.tensor(PROMPT_TOKENS)
    with torch.inference_mode():
        assert torch.equal(quantize_then_fuse(tokens), fuse_then_quantize(tokens))


def test_scales_split_with_column_parallel_rows_and_stay_whole_beside_row_parallel_ones() -> None:
    assert split_dim("layers.0.attention.wq.scale") == 0
    assert split_dim("layers.3.feed_forward.w3.scale") == 0
    assert split_dim("layers.0.attention.wo.scale") is None
    assert split_dim("layers.1.feed_forward.w2.scale") is None
    assert split_dim("layers.1.feed_forward.w2.weight") == 1
    # Column-parallel: a rank's rows quantize to exactly MP 1's rows, scales included.
    weight = uneven_rows(16, 32, seed=6)
    values, scale = quantize(weight)
    for rank in range(2):
        block_values, block_scale = quantize(local_shard(weight, 0, rank, 2))
        assert torch.equal(block_values.view(torch.uint8), local_shard(values, 0, rank, 2).view(torch.uint8))
        assert torch.equal(block_scale, local_shard(scale, 0, rank, 2))
    # Row-parallel: with the whole rows' absmax each rank's block equals MP 1's columns.
    for rank in range(2):
        block = local_shard(weight, 1, rank, 2)
        absmax = whole_row_absmax("layers.0.attention.wo.weight", weight.abs().amax(1), world_size=1)
        block_values, block_scale = quantize(block, absmax)
        assert torch.equal(block_values.view(torch.uint8), local_shard(values, 1, rank, 2).view(torch.uint8))
        assert torch.equal(block_scale, scale)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return meta_and_hf_checkpoints(tmp_path_factory.mktemp("fp8"), seed=13)


def test_loading_with_fp8_weights_quantizes_either_format_as_the_loaded_model_would(
    checkpoints: list[Path],
) -> None:
    """Meta and Hugging Face layouts (q/k rows permuted back before quantizing) load to the same
    FP8 model, equal to quantizing the plainly loaded one."""
    tokens = torch.tensor(PROMPT_TOKENS)
    loaded = [
        load_model(ckpt, ctx=CPU_MP1, dtype=torch.float32, max_seq_len=64, fp8_weights=True)
        for ckpt in checkpoints
    ]
    plain = load_model(checkpoints[0], ctx=CPU_MP1, dtype=torch.float32, max_seq_len=64)
    with torch.inference_mode():
        expected = plain(tokens)
        reference = quantize_projections(plain)(tokens)
        for ckpt, model in zip(checkpoints, loaded, strict=True):
            assert len(fp8_layers(model)) == 7 * model.args.n_layers, ckpt.name
            state, other = model.state_dict(), plain.state_dict()
            assert state.keys() == other.keys(), ckpt.name
            for name in state:
                assert torch.equal(state[name].view(torch.uint8), other[name].view(torch.uint8)), (
                    ckpt.name,
                    name,
                )
            assert torch.equal(model(tokens), reference), ckpt.name
    assert_close_logits(reference, expected)


def test_the_engine_runs_an_fp8_model_on_cpu_and_follows_its_eager_greedy_tokens(
    checkpoints: list[Path],
) -> None:
    """Fused at build, the reference forward on CPU: the paged-cache engine's greedy tokens are the
    eager FP8 model's (fp32 activations: the same arithmetic up to summation order)."""
    model = load_model(checkpoints[0], ctx=CPU_MP1, dtype=torch.float32, max_seq_len=64, fp8_weights=True)
    prompts = [p[:7] for p in PROMPT_TOKENS]
    expected = []
    with torch.inference_mode():
        for prompt in prompts:
            tokens = list(prompt)
            for _ in range(8):
                tokens.append(int(model(torch.tensor([tokens]))[0, -1].argmax()))
            expected.append(tokens[len(prompt) :])
    config = EngineConfig(
        max_seq_len=64, max_batch_size=2, kv_block_size=4, num_kv_blocks=40, prefill_chunk=5
    )
    runner, allocator = build_runner(copy.deepcopy(model), config)
    assert len(fp8_layers(runner.model)) == 4 * model.args.n_layers  # fused: wqkv, wo, w13, w2
    scheduler = Scheduler(config, allocator, eos_id=-1)
    params = SamplingParams(temperature=0, max_gen_len=8)
    sequences = [scheduler.add(GenerationRequest(str(i), tuple(p), params, 0)) for i, p in enumerate(prompts)]
    run_to_completion(scheduler, runner, max_steps=100)
    assert [s.tokens[len(p) :] for p, s in zip(prompts, sequences, strict=True)] == expected


# -- the flag ------------------------------------------------------------------------------------


def test_weights_dtype_defaults_to_the_model_dtype_and_accepts_fp8(tmp_path: Path) -> None:
    assert parse(tmp_path, "--device", "cpu").weights_dtype == "auto"
    config = parse(tmp_path, "--device", "cpu", "--weights-dtype", "fp8")
    assert config.weights_dtype == "fp8" and config.engine.dtype == "float32"


def test_an_unknown_weights_dtype_is_refused_with_the_choices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse(tmp_path, "--weights-dtype", "int4")
    err = capsys.readouterr().err
    assert "--weights-dtype: invalid choice: 'int4'" in err and "'auto', 'fp8'" in err


def test_fp8_on_a_gpu_without_fp8_names_the_gpu_and_what_is_needed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pretend_gpu(monkeypatch, "NVIDIA A100-SXM4-80GB", (8, 0))
    with pytest.raises(SystemExit):
        parse(tmp_path, "--device", "cuda", "--weights-dtype", "fp8")
    err = capsys.readouterr().err
    assert "--weights-dtype fp8 needs a GPU with FP8 support (compute capability 8.9 or newer" in err
    assert "cuda:0 is NVIDIA A100-SXM4-80GB with compute capability 8.0" in err
    assert "--weights-dtype auto" in err
    # bf16 weights on the same GPU are fine, and so is FP8 on an H100-class one.
    assert parse(tmp_path, "--device", "cuda").weights_dtype == "auto"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (9, 0))
    assert parse(tmp_path, "--device", "cuda", "--weights-dtype", "fp8").weights_dtype == "fp8"


def test_loading_fp8_weights_onto_an_unsupported_gpu_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Tesla T4")
    with pytest.raises(FP8Unsupported, match=r"cuda:0 is Tesla T4 with compute capability 7\.5"):
        check_fp8_device(torch.device("cuda", 0))
    check_fp8_device(torch.device("cpu"))  # the reference path: accepted
