"""The fused decode block on two torchrun ranks (gloo, CPU, its Triton kernels under the
interpreter): each rank's block sums its row-parallel outputs itself and only rank 0 adds the
residual, and every rank gets what the hooked TransformerBlock and a single rank compute."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from services.inference.kernels import skinny_gemm
from tests.support.models import meta_and_hf_checkpoints
from tests.support.processes import ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(skinny_gemm.triton is None, reason="needs Triton (its CPU interpreter)"),
]


def run_ranks(nproc: int, ckpt: Path, out: Path) -> list[dict[str, object]]:
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TRITON_INTERPRET": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    command += ["-m", "tests.integration.model_core.decode_block_worker", "--out", str(out), str(ckpt)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return [torch.load(out / f"rank{rank}.pt") for rank in range(nproc)]


def test_the_fused_block_on_two_ranks_equals_the_hooked_block_and_one_rank(tmp_path: Path) -> None:
    ckpt = meta_and_hf_checkpoints(tmp_path / "ckpt", seed=13)[0]
    (single,) = run_ranks(1, ckpt, tmp_path / "mp1")
    ranks = run_ranks(2, ckpt, tmp_path / "mp2")
    layers = single["fused"].shape[0]  # type: ignore[attr-defined]
    assert single["fused_blocks"] == layers and single["world_size"] == 1
    # fp32: the kernels block the same dot products differently from F.linear.
    torch.testing.assert_close(single["fused"], single["unfused"], atol=1e-4, rtol=1e-4)
    for rank, result in enumerate(ranks):
        where = f"rank {rank}/2"
        assert result["world_size"] == 2 and result["fused_blocks"] == layers, where
        torch.testing.assert_close(result["fused"], result["unfused"], atol=1e-4, rtol=1e-4, msg=where)
        torch.testing.assert_close(result["fused"], single["fused"], atol=1e-4, rtol=1e-4, msg=where)
