"""Fused projections (wq/wk/wv -> wqkv, w1/w3 -> w13) give the unfused model's logits: on one rank,
on two torchrun ranks (each stacking its own column-parallel blocks), from Meta and Hugging Face
checkpoints, and through the serving runner, without keeping a second copy of the weights."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from services.common.sampling import SamplingParams
from services.inference.engine.config import EngineConfig
from services.inference.engine.request import GenerationRequest
from services.inference.engine.runner import build_runner
from services.inference.engine.scheduler import Scheduler
from services.inference.model.checkpoint import load_model, meta_params, save_meta_checkpoint
from services.inference.model.fusion import FusedAttention, fuse_projections
from services.inference.model.hf_format import save_hf_checkpoint
from services.inference.model.transformer import Transformer
from tests.support.processes import ROOT
from tests.unit.engine.stepping import run_to_completion
from tests.unit.model_core import fused_worker
from tests.unit.model_core.conftest import CPU_MP1, full_state, random_model, tiny_args

# fp32 on CPU: stacking changes only how the same dot products are blocked.
ATOL = RTOL = 1e-5
FUSED_NAMES = {"attention.wqkv.weight", "feed_forward.w13.weight"}
SEPARATE_NAMES = {f"attention.{w}.weight" for w in ("wq", "wk", "wv")} | {
    f"feed_forward.{w}.weight" for w in ("w1", "w3")
}


def layer_names(names: list[str]) -> set[str]:
    return {name.split(".", 2)[2] for name in names if name.startswith("layers.")}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    # 8 query heads, 4 kv heads (GQA): the split widths differ, and MP 2 keeps 4 and 2 per rank.
    args = tiny_args()
    state = full_state(random_model(args, seed=11))
    root = tmp_path_factory.mktemp("fused")
    save_meta_checkpoint(state, meta_params(args), root / "meta", num_shards=1)
    save_hf_checkpoint(state, args, root / "hf")
    return [root / "meta", root / "hf"]


def test_fused_model_gives_the_unfused_logits_and_frees_the_separate_weights() -> None:
    model = random_model(tiny_args(), seed=3)
    reference = copy.deepcopy(model)
    elements = sum(p.numel() for p in model.parameters())
    tokens = torch.tensor(fused_worker.TOKENS)
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
    tokens = torch.tensor(fused_worker.TOKENS)
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


@pytest.mark.slow
def test_each_rank_fuses_its_own_shards_under_torchrun(checkpoints: list[Path], tmp_path: Path) -> None:
    reference = fused_worker.logits_before_and_after(checkpoints[0])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "tests.unit.model_core.fused_worker", "--out", str(tmp_path), *map(str, checkpoints)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    for index, ckpt in enumerate(checkpoints):
        for rank in range(2):
            result = torch.load(tmp_path / f"{index}.rank{rank}.pt")
            where = f"{ckpt.name} rank {rank}/2"
            assert result["world_size"] == 2, where
            torch.testing.assert_close(result["fused"], result["unfused"], atol=ATOL, rtol=RTOL, msg=where)
            # The same tolerance as the unfused tensor-parallel test: all-reduce order differs from MP 1.
            torch.testing.assert_close(result["fused"], reference["unfused"], atol=2e-5, rtol=1e-5, msg=where)
            assert result["names_before"] == reference["names_before"], where
            assert result["names_after"] == reference["names_after"], where
            assert layer_names(result["names_after"]) >= FUSED_NAMES, where
            # Each rank holds half of every split weight, fused or not.
            assert result["elements_after"] == result["elements_before"], where
