"""More conversations than the KV cache holds, with the prefix cache on: every turn's greedy tokens
equal those with the cache off and recomputing from scratch, blocks are evicted along the way, and
every block is back in the pool at the end. (Preemption with the cache on is covered by
tests/unit/engine/test_scheduler_runner.py and test_overlapped_steps.py, which run with it on.)"""

from __future__ import annotations

import random

import pytest
import torch

from services.inference.engine.scheduler import Scheduler
from services.inference.model.transformer import Transformer, init_random_weights
from tests.unit.engine.conversations import Chat, greedy_reference, run_chats
from tests.unit.engine.stepping import ARGS, tiny_runner

pytestmark = pytest.mark.slow

SYSTEM = [1, 11, 12, 13, 14, 15]  # a shared start: one block of 4 and a partial one


def conversations(seed: int) -> list[Chat]:
    rng = random.Random(seed)
    return [
        Chat(
            [[*SYSTEM, *rng.choices(range(3, 90), k=rng.randint(1, 6))]]
            + [rng.choices(range(3, 90), k=rng.randint(1, 5)) for _ in range(rng.randint(1, 4))],
            max_gen_len=rng.randint(2, 6),
            start_step=rng.randint(0, 30),
        )
        for _ in range(10)
    ]


def run(model: Transformer, seed: int, caching: bool) -> tuple[list[Chat], Scheduler]:
    # 15 usable blocks of 4 tokens for ten chats whose histories grow to ~50 tokens each.
    config, allocator, runner = tiny_runner(model, 16, prefix_caching=caching)
    scheduler = Scheduler(config, allocator, eos_id=-1)
    chats = conversations(seed)
    run_chats(scheduler, runner.launch, chats)
    assert allocator.num_free == allocator.usable_blocks
    return chats, scheduler


@pytest.mark.parametrize("seed", [3, 4])
def test_more_conversations_than_cache_space_lose_nothing(seed: int) -> None:
    torch.manual_seed(0)
    model = Transformer(ARGS)
    init_random_weights(model, 1)
    model.eval()
    on, scheduler = run(model, seed, caching=True)
    off, _ = run(model, seed, caching=False)
    stats = scheduler.stats()
    assert stats.evictions > 0 and stats.prompt_tokens_cached > 0
    for chat_on, chat_off in zip(on, off, strict=True):
        assert len(chat_on.turns) == len(chat_on.messages)
        assert [t.tokens for t in chat_on.turns] == [t.tokens for t in chat_off.turns]
        for turn in chat_on.turns:
            prompt = list(turn.request.prompt_ids)
            assert turn.tokens == greedy_reference(model, prompt, chat_on.max_gen_len)
