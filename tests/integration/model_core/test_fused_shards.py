"""Fused projections on two torchrun ranks (gloo, CPU): each rank stacks its own column-parallel
blocks, from Meta and Hugging Face checkpoints, and gets MP 1's logits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.integration.model_core import fused_worker
from tests.support.models import FUSED_NAMES, layer_names, meta_and_hf_checkpoints
from tests.support.processes import ROOT

# fp32 on CPU: stacking changes only how the same dot products are blocked.
ATOL = RTOL = 1e-5


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return meta_and_hf_checkpoints(tmp_path_factory.mktemp("fused"), seed=11)


@pytest.mark.slow
def test_each_rank_fuses_its_own_shards_under_torchrun(checkpoints: list[Path], tmp_path: Path) -> None:
    reference = fused_worker.logits_before_and_after(checkpoints[0])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += [
        "-m",
        "tests.integration.model_core.fused_worker",
        "--out",
        str(tmp_path),
        *map(str, checkpoints),
    ]
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
