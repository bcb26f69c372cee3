"""Micro-batching: concurrent checks are judged together as one batch.

The classifier is a blocking CPU/GPU call, so it runs in one worker thread of its own; the event
loop only appends items to a deque and resolves futures. One worker on purpose: the model uses all
cores per batch, and two batches at once would just contend. Batches form while the previous one
runs: whatever queued meanwhile is the next batch.

The worker takes items straight from the deque and hands results back with one
`call_soon_threadsafe` per batch, so a check that finds the worker idle costs one thread wake-up
each way and two turns of the event loop, not a batching task, an executor and chained futures.

`inline_after_idle_s` spares even those two hand-offs where a check costs little host time (a
classifier on a GPU, as CUDA graphs: ~1 ms of Python): a check that arrives when nothing is queued,
no batch is being judged and none has been for that long is judged on the event loop itself. A
turn's input check is such a check, and after idle each hand-off is a wake-up of a sleeping thread
on a cold core. Under load checks keep coming, the idle condition never holds and batches form as
before; the loop is held for at most one check.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from services.common.errors import Overloaded, Unavailable

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatcherConfig:
    max_batch: int = 32
    # How long the first item of a batch waits for company (less when the batch fills sooner).
    # 0 by default: it is pure latency at low load, and under load batches fill anyway with what
    # queues while the previous one runs.
    max_wait_s: float = 0.0
    # Items waiting beyond this are refused with RESOURCE_EXHAUSTED rather than queued forever.
    max_queue: int = 4096
    # None: every check goes to the worker thread. Else a check that finds the batcher idle for at
    # least this long is judged on the calling event loop (see the module docstring). Only for
    # classifiers whose judge is short on the host and thread-agnostic; never for a CPU forward,
    # whose intra-op thread pool belongs to the worker thread.
    inline_after_idle_s: float | None = None


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future[R]


class MicroBatcher(Generic[T, R]):
    def __init__(self, judge: Callable[[list[T]], list[R]], config: BatcherConfig) -> None:
        self._judge = judge
        self.config = config
        self._waiting: deque[_Pending[T, R]] = deque()
        self._changed = threading.Condition()  # guards _waiting, _stopping and _wake_at
        self._stopping = False
        # How many waiting items wake the worker: 1 while it is idle, enough to fill its batch while
        # it gathers company (max_wait_s), none while it judges; spares a wake-up per item.
        self._wake_at = 1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: threading.Thread | None = None
        # The worker is judging a batch (set and cleared under _changed).
        self._judging = False
        # time.monotonic() when the last batch or inline check ended (never: idle all along).
        self._idle_since = float("-inf")
        # The sizes of the last 1,000 batches (a list copied to stay bounded cost the worker ~5 us
        # before every batch).
        self._batch_sizes: deque[int] = deque(maxlen=1000)
        self.inline_checks = 0  # checks judged on the event loop (the tests read it)

    @property
    def batch_sizes(self) -> list[int]:
        """The sizes of the last 1,000 batches, oldest first, for the benchmark's report."""
        return list(self._batch_sizes)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._worker = threading.Thread(target=self._work, name="safety-classifier", daemon=True)
        self._worker.start()

    async def stop(self) -> None:
        """Refuse new items, fail the waiting ones, let the batch being judged finish."""
        worker = self._worker
        if worker is None:
            return
        self._worker = None
        with self._changed:
            self._stopping = True
            left = list(self._waiting)
            self._waiting.clear()
            self._changed.notify()
        for pending in left:
            if not pending.future.done():
                pending.future.set_exception(Unavailable("the safety service is shutting down"))
        await asyncio.to_thread(worker.join)

    async def submit(self, items: Sequence[T]) -> list[R]:
        """Judge `items` (batched with whatever else is in flight); results in order."""
        if self._worker is None or self._loop is None:
            raise Unavailable("the safety classifier is not running")
        waiting = len(self._waiting)
        if waiting + len(items) > self.config.max_queue:
            raise Overloaded(
                f"the safety queue is full ({waiting} items waiting); retry shortly", retry_after_s=0.05
            )
        if self._idle_enough(len(items)):
            return self._judge_inline(items)
        pendings = [_Pending[T, R](item, self._loop.create_future()) for item in items]
        with self._changed:
            self._waiting.extend(pendings)
            if len(self._waiting) >= self._wake_at:
                self._changed.notify()
        if len(pendings) == 1:  # the usual case: no gather around one future
            return [await pendings[0].future]
        return list(await asyncio.gather(*(p.future for p in pendings)))

    def _idle_enough(self, count: int) -> bool:
        after = self.config.inline_after_idle_s
        if after is None or count > self.config.max_batch:
            return False
        with self._changed:
            # Only this loop queues items, and it is busy here until the inline check is done, so
            # an idle worker stays idle meanwhile: the classifier is never called from two threads.
            return not self._judging and not self._waiting and time.monotonic() - self._idle_since >= after

    def _judge_inline(self, items: Sequence[T]) -> list[R]:
        self.inline_checks += 1
        try:
            return self._judge_batch(list(items))
        except Exception:
            log.exception("classifier failed on an inline check of %d", len(items))
            raise
        finally:
            self._idle_since = time.monotonic()

    def _judge_batch(self, items: list[T]) -> list[R]:
        """The classifier's results for `items`, one each (from the worker or, inline, the loop)."""
        self._batch_sizes.append(len(items))
        results = self._judge(items)
        if len(results) != len(items):
            raise RuntimeError(f"the classifier returned {len(results)} results for {len(items)} items")
        return results

    # The worker thread from here on.

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                results = self._judge_batch([p.item for p in batch])
            except Exception as error:  # the classifier failed: every caller of this batch learns why
                log.exception("classifier failed on a batch of %d", len(batch))
                self._done_judging()
                self._hand_back(_fail, batch, error)
                continue
            self._done_judging()
            self._hand_back(_resolve, batch, results)

    def _done_judging(self) -> None:
        with self._changed:
            self._judging = False
            self._idle_since = time.monotonic()

    def _next_batch(self) -> list[_Pending[T, R]] | None:
        """Up to max_batch items whose callers still wait; None once stopping."""
        config = self.config
        with self._changed:
            batch: list[_Pending[T, R]] = []
            while not batch:
                self._wake_at = 1
                self._changed.wait_for(lambda: self._waiting or self._stopping)
                if self._stopping:
                    return None
                self._take(batch)
            if len(batch) < config.max_batch and config.max_wait_s > 0:
                self._wake_at = config.max_batch - len(batch)
                self._changed.wait_for(
                    lambda: len(self._waiting) >= self._wake_at or self._stopping, config.max_wait_s
                )
                self._take(batch)
            self._wake_at = config.max_queue + 1  # judging: nothing to wake for
            self._judging = True
            return batch

    def _take(self, batch: list[_Pending[T, R]]) -> None:
        # A caller that gave up (deadline, cancel) has a done future: its item is not judged. Reading
        # done() from this thread races only with that cancellation, which at worst judges one item
        # for nobody.
        while len(batch) < self.config.max_batch and self._waiting:
            pending = self._waiting.popleft()
            if not pending.future.done():
                batch.append(pending)

    def _hand_back(self, deliver: Callable[..., None], *args: object) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(deliver, *args)
        except RuntimeError:  # the loop is closed: its callers are gone with it
            log.warning("the event loop closed before a batch's results could be delivered")


def _resolve(batch: list[_Pending[T, R]], results: list[R]) -> None:
    for pending, result in zip(batch, results, strict=True):
        if not pending.future.done():
            pending.future.set_result(result)


def _fail(batch: list[_Pending[T, R]], error: Exception) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(error)
