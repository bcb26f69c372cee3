"""Fused projections (wq/wk/wv -> wqkv, w1/w3 -> w13) give the unfused model's logits: on one rank,
from Meta and Hugging Face checkpoints, and through the serving runner, without keeping a second
copy of the weights (on two torchrun ranks: tests/integration/model_core/test_fused_shards.py)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from services.common.sampling import SamplingParams
from services.inference.engine.config import EngineConfig
from services.inference.engine.request import GenerationRequest
from services.inference.engine.runner import build_runner
from services.inference.engine.scheduler import Scheduler
from services.inference.model.checkpoint import load_model
from services.inference.model.fusion import FusedAttention, fuse_projections
from services.inference.model.transformer import Transformer
from tests.support.models import (
    CPU_MP1,
    FUSED_NAMES,
    PROMPT_TOKENS,
    SEPARATE_NAMES,
    layer_names,
    meta_and_hf_checkpoints,
    random_model,
    tiny_args,
)
from tests.unit.engine.stepping import run_to_completion

# fp32 on CPU: stacking changes only how the same dot products are blocked.
ATOL = RTOL = 1e-5


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return meta_and_hf_checkpoints(tmp_path_factory.mktemp("fused"), seed=11)


def test_fused_model_gives_the_unfused_logits_and_frees_the_separate_weights() -> None:
    model = random_model(tiny_args(), seed=3)
    reference = copy.deepcopy(model)
    elements = sum(p.numel() for p in model.parameters())
    tokens = torch.tensor(PROMPT_TOKENS)
    fuse_projections(model)
    names = [name for name, _ in model.named_parameters()]
    assert layer_names(names) & SEPARATE_NAMES == set()
    assert layer_names(names) >= FUSED_NAMES
    assert sum(p.numel() for p in model.parameters()) == elements
    attention = model.layers[0].attention
    assert isinstance(attention, FusedAttention)
    assert attention.qkv_widths == (8 * 8, 4 * 8, 4 * 8) and attention.kv_heads == 4
    with torch.inference_mode():
        torch.testing.assert_close(model(tokens), reference(tokens), atol=ATOL, rtol=RTOL)
        # A second call (build_runner runs on every rebuild) changes nothing.
        fuse_projections(model)
        torch.testing.assert_close(model(tokens), reference(tokens), atol=ATOL, rtol=RTOL)


def test_checkpoints_load_by_the_separate_names_then_fuse(checkpoints: list[Path]) -> None:
    tokens = torch.tensor(PROMPT_TOKENS)
    for ckpt in checkpoints:
        model = load_model(ckpt, ctx=CPU_MP1, dtype=torch.float32, max_seq_len=64)
        assert layer_names(list(model.state_dict())) >= SEPARATE_NAMES, ckpt.name
        with torch.inference_mode():
            unfused = model(tokens)
            fuse_projections(model)
            torch.testing.assert_close(model(tokens), unfused, atol=ATOL, rtol=RTOL, msg=ckpt.name)


def greedy_recompute(model: Transformer, prompt: list[int], n: int) -> list[int]:
    tokens = list(prompt)
    with torch.inference_mode():
        for _ in range(n):
            tokens.append(int(model(torch.tensor([tokens]))[0, -1].argmax()))
    return tokens


def test_the_serving_runner_fuses_and_generates_the_unfused_tokens() -> None:
    model = random_model(tiny_args(vocab_size=97, max_seq_len=128), seed=4)
    reference = copy.deepcopy(model)
    config = EngineConfig(
        max_seq_len=128, max_batch_size=2, kv_block_size=4, num_kv_blocks=40, prefill_chunk=5
    )
    runner, allocator = build_runner(model, config)
    assert layer_names([name for name, _ in model.named_parameters()]) >= FUSED_NAMES
    assert runner.storage.k.shape[-2] == 4  # kv heads read off the fused layer
    scheduler = Scheduler(config, allocator, eos_id=-1)
    prompts = [[1, 5, 9, 13, 2, 7, 8, 9], [1, 3, 3]]
    params = SamplingParams(temperature=0, max_gen_len=10)
    sequences = [scheduler.add(GenerationRequest(str(i), tuple(p), params, 0)) for i, p in enumerate(prompts)]
    run_to_completion(scheduler, runner, max_steps=100)
    for prompt, sequence in zip(prompts, sequences, strict=True):
        assert sequence.tokens == greedy_recompute(reference, prompt, 10)
