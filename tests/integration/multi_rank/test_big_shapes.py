"""Tensor parallelism on CPU: the real 13B and 70B layer shapes, tensor parallel over torchrun + gloo.

One full-width layer each (13B: dim 5120, 40 heads, FFN 13824; 70B: dim 8192, 64 query heads,
8 kv heads, FFN 28672) with the demo vocabulary, written by bench/make_checkpoint.py as the
release's shard count (13B: 2, 70B: 8). The MP=N ranks must produce MP=1's logits and greedy tokens,
including when the 8-shard 70B checkpoint is resharded to 4 and 2 ranks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from services.inference.model.transformer import CONFIGS
from tests.support.checkpoints import RankResults, make_checkpoint, run_ranks

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ckpt_13b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("13b") / "ckpt", "13B", 2, "--layers", "1")


@pytest.fixture(scope="module")
def ckpt_70b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("70b") / "ckpt", "70B", 8, "--layers", "1")


@pytest.fixture(scope="module")
def reference_70b(ckpt_70b: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    (result,) = run_ranks(ckpt_70b, 1, tmp_path_factory.mktemp("70b-mp1"))
    return result


def assert_same_as_reference(results: RankResults, reference: dict[str, object]) -> None:
    assert reference["world_size"] == 1
    greedy = reference["greedy"]
    assert isinstance(greedy, list) and all(len(row) == 8 for row in greedy)  # something to compare
    for rank, result in enumerate(results):
        where = f"rank {rank}/{len(results)}"
        assert result["world_size"] == len(results), where
        # fp32 on CPU: only the summation order of the all-reduces differs from MP=1.
        torch.testing.assert_close(result["logits"], reference["logits"], atol=5e-5, rtol=1e-5, msg=where)
        assert result["greedy"] == greedy, where


def test_13b_layer_on_two_ranks_matches_one(ckpt_13b: Path, tmp_path: Path) -> None:
    shard = torch.load(ckpt_13b / "consolidated.00.pth", mmap=True, weights_only=True)
    args = CONFIGS["13B"]
    assert tuple(shard["layers.0.feed_forward.w1.weight"].shape) == (args.hidden_dim // 2, args.dim)
    assert args.hidden_dim == 13824
    (reference,) = run_ranks(ckpt_13b, 1, tmp_path / "mp1")
    assert_same_as_reference(run_ranks(ckpt_13b, 2, tmp_path / "mp2"), reference)


@pytest.mark.parametrize("world_size", [8, 4, 2])
def test_70b_layer_from_eight_shards_matches_one_rank(
    world_size: int, ckpt_70b: Path, reference_70b: dict[str, object], tmp_path: Path
) -> None:
    shard = torch.load(ckpt_70b / "consolidated.07.pth", mmap=True, weights_only=True)
    args = CONFIGS["70B"]
    assert args.hidden_dim == 28672 and args.head_dim == 128
    assert tuple(shard["layers.0.attention.wk.weight"].shape) == (128, 8192)  # one kv head per shard
    assert_same_as_reference(run_ranks(ckpt_70b, world_size, tmp_path / f"mp{world_size}"), reference_70b)
