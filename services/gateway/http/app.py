"""The OpenAI-compatible routes: each request becomes one `ReplyRequest` on the shared pipeline.

    POST /v1/chat/completions   messages -> the model's chat format (same dialog rules as ChatStart)
    POST /v1/completions        prompt -> text completion (same rules as Complete)
    GET  /v1/models             the one model this gateway serves
    GET  /healthz, /readyz      liveness (configuration loaded) and readiness (backends answer)

A request is authenticated (Bearer key -> tenant), validated, admitted by the tenant's rate
limits, then run by a `ReplyTask`. Its response status waits for the first event after the
input check, so a refusal by the backends themselves (safety service down: 503) is an HTTP error,
not a broken stream. With `stream: true` each released text becomes one server-sent event; the
pipeline releases text only once it is checked and audited, so nothing unchecked is ever
written to the socket. A client that goes away cancels its generation.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from opentelemetry import metrics, trace
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from services.common.dialog import Message, Role
from services.common.errors import PromptTooLong
from services.gateway.auth import ApiKeys, Tenant
from services.gateway.backends import GenerationRequest
from services.gateway.http.errors import HttpError, ModelNotFound, from_exception, not_found
from services.gateway.http.openai_format import Kind, OpenAIReply
from services.gateway.http.schemas import ChatCompletionRequest, CompletionRequest
from services.gateway.http.telemetry import HttpMetrics, HttpTelemetry
from services.gateway.pipeline import Done, ReplyEvent, ReplyRequest, Text
from services.gateway.replies import Replies
from services.gateway.reply_task import ReplyTask

Body = TypeVar("Body", ChatCompletionRequest, CompletionRequest)
T = TypeVar("T")


def error_response(error: BaseException) -> JSONResponse:
    http = from_exception(error)
    return JSONResponse(http.body(), status_code=http.status, headers=http.headers())


@dataclass(frozen=True)
class OpenAIRoutes:
    replies: Replies
    api_keys: ApiKeys
    model: str
    # Whether the backends answer (the gateway's readiness), for /readyz.
    ready: Callable[[], bool]

    def app(self) -> Starlette:
        routes = [
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/models/{model:path}", self.model_info, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
        ]
        return Starlette(routes=routes, exception_handlers={HTTPException: self._http_exception})

    async def chat_completions(self, request: Request) -> Response:
        try:
            tenant, body = await self._admit(request, ChatCompletionRequest)
            dialog = body.dialog()
            sampling = body.chat_sampling()
            self.replies.admit(tenant)
        except Exception as error:
            return error_response(error)
        request_id = uuid.uuid4().hex
        reply = ReplyRequest(
            request_id=request_id,
            tenant=tenant.name,
            context=dialog,
            generation=GenerationRequest(request_id, sampling, dialog=dialog),
        )
        formatter = OpenAIReply(Kind.CHAT, body.model, body.logprobs, body.stream)
        too_long = ("messages", "shorten the messages, or send less of the dialog so far")
        return await self._respond(request, tenant, reply, formatter, body.include_usage(), too_long)

    async def completions(self, request: Request) -> Response:
        try:
            tenant, body = await self._admit(request, CompletionRequest)
            prompt = body.text_prompt()
            sampling = body.completion_sampling()
            self.replies.admit(tenant)
        except Exception as error:
            return error_response(error)
        request_id = uuid.uuid4().hex
        reply = ReplyRequest(
            request_id=request_id,
            tenant=tenant.name,
            # A prompt is judged as a one-message user dialog, as on gRPC's Complete.
            context=(Message(Role.USER, prompt),),
            generation=GenerationRequest(request_id, sampling, prompt=prompt, echo=body.echo),
        )
        formatter = OpenAIReply(Kind.COMPLETION, body.model, body.logprobs is not None, body.stream)
        too_long = ("prompt", "shorten the prompt")
        return await self._respond(request, tenant, reply, formatter, body.include_usage(), too_long)

    async def models(self, request: Request) -> Response:
        try:
            self.api_keys.authenticate(request.headers.items())
        except Exception as error:
            return error_response(error)
        return JSONResponse({"object": "list", "data": [self._model_object()]})

    async def model_info(self, request: Request) -> Response:
        try:
            self.api_keys.authenticate(request.headers.items())
            self._check_model(request.path_params["model"])
        except Exception as error:
            return error_response(error)
        return JSONResponse(self._model_object())

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "serving"})

    async def readyz(self, request: Request) -> Response:
        if self.ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready: a backend does not answer"}, status_code=503)

    # What the routes share.

    async def _admit(self, request: Request, schema: type[Body]) -> tuple[Tenant, Body]:
        """The tenant (401 first, as OpenAI does), then the validated body and its model (404)."""
        tenant = self.api_keys.authenticate(request.headers.items())
        body = schema.model_validate(json.loads(await request.body()))
        self._check_model(body.model)
        return tenant, body

    def _check_model(self, model: str) -> None:
        if model != self.model:
            raise ModelNotFound(model, self.model)

    def _model_object(self) -> dict[str, Any]:
        return {"id": self.model, "object": "model", "created": 0, "owned_by": "llamagate"}

    async def _respond(
        self,
        request: Request,
        tenant: Tenant,
        reply_request: ReplyRequest,
        formatter: OpenAIReply,
        usage: bool,
        too_long: tuple[str, str],
    ) -> Response:
        """`too_long`: the field a prompt beyond the model's context is told about, and the advice."""
        reply = ReplyTask.start(self.replies, tenant, reply_request)
        events = reply.events()
        headers = {"x-request-id": reply_request.request_id}
        gone = asyncio.create_task(_disconnected(request))
        try:
            # Up to the first text or the end: errors until then (the input check, the safety or
            # inference service down, a prompt beyond the context) get their HTTP status.
            opening = await _unless_gone(_opening(events), gone, reply)
            if not formatter.stream:
                for event in opening:
                    formatter.chunks(event)
                await _unless_gone(_feed(events, formatter), gone, reply)
                return JSONResponse(formatter.whole(), headers=headers)
        except Exception as error:
            await reply.close()
            if isinstance(error, PromptTooLong):
                error = error.named(*too_long)
            return error_response(error)
        except BaseException:
            # The handler itself is cancelled (the drain ran out of time): the reply goes with it.
            reply.abandon()
            raise
        finally:
            gone.cancel()
        # From here on Starlette watches for the disconnect: it cancels the body, which drops the reply.
        return StreamingResponse(
            _server_sent(reply, opening, events, formatter, usage),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", **headers},
        )

    async def _http_exception(self, request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        http = (
            not_found(f"no route {request.method} {request.url.path}", "unknown_url")
            if error.status_code == 404
            else HttpError(
                error.status_code,
                f"{request.method} {request.url.path}: {error.detail}",
                "invalid_request_error",
            )
        )
        return JSONResponse(http.body(), status_code=http.status, headers=http.headers())


async def _opening(events: AsyncGenerator[ReplyEvent, None]) -> list[ReplyEvent]:
    """The events up to and including the first text or the Done (the verdicts before them say
    nothing to an OpenAI client yet)."""
    opening: list[ReplyEvent] = []
    async for event in events:
        opening.append(event)
        if isinstance(event, Text | Done):
            break
    return opening


async def _feed(events: AsyncGenerator[ReplyEvent, None], formatter: OpenAIReply) -> None:
    async for event in events:
        formatter.chunks(event)


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone (the body was read already: only a disconnect remains)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_gone(work: Awaitable[T], gone: asyncio.Task[None], reply: ReplyTask) -> T:
    """Await `work`; a disconnect meanwhile cancels the reply, which then ends with its Done."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not task.done():
        reply.cancel()
    return await task


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


async def _server_sent(
    reply: ReplyTask,
    opening: list[ReplyEvent],
    events: AsyncGenerator[ReplyEvent, None],
    formatter: OpenAIReply,
    usage: bool,
) -> AsyncGenerator[bytes, None]:
    """The SSE body. A client that disconnects cancels this generator; the reply is then dropped."""
    try:
        for event in opening:
            for chunk in formatter.chunks(event):
                yield _sse(chunk)
        async for event in events:
            for chunk in formatter.chunks(event):
                yield _sse(chunk)
        if usage:
            yield _sse(formatter.usage_chunk())
        yield b"data: [DONE]\n\n"
    except Exception as error:
        # The 200 is out: the error travels as an event (the openai SDK raises it as APIError),
        # and no [DONE] follows.
        yield _sse(from_exception(error).body())
    finally:
        # Not awaited: this may run inside the cancel scope of a disconnect.
        reply.abandon()


def openai_app(routes: OpenAIRoutes, tracer: trace.Tracer, meter: metrics.Meter | None = None) -> ASGIApp:
    """The routes under the HTTP server span and request metrics."""
    return HttpTelemetry(routes.app(), tracer, HttpMetrics.create(meter) if meter is not None else None)
