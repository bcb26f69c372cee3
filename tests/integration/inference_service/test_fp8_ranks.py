"""FP8 weights on two torchrun ranks (gloo, CPU) equal MP 1's: each rank's fp8 block and scales are
MP 1's, cut along the weight's split (column-parallel scales split with their rows, row-parallel
ones whole), whether a rank quantizes its block as it loads (whole-row absmax over the ranks) or
the whole model is quantized and then sharded; the logits are MP 1's, before and after fusion,
from Meta and Hugging Face checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from services.inference.model.checkpoint import load_model
from services.inference.model.parallel import local_shard, split_dim
from tests.support.models import CPU_MP1, PROMPT_TOKENS, meta_and_hf_checkpoints
from tests.support.processes import ROOT

WORLD_SIZE = 2


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return meta_and_hf_checkpoints(tmp_path_factory.mktemp("fp8-ranks"), seed=17)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.uint8), b.view(torch.uint8))


@pytest.mark.slow
def test_fp8_shards_on_two_ranks_equal_mp1(checkpoints: list[Path], tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={WORLD_SIZE}",
    ]
    command += ["-m", "tests.integration.inference_service.fp8_rank_worker", "--out", str(tmp_path)]
    command += [str(c) for c in checkpoints]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    tokens = torch.tensor(PROMPT_TOKENS)
    for index, ckpt in enumerate(checkpoints):
        mp1 = load_model(ckpt, ctx=CPU_MP1, dtype=torch.float32, max_seq_len=64, fp8_weights=True)
        with torch.inference_mode():
            expected = mp1(tokens)
        full = mp1.state_dict()
        assert any(name.endswith(".scale") for name in full)
        for rank in range(WORLD_SIZE):
            result = torch.load(tmp_path / f"{index}.rank{rank}.pt")
            where = f"{ckpt.name} rank {rank}/{WORLD_SIZE}"
            assert result["world_size"] == WORLD_SIZE, where
            for key in ("weights", "weights_sharded_after"):
                weights = result[key]
                assert weights.keys() == full.keys(), where
                for name, tensor in full.items():
                    block = local_shard(tensor, split_dim(name), rank, WORLD_SIZE)
                    assert same_bits(weights[name], block), f"{where} {key} {name}"
            # Half of each split weight on this rank; row-parallel scales whole.
            assert (
                result["weights"]["layers.0.attention.wo.scale"].shape
                == full["layers.0.attention.wo.scale"].shape
            )
            assert (
                result["weights"]["layers.0.attention.wq.scale"].shape[0] * WORLD_SIZE
                == full["layers.0.attention.wq.scale"].shape[0]
            )
            # The same weights as MP 1; only the all-reduce's summation order differs.
            for key in ("logits", "logits_sharded_after", "logits_fused"):
                torch.testing.assert_close(result[key], expected, atol=2e-5, rtol=1e-5, msg=f"{where} {key}")
