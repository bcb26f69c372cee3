"""The scheduling rules, stated on the scheduler alone: plain Python, no model, no tensors.

A step's sampled tokens are made up here (`finish`); what is checked is which rows each step
plans, with which positions, cache slots and blocks, and how the bookkeeping follows.
"""

from __future__ import annotations

import pytest

from services.common.errors import Overloaded
from services.common.sampling import SamplingParams
from services.inference.engine.blocks import BlockAllocator
from services.inference.engine.config import EngineConfig
from services.inference.engine.request import FinishReason, GenerationRequest
from services.inference.engine.scheduler import Phase, ScheduledStep, Scheduler, Sequence

EOS = 2
BLOCK = 4


def scheduler(
    num_blocks: int = 32,
    max_batch_size: int = 4,
    prefill_chunk: int = 8,
    max_queue: int = 8,
    prefix_caching: bool = True,
) -> Scheduler:
    config = EngineConfig(
        max_seq_len=64,
        max_batch_size=max_batch_size,
        kv_block_size=BLOCK,
        num_kv_blocks=num_blocks,
        prefill_chunk=prefill_chunk,
        max_queue=max_queue,
        prefix_caching=prefix_caching,
    )
    return Scheduler(config, BlockAllocator(num_blocks), eos_id=EOS)


def request(prompt_len: int, max_gen_len: int = 8, name: str = "r", **params: object) -> GenerationRequest:
    sampling = SamplingParams(temperature=0, max_gen_len=max_gen_len, **params)  # type: ignore[arg-type]
    return GenerationRequest(name, tuple(range(10, 10 + prompt_len)), sampling, seed=7)


def finish(s: Scheduler, step: ScheduledStep, token: int = 5) -> None:
    """The step ran and every row sampled `token`."""
    rows = len(step.plan.rows)
    s.apply(step, [token] * rows, [0.0] * rows, {})


def planned(s: Scheduler) -> ScheduledStep:
    step = s.schedule()
    assert step is not None
    assert len(step.plan.rows) == len(step.sequences)
    return step


def test_a_prompt_prefills_in_chunks_then_decodes_one_token_per_step() -> None:
    s = scheduler(prefill_chunk=8)
    seq = s.add(request(prompt_len=11))
    first = planned(s)
    assert not first.plan.decode and first.plan.fresh
    (row,) = first.plan.rows
    assert row.tokens == list(range(10, 18)) and row.positions == list(range(8))
    assert not row.samples  # mid-prompt: the token drawn is not a next token
    assert seq.phase is Phase.PREFILL
    finish(s, first)
    second = planned(s)
    (row,) = second.plan.rows
    assert not second.plan.fresh  # continues a cached prefix
    assert row.positions == [8, 9, 10] and row.context_len == 11 and row.sample_index == 2
    assert row.samples and row.step == 0
    assert seq.phase is Phase.DECODE and seq.pending == 1
    finish(s, second, token=42)
    assert seq.tokens[-1] == 42 and seq.pending == 0
    third = planned(s)
    assert third.plan.decode
    (row,) = third.plan.rows
    assert row.tokens == [42] and row.positions == [11] and row.step == 1


