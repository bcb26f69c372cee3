"""bench/make_checkpoint.py: a seeded random model whose weights do not depend on the shard count."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from services.inference.model.checkpoint import load_model
from services.inference.model.parallel import ParallelContext
from tests.support.checkpoints import make_checkpoint
from tests.support.processes import ROOT

pytestmark = pytest.mark.slow

ONE_RANK = ParallelContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend="gloo")


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    model = load_model(ckpt, ctx=ONE_RANK, dtype=torch.float32, max_seq_len=32)
    return {name: p.detach() for name, p in model.named_parameters()}


def test_any_shard_count_holds_the_same_model(tmp_path: Path) -> None:
    checkpoints = {n: make_checkpoint(tmp_path / f"s{n}", "tiny", n) for n in (1, 2, 4)}
    expected = weights(checkpoints[1])
    for shards, ckpt in checkpoints.items():
        assert len(list(ckpt.glob("consolidated.*.pth"))) == shards
        part = torch.load(ckpt / "consolidated.00.pth", mmap=True, weights_only=True)
        assert part["layers.0.attention.wq.weight"].shape[0] == 128 // shards
        assert part["output.weight"].dtype == torch.bfloat16
        got = weights(ckpt)
        for name, tensor in expected.items():
            assert torch.equal(got[name], tensor), f"{name} differs with {shards} shards"
    params = json.loads((checkpoints[4] / "params.json").read_text())
    assert params["random_weights"] is True and params["vocab_size"] == 1000
    assert (checkpoints[4] / "tokenizer.model").is_file()


def test_the_seed_changes_the_weights(tmp_path: Path) -> None:
    a = weights(make_checkpoint(tmp_path / "a", "tiny", 2, "--seed", "1"))
    b = weights(make_checkpoint(tmp_path / "b", "tiny", 2, "--seed", "2"))
    assert not torch.equal(a["layers.1.feed_forward.w2.weight"], b["layers.1.feed_forward.w2.weight"])
    assert torch.equal(a["norm.weight"], b["norm.weight"])  # norms start at one, as in training


@pytest.mark.parametrize(("argv", "message"), [(["--shards", "3"], "this model runs on [1, 2, 4] shards")])
def test_a_shard_count_that_does_not_split_the_heads_is_refused(
    argv: list[str], message: str, tmp_path: Path
) -> None:
    command = [
        sys.executable,
        "-m",
        "bench.make_checkpoint",
        "--shape",
        "tiny",
        "--vocab",
        "demo",
    ]
    result = subprocess.run(
        [*command, *argv, "--out", str(tmp_path / "x")], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "x" / "params.json").exists()
