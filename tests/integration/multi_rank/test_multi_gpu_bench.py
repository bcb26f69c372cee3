"""bench.multi_gpu_bench --dry-run: the tensor-parallel 13B/70B benchmark end to end on CPU ranks (gloo).

MP=1 writes the reference greedy tokens, MP=2 (torchrun) loads the same 2-shard checkpoint, runs
the serving engine with rank 0 broadcasting each step, and must reproduce them exactly (fp32).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT

pytestmark = pytest.mark.slow

BENCH = ["-m", "bench.multi_gpu_bench"]


def bench(world_size: int, *argv: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable]
    if world_size > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world_size}"]
    result = subprocess.run(
        [*launcher, *BENCH, "--dry-run", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]


def test_two_ranks_reproduce_the_single_rank_reference(tmp_path: Path) -> None:
    ckpt, reference = tmp_path / "tiny", tmp_path / "ref.json"
    common = ["--ckpt-dir", str(ckpt), "--out", str(tmp_path), "--shards", "2"]
    bench(1, *common, "--write-reference", str(reference))
    assert len(list(ckpt.glob("consolidated.*.pth"))) == 2  # built by the MP=1 run
    bench(2, *common, "--reference", str(reference))

    written = json.loads(reference.read_text())
    assert written["world_size"] == 1 and all(len(t) == 6 for t in written["engine_tokens"])
    mp1 = json.loads((tmp_path / "multi_gpu_tiny_mp1.json").read_text())
    mp2 = json.loads((tmp_path / "multi_gpu_tiny_mp2.json").read_text())
    assert mp2["correctness"]["reference_world_size"] == 1
    assert mp2["correctness"]["all_exact"] and mp1["correctness"]["all_exact"]
    assert mp2["engine_tokens"] == written["engine_tokens"]
    assert mp2["weight_gib_per_rank"] < mp1["weight_gib_per_rank"]
    for key in ("batch1_decode_tok_s", "streams8_total_tok_s", "ttft_128_ms", "roofline_b1_tok_s"):
        assert mp2[key] > 0, key
    assert mp2["collectives_b1_eager_ms"] > 0 and "collectives_b1_eager_ms" not in mp1


def test_a_reference_from_other_weights_is_refused_before_timing(tmp_path: Path) -> None:
    reference = tmp_path / "ref.json"
    bench(
        1, "--ckpt-dir", str(tmp_path / "seed0"), "--out", str(tmp_path), "--write-reference", str(reference)
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [*BENCH, "--dry-run", "--ckpt-dir", str(tmp_path / "seed1"), "--seed", "1", "--out", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, *argv, "--reference", str(reference)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "was written for another checkpoint" in result.stderr
    assert not (tmp_path / "multi_gpu_seed1_mp1.json").exists()
