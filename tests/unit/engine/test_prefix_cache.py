"""The prefix cache without a model: block hashes, reference counts, LRU eviction, and how the
scheduler takes cached blocks (which rows, positions and tables it plans)."""

from __future__ import annotations

from services.common.sampling import SamplingParams
from services.inference.engine.blocks import BlockAllocator
from services.inference.engine.config import EngineConfig
from services.inference.engine.prefix_hash import block_hash, extend_hashes
from services.inference.engine.request import GenerationRequest
from services.inference.engine.scheduler import Phase, ScheduledStep, Scheduler
from tests.unit.engine.conversations import Chat, run_chats

BLOCK = 4


def hashes(tokens: list[int]) -> list[bytes]:
    out: list[bytes] = []
    extend_hashes(out, tokens, BLOCK)
    return out


def test_a_block_hash_covers_its_tokens_and_everything_before_it() -> None:
    a = hashes([1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert len(a) == 2  # the partial last block has no hash
    assert hashes([1, 2, 3, 4, 5, 6, 7, 8]) == a
    assert hashes([1, 2, 3, 4]) == a[:1]
    # Same second block after a different first one: a different key.
    b = hashes([1, 2, 3, 0, 5, 6, 7, 8])
    assert b[0] != a[0] and b[1] != a[1]
    # A prompt that diverges mid-block shares only the blocks before it.
    c = hashes([1, 2, 3, 4, 5, 6, 0, 8])
    assert c[0] == a[0] and c[1] != a[1]
    assert block_hash(b"", [1, 2, 3, 4]) != block_hash(b"salt", [1, 2, 3, 4])
    grown = a[:1]
    extend_hashes(grown, [1, 2, 3, 4, 5, 6, 7, 8, 9], BLOCK)
    assert grown == a


def test_a_released_cached_block_stays_findable_and_counts_as_free() -> None:
    allocator = BlockAllocator(5)
    blocks = allocator.allocate(2)
    key = hashes([1, 2, 3, 4, 5, 6, 7, 8])
    allocator.register(blocks[0], key[0])
    allocator.register(blocks[1], key[1])
    assert allocator.num_cached == 2 and allocator.num_free == 2
    allocator.free(blocks[::-1])
    assert allocator.num_free == 4 and allocator.num_cached == 2
    assert allocator.lookup(key) == blocks
    allocator.acquire(blocks[:1])
    allocator.acquire(blocks[:1])  # two sequences share it
    assert allocator.referenced(blocks[0]) and not allocator.referenced(blocks[1])
    assert allocator.num_free == 3
    allocator.free(blocks[:1])
    assert allocator.num_free == 3
    allocator.free(blocks[:1])
    assert allocator.num_free == 4


def test_eviction_takes_never_cached_blocks_first_then_the_least_recently_released() -> None:
    allocator = BlockAllocator(6)  # 5 usable
    first, second = allocator.allocate(1), allocator.allocate(1)
    allocator.register(first[0], b"first")
    allocator.register(second[0], b"second")
    allocator.free(first)
    allocator.free(second)
    plain = allocator.allocate(3)
    assert set(plain).isdisjoint(first + second) and allocator.evictions == 0
    assert allocator.allocate(1) == first and allocator.evictions == 1
    assert allocator.lookup([b"first"]) == [] and allocator.lookup([b"second"]) == second
    assert allocator.num_cached == 1
    allocator.free(plain)
    assert allocator.num_free == 4


def test_the_first_block_registered_under_a_hash_stays_the_cached_one() -> None:
    allocator = BlockAllocator(4)
    a, b = allocator.allocate(2)
    allocator.register(a, b"same")
    allocator.register(b, b"same")
    assert allocator.lookup([b"same"]) == [a] and allocator.num_cached == 1
    allocator.free([a, b])
    assert allocator.num_free == 3


def scheduler(num_blocks: int = 32, prefix_caching: bool = True, prefill_chunk: int = 8) -> Scheduler:
    config = EngineConfig(
        max_seq_len=64,
        max_batch_size=4,
        kv_block_size=BLOCK,
        num_kv_blocks=num_blocks,
        prefill_chunk=prefill_chunk,
        prefix_caching=prefix_caching,
    )
    return Scheduler(config, BlockAllocator(num_blocks), eos_id=-1)


def request(prompt: list[int], max_gen_len: int = 3, echo: bool = False) -> GenerationRequest:
    return GenerationRequest(
        "r", tuple(prompt), SamplingParams(temperature=0, max_gen_len=max_gen_len), 7, echo
    )


def finish(s: Scheduler, step: ScheduledStep, token: int = 5) -> None:
    rows = len(step.plan.rows)
    s.apply(step, [token] * rows, [0.0] * rows, {})


def drain(s: Scheduler) -> None:
    """Run every step (each sampling token 5), releasing what finishes, until nothing is left."""
    while True:
        for sequence in list(s.decoding):
            if not sequence.pending and s.finish_reason(sequence):
                s.release(sequence)
        step = s.schedule()
        if step is None:
            assert not s.has_work()
            return
        finish(s, step)


PROMPT = list(range(10, 21))  # 11 tokens: blocks [10..13] [14..17] and a partial [18..20]


def test_a_request_with_a_cached_prefix_prefills_only_the_rest() -> None:
    s = scheduler()
    first = s.add(request(PROMPT))
    drain(s)
    assert first.phase is Phase.FINISHED and first.cached_prompt_tokens == 0
    # Diverges in the third block: the first two come from the cache.
    second = s.add(request([*PROMPT[:9], 99, 98, 97]))
    step = s.schedule()
    assert step is not None and not step.plan.fresh
    (row,) = step.plan.rows
    assert row.positions == list(range(8, 12)) and row.tokens == [PROMPT[8], 99, 98, 97]
    assert row.block_table[:2] == first_blocks(s, PROMPT)
    assert row.step == 0  # the sampler's counter does not see the cache
    assert second.cached_prompt_tokens == 8
    assert s.stats().prompt_tokens_looked_up == 11 + 12 and s.stats().prompt_tokens_cached == 8


def first_blocks(s: Scheduler, tokens: list[int]) -> list[int]:
    return s.allocator.lookup(hashes(tokens))


def test_a_fully_cached_prompt_still_computes_its_last_token_in_a_block_of_its_own() -> None:
    s = scheduler()
    prompt = list(range(10, 22))  # exactly 3 blocks
    s.add(request(prompt))
    drain(s)
    cached = first_blocks(s, prompt)
    assert len(cached) == 3
    again = s.add(request(prompt))
    step = s.schedule()
    assert step is not None
    (row,) = step.plan.rows
    assert row.positions == [8, 9, 10, 11] and row.samples
    assert row.block_table[:2] == cached[:2] and row.block_table[2] != cached[2]
    assert again.cached_prompt_tokens == 8


def test_generated_tokens_fill_cached_blocks_for_the_next_turn() -> None:
    s = scheduler()
    chat = Chat(messages=[list(range(10, 17)), [40, 41, 42]], max_gen_len=6)
    run_chats(s, None, [chat])
    first, second = chat.turns
    # Turn 1: 7 prompt + 6 generated = 13 tokens; 12 of them fill 3 blocks, turn 2 reuses them all.
    assert len(first.tokens) == 13 and second.cached_prompt_tokens == 12
    assert s.allocator.num_free == s.allocator.usable_blocks


def test_no_reuse_with_caching_off_or_for_a_request_that_scores_its_prompt() -> None:
    for s, echo in ((scheduler(prefix_caching=False), False), (scheduler(), True)):
        s.add(request(PROMPT))
        drain(s)
        seq = s.add(request(PROMPT, echo=echo))
        step = s.schedule()
        assert step is not None and step.plan.fresh and seq.cached_prompt_tokens == 0
        finish(s, step)
        drain(s)
        assert s.allocator.num_free == s.allocator.usable_blocks
    assert scheduler(prefix_caching=False).stats().cached_blocks == 0


def test_shared_blocks_are_referenced_once_per_sequence_and_all_return() -> None:
    s = scheduler(num_blocks=12)
    s.add(request(PROMPT))
    drain(s)
    shared = first_blocks(s, PROMPT)
    sequences = [s.add(request([*PROMPT[:8], i, i + 1])) for i in range(3)]
    step = s.schedule()
    assert step is not None and step.sequences == sequences
    assert all(seq.blocks[:2] == shared for seq in sequences)
    # 11 usable: 2 shared + 3 private (the first prompt's third block is cached and free).
    assert s.allocator.num_free == 11 - 5
    finish(s, step)
    drain(s)
    assert s.allocator.num_free == s.allocator.usable_blocks
    assert s.stats().cached_blocks == s.allocator.num_cached


def test_admission_counts_unreferenced_cached_blocks_it_takes() -> None:
    s = scheduler(num_blocks=4)  # 3 usable
    s.add(request(list(range(10, 19)), max_gen_len=1))  # 9 tokens + 1: 3 blocks, 2 cached after
    drain(s)
    assert s.allocator.num_cached == 2 and s.allocator.num_free == 3
    seq = s.add(request(list(range(10, 19)), max_gen_len=1))
    step = s.schedule()
    assert step is not None
    # The two cached blocks and one new: the whole pool, with nothing evicted.
    assert seq.blocks[:2] == first_blocks(s, list(range(10, 18))) and s.allocator.num_free == 0
    assert s.allocator.evictions == 0
    finish(s, step)
    drain(s)
    assert s.allocator.num_free == 3


def test_a_preempted_sequence_resumes_from_its_own_cached_blocks() -> None:
    s = scheduler(num_blocks=5, prefill_chunk=16)  # 4 usable blocks
    old = s.add(request(list(range(10, 14)), max_gen_len=8))
    finish(s, s.schedule())  # type: ignore[arg-type]
    new = s.add(request(list(range(30, 33)), max_gen_len=8))
    while s.preemptions == 0:
        step = s.schedule()
        assert step is not None
        finish(s, step)
    assert new.phase is Phase.WAITING and new.num_computed == 0
    done = len(new.tokens) // BLOCK * BLOCK
    s.release(old)
    step = s.schedule()
    assert step is not None and step.sequences == [new]
    assert step.plan.rows[0].positions[0] == done and done > 0
    assert new.cached_prompt_tokens == 0  # usage counts the first admission
