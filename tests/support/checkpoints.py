"""Checkpoints written by bench/make_checkpoint.py, and a runner of tests.integration.multi_rank.rank_worker
over one or more ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.support.processes import ROOT

RankResults = list[dict[str, object]]


def make_checkpoint(out: Path, shape: str, shards: int, *extra: str) -> Path:
    """The real CLI, demo vocabulary (so the checkpoint's own tokenizer.model is written too)."""
    command = [sys.executable, "-m", "bench.make_checkpoint", "--shape", shape]
    command += ["--shards", str(shards), "--vocab", "demo", "--out", str(out), *extra]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def run_ranks(
    ckpt: Path, world_size: int, out: Path, timeout: float = 180, prompts: list[list[int]] | None = None
) -> RankResults:
    """rank_worker on `world_size` ranks (plain python for 1, torchrun + gloo otherwise)."""
    out.mkdir(parents=True, exist_ok=True)
    # One thread per rank: the ranks already share the machine's cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    launcher = [sys.executable]
    if world_size > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world_size}"]
    worker = ["-m", "tests.integration.multi_rank.rank_worker", "--ckpt", str(ckpt)]
    worker += ["--tokenizer", str(ckpt / "tokenizer.model"), "--out", str(out)]
    if prompts is not None:
        worker += ["--prompts", json.dumps(prompts)]
    result = subprocess.run(
        [*launcher, *worker], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return [torch.load(out / f"rank{rank}.pt") for rank in range(world_size)]
