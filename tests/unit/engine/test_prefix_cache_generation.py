"""With the prefix cache, greedy tokens equal recomputing from scratch: over multi-turn chats, a
shared system prompt arriving while it is in use, prompts diverging mid-block, and a history
evicted between turns; every block comes back (the many-conversation stress run is in
tests/integration/inference_service/test_prefix_cache_stress.py)."""

from __future__ import annotations

from itertools import pairwise

import pytest

from services.inference.engine.scheduler import Scheduler
from services.inference.model.transformer import Transformer, init_random_weights
from tests.unit.engine.conversations import Chat, greedy_reference, run_chats
from tests.unit.engine.stepping import ARGS, tiny_runner

SYSTEM = [1, 11, 12, 13, 14, 15, 16, 17, 18, 19]  # 2.5 blocks of 4


@pytest.fixture(scope="module")
def model() -> Transformer:
    model = Transformer(ARGS)
    init_random_weights(model, 1)
    return model.eval()


def chats_of(spec: list[tuple[list[list[int]], int, int]]) -> list[Chat]:
    return [Chat(messages, max_gen, start) for messages, max_gen, start in spec]


def run(
    model: Transformer, spec: list[tuple[list[list[int]], int, int]], num_blocks: int, caching: bool
) -> tuple[list[Chat], Scheduler]:
    config, allocator, runner = tiny_runner(model, num_blocks, prefix_caching=caching)
    scheduler = Scheduler(config, allocator, eos_id=-1)
    chats = chats_of(spec)
    run_chats(scheduler, runner.launch, chats)
    assert allocator.num_free == allocator.usable_blocks
    return chats, scheduler


def check_against_reference(model: Transformer, chats: list[Chat]) -> None:
    for chat in chats:
        for turn in chat.turns:
            prompt = list(turn.request.prompt_ids)
            assert turn.tokens == greedy_reference(model, prompt, chat.max_gen_len)


def test_multi_turn_chats_reuse_their_history_and_match_recompute(model: Transformer) -> None:
    spec = [
        ([[1, 5, 9, 13, 2, 7], [30, 31, 32], [40, 41]], 6, 0),
        ([[1, 3], [50, 51, 52, 53, 54], [60]], 5, 2),
    ]
    chats, scheduler = run(model, spec, 40, caching=True)
    check_against_reference(model, chats)
    for chat in chats:
        assert chat.turns[0].cached_prompt_tokens == 0
        # Every later turn finds the earlier turn's full blocks (its last token was never fed back).
        for earlier, later in pairwise(chat.turns):
            assert later.cached_prompt_tokens == (len(earlier.tokens) - 1) // 4 * 4
    stats = scheduler.stats()
    assert 0 < stats.prompt_tokens_cached < stats.prompt_tokens_looked_up


def test_a_shared_system_prompt_is_reused_while_in_use_and_diverging_mid_block(model: Transformer) -> None:
    # The first stream decodes for a while; the others arrive during its decode, share its first
    # two blocks and diverge inside the third (SYSTEM ends mid-block).
    spec = [([[*SYSTEM, 20, 21]], 12, 0)] + [([[*SYSTEM, 30 + i, 31]], 6, 4 + i) for i in range(3)]
    chats, _ = run(model, spec, 40, caching=True)
    check_against_reference(model, chats)
    assert [c.turns[0].cached_prompt_tokens for c in chats] == [0, 8, 8, 8]


def test_a_chat_whose_history_was_evicted_recomputes_it_exactly(model: Transformer) -> None:
    # 9 usable blocks of 4: the second chat's long prompt evicts most of the first chat's history
    # between its turns (the first turn's shared start may survive).
    spec = [
        ([[1, 5, 9, 13, 2, 7, 8], [30, 31]], 5, 0),
        ([[1, *range(40, 66)]], 3, 14),
    ]
    chats, scheduler = run(model, spec, 10, caching=True)
    assert scheduler.stats().evictions > 0
    check_against_reference(model, chats)
