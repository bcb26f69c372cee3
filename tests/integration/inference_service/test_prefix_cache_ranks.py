"""Prefix caching over two gloo ranks: rank 0 schedules (its plans carry the block tables, cached
blocks included) and every rank runs them; greedy tokens with the cache equal those without it and
those of the whole model on one process, and every block is free again at the end. The same over
an fp8 KV cache (each rank stores its own heads' keys and values in e4m3): tokens with prefix
caching equal those without, and every rank's cache is e4m3."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from services.inference.engine.config import EngineConfig
from services.inference.engine.engine import run_follower
from services.inference.engine.ranks import StepBroadcaster
from services.inference.engine.runner import ModelRunner, PendingStep, build_runner
from services.inference.engine.scheduler import Scheduler
from services.inference.engine.step_plan import StepPlan
from services.inference.model.checkpoint import load_model
from services.inference.model.parallel import exit_after_work, init_parallel
from tests.support.inference_service import DemoModel
from tests.support.models import CPU_MP1
from tests.support.processes import free_port
from tests.unit.engine.conversations import Chat, greedy_reference, run_chats

pytestmark = pytest.mark.slow

SYSTEM = [1, *range(300, 330)]  # a 31-token shared start: one block of 16 and a partial one
MAX_SEQ_LEN = 160


def conversations() -> list[Chat]:
    """Two chats over the shared start, three turns each, the second arriving mid-way; then more
    than a small cache holds, so blocks are evicted while streams still run."""
    return [
        Chat([[*SYSTEM, 40, 41, 42], [50, 51, 52, 53], [60, 61]], max_gen_len=10),
        Chat([[*SYSTEM, 70, 71], [80, 81, 82], [90]], max_gen_len=8, start_step=6),
        Chat([[1, *range(400, 440)], [100, 101]], max_gen_len=6, start_step=3),
    ]


def broadcasting(runner: ModelRunner, broadcaster: StepBroadcaster) -> Callable[[StepPlan], PendingStep]:
    """Rank 0's launch, as the engine does it: the plan goes to every rank, then runs here."""

    def launch(plan: StepPlan) -> PendingStep:
        broadcaster.send(plan)
        return runner.launch(plan)

    return launch


def _rank(rank: int, port: int, demo: DemoModel, out: Path, kv_cache_dtype: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    ctx = init_parallel("cpu")
    try:
        model = load_model(demo.ckpt_dir, ctx=ctx, dtype=torch.float32, max_seq_len=MAX_SEQ_LEN)
        results: dict[str, object] = {}
        for caching in (True, False):
            # 7 usable blocks of 16: less than the three chats' histories, so the cache evicts.
            config = EngineConfig(
                max_seq_len=MAX_SEQ_LEN,
                max_batch_size=4,
                num_kv_blocks=8,
                prefill_chunk=32,
                prefix_caching=caching,
                kv_cache_dtype=kv_cache_dtype,
            )
            runner, allocator = build_runner(model, config)
            (out / f"rank{rank}.cache_dtype").write_text(str(runner.storage.k.dtype))
            broadcaster = StepBroadcaster(rank)
            if rank > 0:
                run_follower(runner, broadcaster)
                continue
            scheduler = Scheduler(config, allocator, eos_id=-1)
            chats = conversations()
            run_chats(scheduler, broadcasting(runner, broadcaster), chats)
            broadcaster.send(None)
            stats = scheduler.stats()
            results[str(caching)] = {
                "turns": [[list(t.tokens) for t in chat.turns] for chat in chats],
                "cached": [[t.cached_prompt_tokens for t in chat.turns] for chat in chats],
                "free": stats.free_blocks == stats.total_blocks,
                "evictions": stats.evictions,
            }
        if rank == 0:
            (out / "rank0.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()
    exit_after_work()


def run_two_ranks(demo: DemoModel, out: Path, kv_cache_dtype: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both ranks' runs with prefix caching on and off: rank 0's results for each."""
    mp.spawn(_rank, args=(free_port(), demo, out, kv_cache_dtype), nprocs=2, join=True)
    results = json.loads((out / "rank0.json").read_text())
    on, off = results["True"], results["False"]
    assert on["turns"] == off["turns"]
    assert on["free"] and off["free"]
    assert on["evictions"] > 0
    # Later turns find their history; the second chat finds the shared start's full block.
    assert all(turn > 0 for chat in on["cached"] for turn in chat[1:])
    assert on["cached"][1][0] == 16
    assert all(turn == 0 for chat in off["cached"] for turn in chat)
    return on, off


def test_two_ranks_over_an_fp8_cache_reuse_the_same_blocks(demo: DemoModel, tmp_path: Path) -> None:
    run_two_ranks(demo, tmp_path, "fp8")
    assert [(tmp_path / f"rank{r}.cache_dtype").read_text() for r in (0, 1)] == ["torch.float8_e4m3fn"] * 2


def test_two_ranks_reuse_the_same_blocks_and_match_one_process(demo: DemoModel, tmp_path: Path) -> None:
    on, _ = run_two_ranks(demo, tmp_path, "auto")
    assert (tmp_path / "rank1.cache_dtype").read_text() == "torch.float32"
    model = load_model(demo.ckpt_dir, ctx=CPU_MP1, dtype=torch.float32, max_seq_len=MAX_SEQ_LEN)
    for chat, turns in zip(conversations(), on["turns"], strict=True):
        for turn in turns:
            prompt_len = len(turn) - chat.max_gen_len
            assert turn == greedy_reference(model, turn[:prompt_len], chat.max_gen_len)
