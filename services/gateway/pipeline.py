"""One reply, safety before, during and after generation, every verdict audited before release.

    input check ──unsafe──> SafetyEvent + Done(SAFETY), nothing generated
        │ safe          (the generation call is opened during the check, started only now)
    Generate stream ──deltas──> Chunker ──chunk──> CheckStream verdict ──safe──> TextDelta
        │                                                └──unsafe──> GenerateCancel, SafetyEvent,
        │                                                              Done(SAFETY); chunk dropped
    generation done ──> rest of the held text checked, then the whole reply (Check, output side)
        └──> SafetyEvent + Done

Fail closed: a safety call that fails or times out raises Unavailable after the generation is
cancelled, so nothing unchecked leaves. With `fail_open` (off by default) the unchecked text is
released instead, and every such use is audited as verdict "unchecked".
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

from opentelemetry import trace

from services.common.dialog import Message, Role
from services.common.errors import DeadlineExceeded, LlamagateError, Unavailable
from services.common.verdicts import Direction, Verdict
from services.gateway.audit import AuditCategory, AuditRecord, AuditSink, text_sha256
from services.gateway.backends import (
    FinishReason,
    Generation,
    GenerationDone,
    GenerationEvent,
    GenerationRequest,
    GenerationStarted,
    InferenceBackend,
    OutputCheck,
    SafetyBackend,
)
from services.gateway.metrics import GatewayMetrics
from services.gateway.moderation import Chunk, Chunker, ModerationConfig, ModerationMode
from services.gateway.outcomes import (
    Admitted,
    Cancelled,
    Ending,
    GenerationEnded,
    Progress,
    Refused,
    ReplyEnded,
    Stopped,
    StreamOutcome,
)
from services.gateway.tracing import safety_span

DEFAULT_REFUSAL = "I can't help with that. The request or the reply was stopped by the safety policy."


@dataclass(frozen=True)
class PipelineConfig:
    moderation: ModerationConfig = field(default_factory=ModerationConfig)
    # Longest wait on one safety call before the reply fails with UNAVAILABLE.
    safety_timeout_s: float = 2.0
    fail_open: bool = False
    audit_text: bool = False
    refusal: str = DEFAULT_REFUSAL


@dataclass(frozen=True)
class ReplyRequest:
    request_id: str
    tenant: str
    # What the input check judges: the dialog ending with the user turn (a completion's prompt is
    # judged as a one-message user dialog).
    context: tuple[Message, ...]
    generation: GenerationRequest
    # time.monotonic() by which the reply must be done; None = no deadline.
    deadline: float | None = None


@dataclass(frozen=True)
class Accepted:
    request_id: str


@dataclass(frozen=True)
class Text:
    text: str
    token_ids: list[int]
    logprobs: list[float]
    echo: bool = False


@dataclass(frozen=True)
class SafetyNotice:
    verdict: Verdict
    refusal: str = ""


@dataclass(frozen=True)
class Done:
    request_id: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    # Everything released as reply text (not echo), for the conversation history.
    reply_text: str
    # Of prompt_tokens, those the model took from its prefix cache.
    cached_prompt_tokens: int = 0


ReplyEvent = Accepted | Text | SafetyNotice | Done


def render_dialog(dialog: Sequence[Message]) -> str:
    """The judged text of an input check, for the audit hash: one "role: content" line per message."""
    return "\n".join(f"{m.role}: {m.content}" for m in dialog)


class ReplyPipeline:
    def __init__(
        self,
        config: PipelineConfig,
        inference: InferenceBackend,
        safety: SafetyBackend,
        audit: AuditSink,
        tracer: trace.Tracer | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.config = config
        self._inference = inference
        self._safety = safety
        self._audit = audit
        self._tracer = tracer or trace.NoOpTracer()
        self._metrics = metrics

    def _record_stage(self, stage: str, began: float) -> None:
        if self._metrics is not None:
            self._metrics.record_stage(stage, time.perf_counter() - began)

    async def run(self, request: ReplyRequest, cancel: asyncio.Event) -> AsyncGenerator[ReplyEvent, None]:
        """The events of one reply. Setting `cancel` ends it with CANCELLED."""
        yield Accepted(request.request_id)
        # The generation call is opened now and set up while the input is judged; the dialog goes
        # out on it only once the verdict is safe (a refused input closes it unstarted).
        call = self._inference.open(self._remaining(request))
        try:
            admitted = await self._check_input(request)
        except BaseException:
            call.close()
            raise
        if isinstance(admitted, Refused):
            call.close()
            for event in self._ending(request, admitted):
                yield event
            return
        # A safe input may reach the model while its verdict is being made durable: generating
        # releases nothing. The verdict is on disk before its notice or any text goes out.
        buffered = self.config.moderation.mode is ModerationMode.BUFFER
        try:
            started = time.perf_counter()
            generation = call.start(request.generation)
        except BaseException:
            call.close()
            await admitted.durable
            raise
        output_check = (
            None if buffered else self._safety.output_check(request.context, self._remaining(request))
        )
        try:
            await admitted.durable
            if admitted.verdict is not None:
                yield SafetyNotice(admitted.verdict)
            streamed: StreamOutcome | None = None
            async with contextlib.aclosing(
                self._stream(request, generation, output_check, cancel, started)
            ) as items:
                async for item in items:
                    if isinstance(item, Text):
                        yield item
                    else:
                        streamed = item
            assert streamed is not None, "the streaming stage ends with its outcome"
            ending = (
                await self._judge_whole(request, streamed)
                if isinstance(streamed, GenerationEnded)
                else streamed
            )
            for event in self._ending(request, ending):
                yield event
        finally:
            generation.close()
            if output_check is not None:
                output_check.close()

    async def _check_input(self, request: ReplyRequest) -> Refused | Admitted:
        verdict, durable = await self._judge_started(
            request,
            Direction.INPUT,
            "input",
            render_dialog(request.context),
            lambda timeout: self._safety.check(request.context, Direction.INPUT, timeout),
        )
        if verdict is not None and not verdict.safe:
            await durable
            return Refused(verdict)
        return Admitted(verdict, durable)

    async def _stream(
        self,
        request: ReplyRequest,
        generation: Generation,
        output_check: OutputCheck | None,
        cancel: asyncio.Event,
        started: float,
    ) -> AsyncGenerator[Text | StreamOutcome, None]:
        """Release checked chunks while generating; the last item is how the stage ended.
        `started`: when the GenerateStart went out (time.perf_counter)."""
        chunker = Chunker(self.config.moderation)
        finish = FinishReason.STOP
        prompt_tokens = completion_tokens = cached_prompt_tokens = 0
        released = ""
        chunks_judged = 0  # numbers the output chunks in their trace spans

        def progress() -> Progress:
            return Progress(prompt_tokens, completion_tokens, released, cached_prompt_tokens)

        async with contextlib.aclosing(_events_or_cancel(generation, cancel)) as events:
            async for event in events:
                if event is None:
                    yield Cancelled(progress())
                    return
                if isinstance(event, GenerationStarted):
                    prompt_tokens = event.prompt_tokens
                elif isinstance(event, GenerationDone):
                    finish = event.finish_reason
                    prompt_tokens = event.prompt_tokens or prompt_tokens
                    completion_tokens = event.completion_tokens or completion_tokens
                    cached_prompt_tokens = event.cached_prompt_tokens
                elif event.echo:
                    # The echoed prompt was judged by the input check.
                    yield Text(event.text, event.token_ids, event.logprobs, echo=True)
                else:
                    if completion_tokens == 0:
                        self._record_stage("first_token", started)
                    completion_tokens += len(event.token_ids)
                    chunk = chunker.push(event.text, event.token_ids, event.logprobs)
                    if chunk is None:
                        continue
                    assert output_check is not None
                    outcome = await self._release(
                        request, output_check, chunk, generation, progress(), chunks_judged
                    )
                    chunks_judged += 1
                    if isinstance(outcome, Stopped):
                        yield outcome
                        return
                    released += chunk.text
                    yield outcome
        tail = chunker.flush()
        if tail is not None and output_check is None:
            # Buffer mode: released only after the final check.
            yield GenerationEnded(finish, progress(), held=tail)
            return
        if tail is not None:
            assert output_check is not None
            outcome = await self._release(request, output_check, tail, generation, progress(), chunks_judged)
            if isinstance(outcome, Stopped):
                yield outcome
                return
            released += tail.text
            yield outcome
        yield GenerationEnded(finish, progress())

    async def _release(
        self,
        request: ReplyRequest,
        output_check: OutputCheck,
        chunk: Chunk,
        generation: Generation,
        progress: Progress,
        chunk_index: int,
    ) -> Text | Stopped:
        """Judge `chunk` in context: its text to release if safe, else the generation is cancelled."""
        try:
            verdict = await self._judge(
                request,
                Direction.OUTPUT,
                "chunk",
                progress.released + chunk.text,
                lambda timeout: output_check.check_chunk(chunk.text, timeout),
                chunk_index=chunk_index,
            )
        except BaseException:
            await generation.cancel()
            raise
        if verdict is not None and not verdict.safe:
            await generation.cancel()
            return Stopped(verdict, progress)
        return Text(chunk.text, chunk.token_ids, chunk.logprobs)

    async def _judge_whole(self, request: ReplyRequest, ended: GenerationEnded) -> ReplyEnded | Stopped:
        """The reference practice: judge the whole reply once it is complete."""
        held = ended.held
        reply = ended.progress.released + (held.text if held is not None else "")
        whole = (*request.context, Message(Role.ASSISTANT, reply))
        verdict = await self._judge(
            request,
            Direction.OUTPUT,
            "final",
            reply,
            lambda timeout: self._safety.check(whole, Direction.OUTPUT, timeout),
        )
        if verdict is not None and not verdict.safe:
            return Stopped(verdict, ended.progress)
        return ReplyEnded(ended.finish_reason, replace(ended.progress, released=reply), verdict, held)

    def _ending(self, request: ReplyRequest, ending: Ending) -> list[ReplyEvent]:
        """The last events of a reply, ending with Done, for the way it ended."""

        def done(finish: FinishReason, progress: Progress) -> Done:
            return Done(
                request.request_id,
                finish,
                progress.prompt_tokens,
                progress.completion_tokens,
                progress.released,
                progress.cached_prompt_tokens,
            )

        match ending:
            case Refused(verdict):
                return [SafetyNotice(verdict, self.config.refusal), done(FinishReason.SAFETY, Progress())]
            case Stopped(verdict, progress):
                return [SafetyNotice(verdict, self.config.refusal), done(FinishReason.SAFETY, progress)]
            case Cancelled(progress):
                return [done(FinishReason.CANCELLED, progress)]
            case ReplyEnded(finish, progress, verdict, held):
                events: list[ReplyEvent] = []
                if held is not None:
                    events.append(Text(held.text, held.token_ids, held.logprobs))
                if verdict is not None:
                    events.append(SafetyNotice(verdict))
                events.append(done(finish, progress))
                return events

    def _remaining(self, request: ReplyRequest) -> float | None:
        if request.deadline is None:
            return None
        remaining = request.deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded("the request's deadline passed before the reply was complete")
        return remaining

    async def _judge(
        self,
        request: ReplyRequest,
        direction: Direction,
        stage: str,
        judged_text: str,
        check: Callable[[float], Awaitable[Verdict]],
        chunk_index: int | None = None,
    ) -> Verdict | None:
        """Run one safety check and make its verdict durable; None = unchecked under fail-open."""
        verdict, durable = await self._judge_started(
            request, direction, stage, judged_text, check, chunk_index
        )
        await durable
        return verdict

    async def _judge_started(
        self,
        request: ReplyRequest,
        direction: Direction,
        stage: str,
        judged_text: str,
        check: Callable[[float], Awaitable[Verdict]],
        chunk_index: int | None = None,
    ) -> tuple[Verdict | None, asyncio.Future[None]]:
        """Run one safety check; return its verdict and the (started) write that makes it durable.

        The caller must await the write before releasing anything that depends on the verdict.
        None = unchecked under fail-open (that record is written before this returns).
        """
        remaining = self._remaining(request)
        timeout = (
            self.config.safety_timeout_s
            if remaining is None
            else min(remaining, self.config.safety_timeout_s)
        )
        record = dict(
            request_id=request.request_id,
            tenant=request.tenant,
            direction=str(direction),
            stage=stage,
            text_sha256=text_sha256(judged_text),
            text=judged_text if self.config.audit_text else None,
        )
        try:
            with safety_span(self._tracer, str(direction), chunk_index):
                began = time.perf_counter()
                verdict = await check(timeout)
                # The first chunk's check is on the path to the first token; the others are not.
                self._record_stage("first_chunk_check" if chunk_index == 0 else f"{stage}_check", began)
        except Unavailable as error:
            if request.deadline is not None and time.monotonic() >= request.deadline - 0.001:
                # The client's deadline, not the safety service, bounded this check.
                raise DeadlineExceeded(
                    "the request's deadline passed during a safety check; nothing unchecked was released"
                ) from None
            if not self.config.fail_open:
                raise
            await self._audit.write(
                AuditRecord(
                    verdict="unchecked",
                    categories=[],
                    classifier_id="",
                    classifier_version="",
                    error=error.message,
                    **record,  # type: ignore[arg-type]
                )
            )
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return None, done
        durable = asyncio.ensure_future(
            self._write_audit(
                AuditRecord(
                    verdict="safe" if verdict.safe else "unsafe",
                    categories=[
                        AuditCategory(c.code, c.name, c.score, c.violated) for c in verdict.categories
                    ],
                    classifier_id=verdict.classifier_id,
                    classifier_version=verdict.classifier_version,
                    judged_tokens=verdict.judged_tokens,
                    judged_segments=verdict.judged_segments,
                    truncated=verdict.truncated,
                    **record,  # type: ignore[arg-type]
                )
            )
        )
        return verdict, durable

    async def _write_audit(self, record: AuditRecord) -> None:
        began = time.perf_counter()
        await self._audit.write(record)
        self._record_stage("audit_write", began)


async def _events_or_cancel(
    generation: Generation, cancel: asyncio.Event
) -> AsyncGenerator[GenerationEvent | None, None]:
    """The generation's events; None (then stop) as soon as `cancel` is set, even between deltas.

    On cancel, GenerateCancel is sent before the pending read is dropped, so the backend ends the
    request as cancelled rather than as a broken stream.
    """
    events = generation.events()
    cancelled = asyncio.ensure_future(cancel.wait())
    following: asyncio.Future[GenerationEvent] | None = None
    try:
        while True:
            # A cancel already made wins over an event already made: with a fast backend both are
            # ready at every wait, and the client's cancel must still end the reply.
            following = None if cancel.is_set() else asyncio.ensure_future(anext(events))
            if following is not None:
                await asyncio.wait({following, cancelled}, return_when=asyncio.FIRST_COMPLETED)
            if following is None or not following.done():
                await generation.cancel()
                yield None
                return
            try:
                event = following.result()
            except StopAsyncIteration:
                return
            following = None
            yield event
    finally:
        cancelled.cancel()
        if following is not None and not following.done():
            following.cancel()
            # The read ends with the cancellation (or the error of the dropped call): both expected.
            with contextlib.suppress(asyncio.CancelledError, LlamagateError):
                await following
        await events.aclose()
