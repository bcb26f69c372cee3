"""Tensor parallel on torchrun ranks (gloo, CPU): MP 2 and 4 give MP 1's logits and tokens, from
checkpoints saved with 1 and 2 shards (resharded both ways) and from a Hugging Face checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from services.inference.demo import DemoPaths
from services.inference.model.checkpoint import meta_params, save_meta_checkpoint
from services.inference.model.hf_format import save_hf_checkpoint
from tests.integration.model_core import mp_worker
from tests.support.models import full_state, random_model, tiny_args
from tests.support.processes import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoints(demo: DemoPaths, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    # 8 query heads and 4 kv heads (GQA) so MP 4 still has one kv head per rank; the demo vocabulary.
    args = tiny_args(vocab_size=1000)
    state = full_state(random_model(args, seed=5))
    root = tmp_path_factory.mktemp("tp")
    save_meta_checkpoint(state, meta_params(args), root / "meta-1", num_shards=1)
    save_meta_checkpoint(state, meta_params(args), root / "meta-2", num_shards=2)
    save_hf_checkpoint(state, args, root / "hf")
    return [root / "meta-1", root / "meta-2", root / "hf"]


def torchrun(
    nproc: int, module: str, *args: str, timeout: float = 240, expect_ok: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    result = subprocess.run(
        [*command, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if expect_ok:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


@pytest.mark.parametrize("world_size", [2, 4])
def test_model_parallel_matches_a_single_rank(
    world_size: int, checkpoints: list[Path], demo: DemoPaths, tmp_path: Path
) -> None:
    reference = mp_worker.run(checkpoints[0], demo.tokenizer)
    assert reference["world_size"] == 1
    assert all(reference["greedy"]) and all(reference["sampled"])  # type: ignore[arg-type]  # something was generated to compare
    torchrun(
        world_size,
        "tests.integration.model_core.mp_worker",
        "--tokenizer",
        str(demo.tokenizer),
        "--out",
        str(tmp_path),
        *map(str, checkpoints),
    )
    for index, ckpt in enumerate(checkpoints):
        for rank in range(world_size):
            result = torch.load(tmp_path / f"{index}.rank{rank}.pt")
            where = f"{ckpt.name} rank {rank}/{world_size}"
            assert result["world_size"] == world_size
            torch.testing.assert_close(result["logits"], reference["logits"], atol=2e-5, rtol=1e-5, msg=where)
            assert result["greedy"] == reference["greedy"], where
            assert result["sampled"] == reference["sampled"], where
