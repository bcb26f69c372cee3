"""Micro-batching: concurrent checks are gathered for a few ms and judged as one batch.

The classifier is a blocking CPU/GPU call, so it runs in one worker thread; the event loop only
queues items and resolves futures. One worker on purpose: the model uses all cores per batch,
and two batches at once would just contend.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from services.common.errors import Overloaded, Unavailable

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatcherConfig:
    max_batch: int = 32
    # How long the first item of a batch waits for company. 0 by default: it is pure latency at
    # low load, and under load batches fill anyway with what queues while the previous one runs.
    max_wait_s: float = 0.0
    # Items waiting beyond this are refused with RESOURCE_EXHAUSTED rather than queued forever.
    max_queue: int = 4096


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future[R]


class MicroBatcher(Generic[T, R]):
    def __init__(self, judge: Callable[[list[T]], list[R]], config: BatcherConfig) -> None:
        self._judge = judge
        self.config = config
        self._queue: asyncio.Queue[_Pending[T, R]] = asyncio.Queue(maxsize=config.max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="safety-classifier")
        self._task: asyncio.Task[None] | None = None
        self.batch_sizes: list[int] = []  # recent batch sizes, for the benchmark's report

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="safety-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(Unavailable("the safety service is shutting down"))
        self._executor.shutdown(wait=True)

    async def submit(self, items: Sequence[T]) -> list[R]:
        """Judge `items` (batched with whatever else is in flight); results in order."""
        if self._task is None:
            raise Unavailable("the safety classifier is not running")
        if self._queue.qsize() + len(items) > self.config.max_queue:
            raise Overloaded(
                f"the safety queue is full ({self._queue.qsize()} items waiting); retry shortly",
                retry_after_s=0.05,
            )
        loop = asyncio.get_running_loop()
        pendings = [_Pending[T, R](item, loop.create_future()) for item in items]
        for pending in pendings:
            self._queue.put_nowait(pending)
        return list(await asyncio.gather(*(p.future for p in pendings)))

    async def _next_batch(self) -> list[_Pending[T, R]]:
        batch = [await self._queue.get()]
        self._drain_into(batch)
        if len(batch) < self.config.max_batch and self.config.max_wait_s > 0:
            # A plain sleep, then a non-blocking drain: no wait_for around Queue.get, whose
            # timeout can race with a put and drop an item.
            await asyncio.sleep(self.config.max_wait_s)
            self._drain_into(batch)
        return batch

    def _drain_into(self, batch: list[_Pending[T, R]]) -> None:
        while len(batch) < self.config.max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [p for p in await self._next_batch() if not p.future.done()]
            if not batch:
                continue
            self.batch_sizes = [*self.batch_sizes[-999:], len(batch)]
            try:
                results = await loop.run_in_executor(self._executor, self._judge, [p.item for p in batch])
            except Exception as error:  # the classifier failed: every caller of this batch learns why
                log.exception("classifier failed on a batch of %d", len(batch))
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(error)
                continue
            for p, result in zip(batch, results, strict=True):
                if not p.future.done():
                    p.future.set_result(result)
