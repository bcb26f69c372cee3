"""Two gloo ranks that could each hold a different number of KV blocks end up with the same cache:
the smallest, since rank 0 plans block ids for every rank."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from services.inference.engine.config import EngineConfig
from services.inference.engine.runner import build_runner
from services.inference.model.checkpoint import load_model
from services.inference.model.parallel import exit_after_work, init_parallel
from tests.support.inference_service import DemoModel
from tests.support.processes import free_port

pytestmark = pytest.mark.slow


def _rank(rank: int, port: int, demo: DemoModel, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    ctx = init_parallel("cpu")
    try:
        model = load_model(demo.ckpt_dir, ctx=ctx, dtype=torch.float32, max_seq_len=64)
        # As if rank 1 had less free memory than rank 0.
        config = EngineConfig(max_seq_len=64, num_kv_blocks=50 - 20 * rank)
        runner, allocator = build_runner(model, config)
        result = {"usable": allocator.usable_blocks, "storage": runner.storage.k.shape[1]}
        (out / f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()
    exit_after_work()


def test_every_rank_sizes_its_kv_cache_to_the_smallest(demo: DemoModel, tmp_path: Path) -> None:
    mp.spawn(_rank, args=(free_port(), demo, tmp_path), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert results[0] == results[1] == {"usable": 29, "storage": 30}
