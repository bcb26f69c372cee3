"""The engine: a scheduler and a model runner driven by one step loop on its own thread.

The asyncio side calls `submit`/`cancel` (thread-safe: they post to an inbox) and receives events
through the sink it passed in, which hands them to its event loop. Rank 0 broadcasts each step's
plan so every other rank runs the same forward (see ranks.py).

The loop keeps one step in flight: it plans and launches step N+1, and only then waits for step N's
tokens and does that step's host work (scheduler bookkeeping, detokenizing, stop strings, sinks),
so the host's per-step work runs while the device computes instead of between device steps.
Where launching computes the step (the CPU), steps run one at a time: overlapping would only make
each step's tokens wait for the next step to be computed (a prefill's first token, a whole decode
step).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from services.common.errors import FieldViolation, InvalidRequest, LlamagateError, Unavailable
from services.inference.engine.blocks import BlockAllocator
from services.inference.engine.config import EngineConfig
from services.inference.engine.ranks import StepBroadcaster
from services.inference.engine.request import (
    Delta,
    Done,
    EventSink,
    Failed,
    FinishReason,
    GenerationRequest,
    Started,
)
from services.inference.engine.runner import ModelRunner, PendingStep
from services.inference.engine.scheduler import (
    ScheduledStep,
    Scheduler,
    SchedulerStats,
    Sequence,
    SequenceUpdate,
    check_queue_room,
)
from services.inference.engine.text_stream import TextStream
from services.inference.model.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Active:
    handle: int
    sequence: Sequence
    sink: EventSink
    text: TextStream
    started_at: float
    echo_logprobs: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class _InFlight:
    step: ScheduledStep
    pending: PendingStep
    launched_at: float


@dataclass(frozen=True)
class _Submit:
    handle: int
    request: GenerationRequest
    sink: EventSink


@dataclass(frozen=True)
class _Cancel:
    handle: int


@dataclass(frozen=True)
class _Stop:
    drain: bool


_Command = _Submit | _Cancel | _Stop


@dataclass(frozen=True)
class EngineStats(SchedulerStats):
    steps: int = 0


class Engine:
    def __init__(
        self,
        config: EngineConfig,
        runner: ModelRunner,
        tokenizer: Tokenizer,
        allocator: BlockAllocator,
        broadcaster: StepBroadcaster | None = None,
    ) -> None:
        self.config = config
        self._runner = runner
        self._tokenizer = tokenizer
        self._broadcaster = broadcaster
        self._scheduler = Scheduler(config, allocator, tokenizer.eos_id)
        self._overlap = config.overlap_steps and runner.asynchronous
        self._inbox: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._handles = itertools.count(1)
        self._lock = threading.Lock()
        self._active: dict[int, _Active] = {}
        self._by_sequence: dict[Sequence, _Active] = {}
        self._pending_submits = 0
        self._steps = 0
        self._stats = EngineStats(**vars(self._scheduler.stats()))
        self._failure: LlamagateError | None = None
        self._step_started: float | None = None
        self._thread = threading.Thread(target=self._loop, name="inference-engine", daemon=True)

    # -- the asyncio side (any thread) -----------------------------------------------------

    def validate(self, request: GenerationRequest) -> None:
        """Checks that need the engine's limits; raises InvalidRequest with both numbers."""
        n = len(request.prompt_ids)
        if n == 0:
            raise InvalidRequest("the prompt is empty: send a non-empty prompt or dialog")
        if n >= self.config.max_seq_len:
            raise InvalidRequest(
                f"start.input: the prompt has {n} tokens but this model accepts at most {self.config.max_seq_len} tokens "
                f"(--max-seq-len) including at least one generated token: shorten it to {self.config.max_seq_len - 1} "
                "tokens or fewer",
                [FieldViolation("start.input", f"{n} tokens > {self.config.max_seq_len - 1}")],
            )

    def submit(self, request: GenerationRequest, sink: EventSink) -> int:
        """Queue a validated request; returns a handle for `cancel`. Raises Overloaded or Unavailable."""
        with self._lock:
            if self._failure is not None:
                raise self._failure
            if not self._thread.is_alive():
                raise Unavailable("the inference engine is not running (starting or shutting down)")
            # Refused at once on the caller's thread, from the count last published; the scheduler
            # applies the same rule to its exact queue when the request reaches it.
            check_queue_room(self._pending_submits + self._stats.waiting, self.config.max_queue)
            self._pending_submits += 1
            handle = next(self._handles)
        self._inbox.put(_Submit(handle, request, sink))
        return handle

    def cancel(self, handle: int) -> None:
        """Cancel a request; its blocks are freed before the next step. Unknown handles are ignored."""
        self._inbox.put(_Cancel(handle))

    def stats(self) -> EngineStats:
        with self._lock:
            return self._stats

    @property
    def failure(self) -> LlamagateError | None:
        return self._failure

    def stalled_for(self) -> float:
        """Seconds the current step has been running (0 between steps)."""
        started = self._step_started
        return 0.0 if started is None else time.monotonic() - started

    def start(self) -> None:
        self._thread.start()

    def stop(self, drain: bool = True, timeout_s: float | None = None) -> None:
        """Finish (drain) or cancel what is in flight, tell the other ranks to stop, end the thread."""
        self._inbox.put(_Stop(drain))
        self._thread.join(timeout_s)

    def fail(self, error: LlamagateError) -> None:
        """Fail every request (e.g. a rank died or a step hung): callers get `error`, never a hang."""
        with self._lock:
            if self._failure is None:
                self._failure = error
            active = list(self._active.values())
            self._active.clear()
            self._by_sequence.clear()
        for item in active:
            item.sink(Failed(error))
        log.error("inference engine failed: %s", error.message)

    # -- the engine thread -----------------------------------------------------------------

    def _loop(self) -> None:
        stopping: _Stop | None = None
        in_flight: _InFlight | None = None
        try:
            while self._failure is None:
                idle = in_flight is None and not self._scheduler.has_work()
                if stopping is not None and idle:
                    break
                stopping = self._drain_inbox(block=idle, stopping=stopping)
                launched = self._launch_next()
                if in_flight is not None:
                    self._step_started = in_flight.launched_at
                    self._complete(in_flight)
                if launched is not None and not self._overlap:
                    self._complete(launched)
                    launched = None
                self._step_started = None if launched is None else launched.launched_at
                in_flight = launched
                self._publish_stats()
        except Exception as error:
            log.exception("engine step failed")
            self.fail(
                Unavailable(f"the inference engine failed ({type(error).__name__}: {error}); retry later")
            )
        finally:
            self._step_started = None
            if self._broadcaster is not None and self._failure is None:
                self._broadcaster.send(None)

    def _launch_next(self) -> _InFlight | None:
        step = self._scheduler.schedule()
        if step is None:
            return None
        launched_at = time.monotonic()
        if self._step_started is None:
            # From an idle engine the launch itself may block (a follower that stopped answering
            # never takes the broadcast or the forward's collectives): the watchdog must see it.
            self._step_started = launched_at
        if self._broadcaster is not None:
            self._broadcaster.send(step.plan)
        return _InFlight(step, self._runner.launch(step.plan), launched_at)

    def _complete(self, step: _InFlight) -> None:
        result = step.pending.result()
        self._steps += 1
        updates = self._scheduler.apply(step.step, result.tokens, result.logprobs, result.echo_logprobs)
        for update in updates:
            self._emit(update)

    def _drain_inbox(self, block: bool, stopping: _Stop | None) -> _Stop | None:
        while True:
            try:
                command = self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait()
            except queue.Empty:
                return stopping
            block = False
            if isinstance(command, _Submit):
                self._admit(command)
            elif isinstance(command, _Cancel):
                item = self._active.get(command.handle)
                if item is not None:
                    self._finish(item, FinishReason.CANCELLED)
            else:
                stopping = command
                if not command.drain:
                    for item in list(self._active.values()):
                        self._finish(item, FinishReason.CANCELLED)

    def _admit(self, command: _Submit) -> None:
        request = command.request
        try:
            sequence = self._scheduler.add(request)
        except LlamagateError as error:
            command.sink(Failed(error))
            return
        finally:
            with self._lock:
                self._pending_submits -= 1
        item = _Active(
            command.handle,
            sequence,
            command.sink,
            TextStream(self._tokenizer, request.params.stop),
            time.monotonic(),
        )
        with self._lock:
            self._active[command.handle] = item
            self._by_sequence[sequence] = item
        command.sink(Started(request.request_id, len(request.prompt_ids)))

    def _emit(self, update: SequenceUpdate) -> None:
        item = self._by_sequence.get(update.sequence)
        if item is None:
            return
        sequence = update.sequence
        params = sequence.request.params
        if update.echo_logprobs is not None:
            item.echo_logprobs += update.echo_logprobs
        if update.token is None:
            return
        if sequence.echo_pending:
            sequence.echo_pending = False
            prompt = sequence.request.prompt_ids
            logprobs = (0.0, *item.echo_logprobs) if params.logprobs else ()
            item.sink(Delta(prompt, self._tokenizer.decode(prompt), logprobs, echo=True))
        reason = self._scheduler.finish_reason(sequence)
        if reason is not FinishReason.STOP:  # the EOS token itself is not part of the reply
            text = item.text.push([update.token])
            item.sink(Delta((update.token,), text, (update.logprob,) if params.logprobs else ()))
            if item.text.stopped:
                reason = FinishReason.STOP
        if reason is not None:
            self._finish(item, reason)

    def _finish(self, item: _Active, reason: FinishReason) -> None:
        sequence = item.sequence
        if reason is not FinishReason.CANCELLED:
            rest = item.text.finish()
            if rest:
                item.sink(Delta((), rest))
        self._scheduler.release(sequence)
        with self._lock:
            self._active.pop(item.handle, None)
            self._by_sequence.pop(sequence, None)
        generated = max(sequence.num_generated, 0)
        ended_on_eos = reason is FinishReason.STOP and sequence.tokens[-1] == self._tokenizer.eos_id
        completion = generated - 1 if ended_on_eos else generated
        done = Done(reason, sequence.prompt_len, completion, sequence.cached_prompt_tokens)
        # Published before the caller hears of the end: its next look at the gauges must not still
        # count this request as running (the step loop publishes only after the whole step).
        self._publish_stats()
        item.sink(done)
        log.info(
            "request_finished request_id=%s finish_reason=%s prompt_tokens=%d cached_prompt_tokens=%d "
            "completion_tokens=%d duration_ms=%.1f",
            sequence.request.request_id,
            reason.value,
            done.prompt_tokens,
            done.cached_prompt_tokens,
            done.completion_tokens,
            (time.monotonic() - item.started_at) * 1000,
        )

    def _publish_stats(self) -> None:
        stats = EngineStats(**vars(self._scheduler.stats()), steps=self._steps)
        with self._lock:
            self._stats = stats


def run_follower(runner: ModelRunner, broadcaster: StepBroadcaster) -> None:
    """Ranks > 0: run every plan rank 0 broadcasts, until it sends the end (None).

    Like rank 0, a follower keeps one step in flight (its token buffer feeds the next step's
    inputs exactly as rank 0's does, since every rank samples the same tokens).
    """
    in_flight: PendingStep | None = None
    while (plan := broadcaster.recv()) is not None:
        launched = runner.launch(plan)
        if in_flight is not None:
            in_flight.result()
        in_flight = launched
    if in_flight is not None:
        in_flight.result()
