"""One reply outside a Chat stream, produced in its own task: what a one-shot transport needs.

A request that carries its whole dialog (the HTTP edge's chat and completion calls; gRPC's
Complete has the same shape) admits nothing itself: the caller runs `Replies.admit` first. The
task then runs the pipeline under the turn span, meters each event and books the reply once done.
The events travel over a queue, so the transport may read them from another task and drop the
reply at any point: `close()` cancels the task, which closes the generation (a client that leaves
stops its tokens) exactly as ChatTurns does for a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from services.common.errors import Unavailable
from services.common.logs import bind_request_id
from services.gateway.auth import Tenant
from services.gateway.pipeline import Done, ReplyEvent, ReplyRequest
from services.gateway.replies import Replies
from services.gateway.tracing import turn_span


@dataclass(frozen=True)
class _Failed:
    error: BaseException


class ReplyTask:
    """Start with `ReplyTask.start(...)` (inside the span the turn belongs to); read `events()`."""

    def __init__(self, replies: Replies, tenant: Tenant, request: ReplyRequest) -> None:
        self.request = request
        self._replies = replies
        self._tenant = tenant
        self._cancel = asyncio.Event()
        self._queue: asyncio.Queue[ReplyEvent | _Failed] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def start(cls, replies: Replies, tenant: Tenant, request: ReplyRequest) -> ReplyTask:
        reply = cls(replies, tenant, request)
        # The task copies the current context: its turn span is a child of the caller's span.
        reply._task = asyncio.create_task(reply._produce())
        return reply

    async def events(self) -> AsyncGenerator[ReplyEvent, None]:
        """The reply's events up to and including Done; the pipeline's error is raised here."""
        while True:
            item = await self._queue.get()
            if isinstance(item, _Failed):
                raise item.error
            yield item
            if isinstance(item, Done):
                return

    def cancel(self) -> None:
        """End the reply with CANCELLED (its Done still comes)."""
        self._cancel.set()

    def abandon(self) -> None:
        """Drop the reply now: its task is cancelled, which closes the generation. Not awaited, so
        safe where the caller is being cancelled itself (a transport whose client went away)."""
        if self._task is not None:
            self._task.cancel()

    async def close(self) -> None:
        """Drop the reply and wait until its generation is closed."""
        self.abandon()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _produce(self) -> None:
        request = self.request
        meter = self._replies.meter(self._tenant)
        try:
            with (
                bind_request_id(request.request_id),
                turn_span(self._replies.tracer, request.request_id, self._tenant.name, new_trace=False),
            ):
                async with contextlib.aclosing(self._replies.pipeline.run(request, self._cancel)) as events:
                    async for event in events:
                        meter.observe(event)
                        if isinstance(event, Done):
                            self._replies.finished(self._tenant, event)
                        self._queue.put_nowait(event)
                        if isinstance(event, Done):
                            return
                raise Unavailable(f"reply {request.request_id} ended without a done event")
        except Exception as error:
            self._queue.put_nowait(_Failed(error))
