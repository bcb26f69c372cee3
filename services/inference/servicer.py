"""The InferenceService edge: protobuf <-> engine domain types. No scheduling or model code here."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator

import grpc
from opentelemetry import trace

from llamagate.v1 import inference_service_pb2 as pb
from llamagate.v1 import inference_service_pb2_grpc as pb_grpc
from llamagate.v1 import types_pb2
from services.common.convert import messages_from_pb
from services.common.errors import (
    FieldViolation,
    InvalidRequest,
    LlamagateError,
    PromptTooLong,
    Unavailable,
)
from services.common.logs import bind_request_id
from services.common.sampling import SamplingParams, seed_as_int64
from services.inference.engine.engine import Engine
from services.inference.engine.request import (
    Delta,
    Done,
    Event,
    Failed,
    FinishReason,
    GenerationRequest,
    Started,
)
from services.inference.metrics import InferenceMetrics
from services.inference.model.chat_format import encode_dialog, encode_text
from services.inference.model.tokenizer import Tokenizer
from services.inference.model.transformer import ModelArgs
from services.inference.tracing import GenerationTrace

_FINISH = {
    FinishReason.STOP: types_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: types_pb2.FINISH_REASON_LENGTH,
    FinishReason.CANCELLED: types_pb2.FINISH_REASON_CANCELLED,
}


def sampling_from_pb(p: types_pb2.SamplingParams) -> SamplingParams:
    defaults = SamplingParams()
    return SamplingParams(
        temperature=p.temperature if p.HasField("temperature") else defaults.temperature,
        top_p=p.top_p if p.HasField("top_p") else defaults.top_p,
        max_gen_len=p.max_gen_len if p.HasField("max_gen_len") else None,
        seed=p.seed if p.HasField("seed") else None,
        logprobs=p.logprobs,
        stop=tuple(p.stop),
        ignore_eos=p.ignore_eos,
    )


class InferenceServicer(pb_grpc.InferenceServiceServicer):
    def __init__(
        self,
        engine: Engine | None,
        tokenizer: Tokenizer,
        info: pb.GetModelInfoResponse | None,
        tracer: trace.Tracer | None = None,
        metrics: InferenceMetrics | None = None,
    ) -> None:
        """engine and info may come later, through `attach`, so the server can answer health
        (NOT_SERVING) while the model loads; until then model calls are UNAVAILABLE."""
        self._loaded = (engine, info) if engine is not None and info is not None else None
        self._tokenizer = tokenizer
        self._tracer = tracer or trace.NoOpTracer()
        self._metrics = metrics

    def attach(self, engine: Engine, info: pb.GetModelInfoResponse) -> None:
        self._loaded = (engine, info)

    @property
    def engine(self) -> Engine | None:
        return None if self._loaded is None else self._loaded[0]

    @property
    def _engine(self) -> Engine:
        return self._model()[0]

    def _model(self) -> tuple[Engine, pb.GetModelInfoResponse]:
        if self._loaded is None:
            raise Unavailable("the model is still loading: retry when health reports SERVING")
        return self._loaded

    def _prompt(self, start: pb.GenerateStart) -> list[int]:
        which = start.WhichOneof("input")
        if which == "dialog":
            return encode_dialog(
                self._tokenizer, messages_from_pb(start.dialog.messages, "start.dialog.messages")
            )
        if which == "prompt" and start.prompt:
            return encode_text(self._tokenizer, start.prompt)
        raise InvalidRequest(
            "start.input is empty: set start.prompt (text) or start.dialog",
            [FieldViolation("start.prompt", "empty"), FieldViolation("start.dialog", "empty")],
        )

    def _validate(self, request: GenerationRequest) -> None:
        """The engine's checks; a prompt too long becomes PROMPT_TOO_LONG with both numbers in its
        ErrorInfo, so the gateway can tell its own client which field to shorten."""
        try:
            self._engine.validate(request)
        except InvalidRequest as error:
            max_prompt_tokens = self._engine.config.max_seq_len - 1
            if len(request.prompt_ids) <= max_prompt_tokens:
                raise
            field = error.violations[0].field if error.violations else "start.input"
            raise PromptTooLong(
                field, len(request.prompt_ids), max_prompt_tokens, "", message=error.message
            ) from None

    async def Generate(
        self, request_iterator: AsyncIterator[pb.GenerateRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("action") != "start":
            raise InvalidRequest(
                "the first message of a Generate stream must be a GenerateStart (set `start`)"
            )
        start = first.start
        if start.echo and start.WhichOneof("input") != "prompt":
            raise InvalidRequest("start.echo applies to text prompts only, not to dialogs")
        params = sampling_from_pb(start.sampling)
        params.validate("start.sampling")
        prompt = await asyncio.to_thread(self._prompt, start)
        seed = params.seed if params.seed is not None else uuid.uuid4().int % 2**63
        request = GenerationRequest(
            start.request_id or uuid.uuid4().hex, tuple(prompt), params, seed_as_int64(seed), echo=start.echo
        )
        self._validate(request)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()

        def sink(event: Event) -> None:  # runs on the engine thread
            # Stamped here, not when the loop gets to it, so phase boundaries are the engine's.
            loop.call_soon_threadsafe(events.put_nowait, (time.time_ns(), event))

        with bind_request_id(request.request_id):
            timeline = GenerationTrace(self._tracer, self._metrics, request.request_id)
            try:
                handle = self._engine.submit(request, sink)
            except LlamagateError as error:
                timeline.finish("rejected", len(request.prompt_ids), 0, error=error)
                raise
            # aclosing: a cancelled RPC must run the inner `finally` (engine.cancel) now, not at GC.
            async with contextlib.aclosing(
                self._stream(request, request_iterator, events, handle, timeline)
            ) as responses:
                async for response in responses:
                    yield response

    async def _stream(
        self,
        request: GenerationRequest,
        request_iterator: AsyncIterator[pb.GenerateRequest],
        events: asyncio.Queue[tuple[int, Event]],
        handle: int,
        timeline: GenerationTrace,
    ) -> AsyncGenerator[pb.GenerateResponse, None]:
        generated = 0

        async def watch_client() -> None:
            # A half-close is normal (the client has nothing more to say); an aborted RPC reaches
            # the `finally` below as CancelledError. Only an explicit GenerateCancel cancels here.
            # A bad later message fails the stream through the event queue: raised in this task,
            # it would be lost and the generation would go on as if nothing had been sent.
            try:
                async for message in request_iterator:
                    action = message.WhichOneof("action")
                    if action == "cancel":
                        self._engine.cancel(handle)
                        return
                    raise InvalidRequest(
                        "after its GenerateStart a Generate stream accepts only a GenerateCancel (set "
                        f"`cancel`), got {f'a second `{action}`' if action else 'an empty GenerateRequest'}"
                    )
            except LlamagateError as error:
                events.put_nowait((time.time_ns(), Failed(error)))

        watcher = asyncio.create_task(watch_client())
        try:
            while True:
                at_ns, event = await events.get()
                if isinstance(event, Started):
                    timeline.admitted(at_ns)
                    yield pb.GenerateResponse(
                        started=pb.GenerateStarted(
                            request_id=event.request_id, prompt_tokens=event.prompt_tokens
                        )
                    )
                elif isinstance(event, Delta):
                    if not event.echo:
                        generated += len(event.token_ids)
                        timeline.tokens(len(event.token_ids), at_ns)
                    yield pb.GenerateResponse(
                        delta=pb.TokenDelta(
                            token_ids=event.token_ids,
                            text=event.text,
                            logprobs=event.logprobs,
                            echo=event.echo,
                        )
                    )
                elif isinstance(event, Done):
                    timeline.finish(
                        event.finish_reason.value, event.prompt_tokens, event.completion_tokens, at_ns
                    )
                    usage = types_pb2.Usage(
                        prompt_tokens=event.prompt_tokens,
                        completion_tokens=event.completion_tokens,
                        cached_prompt_tokens=event.cached_prompt_tokens,
                    )
                    yield pb.GenerateResponse(
                        done=pb.GenerateDone(finish_reason=_FINISH[event.finish_reason], usage=usage)
                    )
                    return
                elif isinstance(event, Failed):
                    timeline.finish("error", len(request.prompt_ids), generated, at_ns, error=event.error)
                    raise event.error
        finally:
            watcher.cancel()
            self._engine.cancel(handle)
            # A no-op after Done/Failed; otherwise the client went away mid-generation.
            timeline.finish(FinishReason.CANCELLED.value, len(request.prompt_ids), generated)

    async def Tokenize(
        self, request: pb.TokenizeRequest, context: grpc.aio.ServicerContext
    ) -> pb.TokenizeResponse:
        which = request.WhichOneof("input")
        if which == "dialog":
            messages = messages_from_pb(request.dialog.messages)
            ids = await asyncio.to_thread(encode_dialog, self._tokenizer, messages)
        elif which == "text":
            ids = await asyncio.to_thread(
                self._tokenizer.encode, request.text, bos=request.add_bos, eos=False
            )
        else:
            raise InvalidRequest("input is empty: set text or dialog")
        return pb.TokenizeResponse(token_ids=ids)

    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelInfoResponse:
        engine, loaded_info = self._model()
        info = pb.GetModelInfoResponse()
        info.CopyFrom(loaded_info)
        stats = engine.stats()
        info.kv_blocks_total = stats.total_blocks
        info.kv_blocks_free = stats.free_blocks
        return info


def model_info(
    name: str, args: ModelArgs, world_size: int, max_batch_size: int, demo: bool
) -> pb.GetModelInfoResponse:
    sizes = {4096: "7B", 5120: "13B", 8192: "70B"}
    return pb.GetModelInfoResponse(
        name=name,
        size="demo" if demo else sizes.get(args.dim, f"dim{args.dim}"),
        model_parallel_size=world_size,
        max_seq_len=args.max_seq_len,
        max_batch_size=max_batch_size,
        vocab_size=args.vocab_size,
        n_layers=args.n_layers,
        n_heads=args.n_heads,
        n_kv_heads=args.kv_heads,
        demo=demo,
    )