def test_slots_follow_the_block_table() -> None:
    s = scheduler()
    s.add(request(prompt_len=6))
    (row,) = planned(s).plan.rows
    blocks = row.block_table
    assert len(blocks) == 2  # 6 tokens in blocks of 4
    assert row.slots == [blocks[p // BLOCK] * BLOCK + p % BLOCK for p in range(6)]
    assert 0 not in blocks  # block 0 is reserved for padding


def test_the_next_decode_is_planned_before_the_last_token_is_back() -> None:
    s = scheduler()
    seq = s.add(request(prompt_len=3))
    prefill = planned(s)
    decode = planned(s)  # the prefill's token is still in flight
    (row,) = decode.plan.rows
    assert row.tokens == [-1] and row.batch_slot == seq.batch_slot and row.positions == [3]
    assert seq.pending == 2
    finish(s, prefill, token=40)
    finish(s, decode, token=41)
    assert seq.tokens[-2:] == [40, 41] and seq.pending == 0


def test_prefill_and_decode_take_turns() -> None:
    s = scheduler(prefill_chunk=4)
    s.add(request(prompt_len=2, name="short"))
    finish(s, planned(s))  # "short" now decodes
    s.add(request(prompt_len=12, name="long"))
    kinds = []
    for _ in range(6):
        step = planned(s)
        kinds.append("decode" if step.plan.decode else "prefill")
        finish(s, step)
    assert kinds == ["decode", "prefill", "decode", "prefill", "decode", "prefill"]


def test_chunks_of_several_prompts_share_the_budget_padded_to_the_widest() -> None:
    s = scheduler(prefill_chunk=8)
    s.add(request(prompt_len=3, name="a"))
    s.add(request(prompt_len=4, name="b"))
    s.add(request(prompt_len=2, name="c"))
    step = planned(s)
    # a and b: 2 rows x 4 wide = 8 fits; adding c would still be 3 x 4 = 12 > 8.
    assert [seq.request.request_id for seq in step.sequences] == ["a", "b"]
    assert [len(row.tokens) for row in step.plan.rows] == [3, 4]


def test_admission_stops_at_the_batch_size() -> None:
    s = scheduler(max_batch_size=2)
    sequences = [s.add(request(prompt_len=2, name=str(i))) for i in range(3)]
    step = planned(s)
    assert step.sequences == sequences[:2]
    assert sequences[2].phase is Phase.WAITING


def test_a_full_queue_and_a_request_larger_than_the_cache_are_refused() -> None:
    s = scheduler(max_batch_size=1, max_queue=2)
    s.add(request(prompt_len=2))
    s.add(request(prompt_len=2))
    with pytest.raises(Overloaded, match="queue is full"):
        s.add(request(prompt_len=2))
    small = scheduler(num_blocks=3)  # 2 usable blocks = 8 tokens
    with pytest.raises(Overloaded, match="KV blocks"):
        small.add(request(prompt_len=6, max_gen_len=8))


def test_the_newest_sequence_is_preempted_when_blocks_run_out_and_resumes_from_its_tokens() -> None:
    # Without the prefix cache, which would give the preempted sequence its own blocks back.
    s = scheduler(num_blocks=5, prefill_chunk=16, prefix_caching=False)  # 4 usable blocks
    old = s.add(request(prompt_len=4, max_gen_len=8, name="old"))
    finish(s, planned(s))
    new = s.add(request(prompt_len=3, max_gen_len=8, name="new"))
    for _ in range(3):
        finish(s, planned(s))
    assert s.preemptions == 0
    while s.preemptions == 0:
        finish(s, planned(s))
    assert new.phase is Phase.WAITING and new.blocks == [] and new.num_computed == 0
    assert old.phase is Phase.DECODE
    assert s.waiting[0] is new
    generated = list(new.tokens)
    s.release(old)
    step = planned(s)
    assert step.sequences == [new] and not step.plan.decode
    assert step.plan.rows[0].tokens == generated  # recomputed from prompt and generated tokens


def test_release_returns_blocks_and_drops_the_rows_still_in_flight() -> None:
    s = scheduler(num_blocks=8)
    seq = s.add(request(prompt_len=5))
    step = planned(s)
    s.release(seq)
    assert s.allocator.num_free == 7 and seq.phase is Phase.FINISHED
    assert s.apply(step, [5], [0.0], {}) == []
    assert not s.has_work() and s.schedule() is None


def test_finish_reasons() -> None:
    s = scheduler()
    stops = s.add(request(prompt_len=2, name="eos"))
    ignores = s.add(request(prompt_len=2, name="ignore", ignore_eos=True))
    limited = s.add(request(prompt_len=2, max_gen_len=1, name="length"))
    step = planned(s)
    assert step.sequences == [stops, ignores, limited]
    s.apply(step, [EOS, EOS, 5], [0.0] * 3, {})
    assert s.finish_reason(stops) is FinishReason.STOP
    assert s.finish_reason(ignores) is None
    assert s.finish_reason(limited) is FinishReason.LENGTH


def test_a_sequence_at_its_limit_is_not_planned_again() -> None:
    s = scheduler()
    seq: Sequence = s.add(request(prompt_len=2, max_gen_len=1))
    planned(s)  # samples the one allowed token
    assert s.schedule() is None  # only waits for that token to come back
    assert seq.pending == 1
