"""The compiled prefill forward (torch.compile, dynamic shapes) gives the eager model's tokens and,
once warmed up at start-up, never compiles again whatever the prompt lengths, row counts and
cached prefixes of later steps."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

from services.common.sampling import SamplingParams
from services.inference.engine.request import GenerationRequest
from services.inference.engine.scheduler import Scheduler
from services.inference.kernels.fp8_linear import use_fp8_kernels
from services.inference.model.fp8 import quantize_projections
from services.inference.model.transformer import Transformer, init_random_weights
from tests.unit.engine.stepping import ARGS, run_to_completion, tiny_runner
from tests.unit.engine.test_scheduler_runner import greedy_reference

# Lengths 2..23 across chunks of 7 and blocks of 4; the last two share a prefix with the first, so
# their prefill continues cached blocks (the paged path), alone and two rows at once.
PROMPTS = [
    [1, 5, 9, 13, 2, 7, 8, 9, 10, 11, 12, 3, 4],
    [1, 3],
    [1, *[4] * 20, 50, 6],
    [1, 9, 9, 17, 30],
    [1, 5, 9, 13, 2, 7, 8, 9, 10, 11, 12, 3, 4, 60, 61, 62],
    [1, 5, 9, 13, 2, 7, 8, 9, 22],
]


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
            ],
        ),
    ],
)
def test_compiled_prefill_matches_eager_without_recompiling(device: str) -> None:
    torch._dynamo.reset()
    model = Transformer(ARGS)
    init_random_weights(model, 3)
    model.eval()
    config, allocator, runner = tiny_runner(model.to(device), num_blocks=48, device=device)
    # Past dynamo's recompile limit a frame runs eagerly without an error: fail instead.
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        runner.compile_prefill()
    # One graph per kind of step: one row or several, a fresh prompt or a continued one.
    assert runner.prefill_graphs == 4
    assert runner.prefill_compile_s > 0
    scheduler = Scheduler(config, allocator, eos_id=-1)
    params = SamplingParams(temperature=0, max_gen_len=6)
    first = [scheduler.add(GenerationRequest(str(i), tuple(p), params, 0)) for i, p in enumerate(PROMPTS[:4])]
    with torch._dynamo.config.patch(error_on_recompile=True, fail_on_recompile_limit_hit=True):
        run_to_completion(scheduler, runner, max_steps=200)
        later = [
            scheduler.add(GenerationRequest(f"c{i}", tuple(p), params, 0)) for i, p in enumerate(PROMPTS[4:])
        ]
        run_to_completion(scheduler, runner, max_steps=200)
    assert scheduler.stats().prompt_tokens_cached > 0
    for sequence, prompt in zip([*first, *later], PROMPTS, strict=True):
        assert sequence.tokens == greedy_reference(model.cpu(), prompt, 6)
    assert allocator.num_free == 48 - 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kv_cache_dtype", ["auto", "fp8"])
@pytest.mark.parametrize("scaled_mm", ["decode", "always"])
def test_compiled_fp8_prefill_never_recompiles(kv_cache_dtype: str, scaled_mm: str) -> None:
    """FP8 projections change kernels at 16 rows (the Triton kernel below, tensor cores above; with
    FP8 activations also at 64, W8A8 below and cuBLAS above) inside one custom op, so the prefill
    compiles bf16's four graphs and short and long prompt chunks alike find one of them."""
    torch._dynamo.reset()
    model = Transformer(ARGS)
    init_random_weights(model, 3)
    model = quantize_projections(model.to("cuda", torch.bfloat16).eval())
    use_fp8_kernels(model, scaled_mm=scaled_mm)
    config, allocator, runner = tiny_runner(
        model, num_blocks=48, device="cuda", dtype=torch.bfloat16, kv_cache_dtype=kv_cache_dtype
    )
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        runner.compile_prefill()
    assert runner.prefill_graphs == 4
    scheduler = Scheduler(config, allocator, eos_id=-1)
    params = SamplingParams(temperature=0, max_gen_len=6)
    sequences = [scheduler.add(GenerationRequest(str(i), tuple(p), params, 0)) for i, p in enumerate(PROMPTS)]
    with torch._dynamo.config.patch(error_on_recompile=True, fail_on_recompile_limit_hit=True):
        run_to_completion(scheduler, runner, max_steps=300)
    assert all(len(s.tokens) == len(p) + 6 for s, p in zip(sequences, PROMPTS, strict=True))
