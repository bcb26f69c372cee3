"""The micro-batcher: order, batching while a batch runs, limits, failures, cancellation, stop."""

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from services.common.errors import Overloaded, Unavailable
from services.safety.batcher import BatcherConfig, MicroBatcher


class Judge:
    """Doubles every item and records each batch; `hold()` blocks the next batch until `release()`."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.started = threading.Event()
        self._gate = threading.Event()
        self._gate.set()

    def hold(self) -> None:
        self._gate.clear()
        self.started.clear()

    def release(self) -> None:
        self._gate.set()

    def __call__(self, items: list[int]) -> list[int]:
        self.threads.add(threading.current_thread().name)
        self.batches.append(list(items))
        self.started.set()
        assert self._gate.wait(10), "the test never released the batch"
        return [2 * item for item in items]


async def started(judge: Judge) -> None:
    assert await asyncio.to_thread(judge.started.wait, 10), "no batch started"


async def running(judge: Judge, config: BatcherConfig | None = None) -> MicroBatcher[int, int]:
    batcher = MicroBatcher[int, int](judge, config or BatcherConfig())
    batcher.start()
    return batcher


async def test_results_come_back_in_order_from_a_thread_off_the_event_loop():
    judge = Judge()
    batcher = await running(judge)
    assert await batcher.submit([1, 2, 3]) == [2, 4, 6]
    assert await batcher.submit([7]) == [14]
    assert judge.batches == [[1, 2, 3], [7]]
    [thread] = judge.threads  # one worker, and not the event loop's thread
    assert thread != threading.current_thread().name
    await batcher.stop()


async def test_items_that_queue_while_a_batch_runs_are_judged_together():
    judge = Judge()
    batcher = await running(judge)
    judge.hold()
    first = asyncio.ensure_future(batcher.submit([0]))
    await started(judge)
    rest = [asyncio.ensure_future(batcher.submit([k])) for k in range(1, 6)]
    await asyncio.sleep(0.05)
    judge.release()
    assert await first == [0]
    assert [await r for r in rest] == [[2 * k] for k in range(1, 6)]
    assert judge.batches == [[0], [1, 2, 3, 4, 5]]
    assert batcher.batch_sizes == [1, 5]
    await batcher.stop()


async def test_the_batch_sizes_kept_are_the_last_thousand():
    judge = Judge()
    batcher = await running(judge)
    for k in range(1002):
        await batcher.submit([k])
    await batcher.submit([1, 2, 3])
    assert batcher.batch_sizes == [1] * 999 + [3]
    await batcher.stop()


async def test_batches_never_exceed_max_batch():
    judge = Judge()
    batcher = await running(judge, BatcherConfig(max_batch=4))
    judge.hold()
    first = asyncio.ensure_future(batcher.submit([0]))
    await started(judge)
    rest = asyncio.ensure_future(batcher.submit(list(range(1, 11))))
    await asyncio.sleep(0.05)
    judge.release()
    await first
    assert await rest == [2 * k for k in range(1, 11)]
    assert [len(b) for b in judge.batches] == [1, 4, 4, 2]
    await batcher.stop()


async def test_max_wait_gathers_company_and_ends_early_when_the_batch_is_full():
    judge = Judge()
    batcher = await running(judge, BatcherConfig(max_batch=2, max_wait_s=5.0))
    began = time.monotonic()
    a = asyncio.ensure_future(batcher.submit([1]))
    await asyncio.sleep(0.05)
    assert not a.done()  # waiting for company
    assert await batcher.submit([2]) == [4]
    assert await a == [2]
    assert judge.batches == [[1, 2]]
    assert time.monotonic() - began < 2.0  # a full batch does not wait out max_wait
    await batcher.stop()


async def test_max_wait_runs_a_lone_item_once_it_has_passed():
    judge = Judge()
    batcher = await running(judge, BatcherConfig(max_batch=8, max_wait_s=0.05))
    began = time.monotonic()
    assert await batcher.submit([3]) == [6]
    assert 0.04 <= time.monotonic() - began < 2.0
    await batcher.stop()


def failing_once() -> Callable[[list[int]], list[int]]:
    """A classifier whose first call raises and whose later calls return their items."""
    calls = 0

    def judge(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("model exploded")
        return items

    return judge


async def test_a_failing_classifier_fails_its_batch_and_the_next_batch_runs():
    batcher = MicroBatcher[int, int](failing_once(), BatcherConfig())
    batcher.start()
    with pytest.raises(ValueError, match="model exploded"):
        await batcher.submit([1, 2])
    assert await batcher.submit([3]) == [3]
    await batcher.stop()


async def test_a_classifier_that_returns_the_wrong_number_of_results_fails_the_batch():
    batcher = MicroBatcher[int, int](lambda items: items[:-1], BatcherConfig())
    batcher.start()
    with pytest.raises(RuntimeError, match="1 results for 2 items"):
        await batcher.submit([1, 2])
    await batcher.stop()


async def test_a_full_queue_is_overloaded_with_a_retry_hint():
    judge = Judge()
    batcher = await running(judge, BatcherConfig(max_batch=2, max_queue=3))
    judge.hold()
    first = asyncio.ensure_future(batcher.submit([0]))
    await started(judge)
    queued = asyncio.ensure_future(batcher.submit([1, 2]))
    await asyncio.sleep(0)
    with pytest.raises(Overloaded) as info:
        await batcher.submit([3, 4])
    assert info.value.retry_after_s > 0
    judge.release()
    assert await first == [0] and await queued == [2, 4]
    await batcher.stop()


async def test_a_cancelled_caller_is_not_judged():
    judge = Judge()
    batcher = await running(judge)
    judge.hold()
    first = asyncio.ensure_future(batcher.submit([0]))
    await started(judge)
    gone = asyncio.ensure_future(batcher.submit([1]))
    kept = asyncio.ensure_future(batcher.submit([2]))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    judge.release()
    assert await first == [0] and await kept == [4]
    assert judge.batches == [[0], [2]]
    await batcher.stop()


async def test_stop_fails_waiting_items_finishes_the_running_batch_and_refuses_new_ones():
    judge = Judge()
    batcher = await running(judge)
    judge.hold()
    running_item = asyncio.ensure_future(batcher.submit([0]))
    await started(judge)
    waiting = asyncio.ensure_future(batcher.submit([1]))
    await asyncio.sleep(0)
    stopping = asyncio.ensure_future(batcher.stop())
    with pytest.raises(Unavailable, match="shutting down"):
        await waiting
    judge.release()
    await stopping
    assert await running_item == [0]
    with pytest.raises(Unavailable, match="not running"):
        await batcher.submit([2])


async def test_submit_before_start_is_unavailable():
    with pytest.raises(Unavailable, match="not running"):
        await MicroBatcher[int, int](Judge(), BatcherConfig()).submit([1])


async def test_a_check_that_finds_the_batcher_idle_long_enough_is_judged_on_the_event_loop():
    judge = Judge()
    batcher = await running(judge, BatcherConfig(inline_after_idle_s=3600.0))
    assert await batcher.submit([1]) == [2]  # idle since it started
    assert judge.threads == {threading.current_thread().name}
    assert await batcher.submit([2, 3]) == [4, 6]  # idle for less than an hour: to the worker
    assert len(judge.threads) == 2 and batcher.inline_checks == 1
    await batcher.stop()


async def test_checks_that_arrive_while_a_batch_is_judged_queue_for_the_worker():
    judge = Judge()
    # More items than a batch holds always go to the worker: here, one that keeps it busy.
    batcher = await running(judge, BatcherConfig(max_batch=1, inline_after_idle_s=0.0))
    judge.hold()
    first = asyncio.ensure_future(batcher.submit([1, 2]))
    await started(judge)
    second = asyncio.ensure_future(batcher.submit([3]))  # the worker is judging: it queues
    await asyncio.sleep(0.01)
    assert not second.done()
    judge.release()
    assert await first == [2, 4] and await second == [6]
    assert judge.batches == [[1], [2], [3]] and batcher.inline_checks == 0
    assert threading.current_thread().name not in judge.threads
    # Idle again (the threshold is 0): the next check is judged on the loop.
    assert await batcher.submit([4]) == [8] and batcher.inline_checks == 1
    await batcher.stop()


async def test_an_inline_check_that_fails_fails_its_caller_only():
    batcher = MicroBatcher[int, int](failing_once(), BatcherConfig(inline_after_idle_s=0.0))
    batcher.start()
    with pytest.raises(ValueError, match="model exploded"):
        await batcher.submit([1])
    assert await batcher.submit([3]) == [3] and batcher.inline_checks == 2
    await batcher.stop()
