"""The gRPC edge of the safety service: protobuf <-> domain, nothing else."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence

import grpc

from llamagate.v1 import safety_service_pb2 as pb
from llamagate.v1 import safety_service_pb2_grpc as pb_grpc
from services.common.convert import direction_from_pb, messages_from_pb, verdict_to_pb
from services.common.errors import FieldViolation, InvalidRequest
from services.common.verdicts import Verdict
from services.safety.metrics import SafetyMetrics
from services.safety.moderation import OutputStream, SafetyChecker
from services.safety.verdict import CheckItem


def item_from_pb(item: pb.CheckItem, field: str) -> CheckItem:
    direction = direction_from_pb(item.direction)
    if direction is None:
        raise InvalidRequest(
            f"{field}.direction is not set: use DIRECTION_INPUT or DIRECTION_OUTPUT",
            [FieldViolation(f"{field}.direction", "unspecified")],
        )
    return CheckItem(messages_from_pb(item.dialog.messages, f"{field}.dialog.messages"), direction)


class SafetyServicer(pb_grpc.SafetyServiceServicer):
    def __init__(self, checker: SafetyChecker, metrics: SafetyMetrics | None = None) -> None:
        self.checker = checker
        self.metrics = metrics

    def _record(self, verdicts: Sequence[Verdict], duration_s: float, mode: str) -> None:
        """Count each verdict, `duration_s` the time spent judging each, once its reply is on its way.

        Recording is a few OpenTelemetry measurements per verdict, about 60 us a check on a busy
        core, which no caller needs to wait for: it runs on the loop's next turn, after the reply
        was handed to gRPC.
        """
        if self.metrics is not None:
            asyncio.get_running_loop().call_soon(self._count, verdicts, duration_s, mode)

    def _count(self, verdicts: Sequence[Verdict], duration_s: float, mode: str) -> None:
        assert self.metrics is not None
        for verdict in verdicts:
            self.metrics.record_verdict(
                verdict.direction.value, verdict.violated, duration_s, verdict.judged_tokens, mode=mode
            )

    async def Check(self, request: pb.CheckRequest, context: grpc.aio.ServicerContext) -> pb.CheckResponse:
        items = [item_from_pb(item, f"items[{i}]") for i, item in enumerate(request.items)]
        start = time.perf_counter()
        verdicts = await self.checker.check(items)
        # The items of one call are judged together; each gets an equal share of the wait.
        self._record(verdicts, (time.perf_counter() - start) / len(verdicts), "unary")
        response = pb.CheckResponse()
        for verdict in verdicts:
            verdict_to_pb(verdict, response.verdicts.add())
        return response

    async def CheckStream(
        self, request_iterator: AsyncIterator[pb.CheckStreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.CheckStreamResponse]:
        stream: OutputStream | None = None
        async for request in request_iterator:
            action = request.WhichOneof("action")
            if action == "context":
                if stream is not None:
                    raise InvalidRequest(
                        "context was already sent: send it once, first, then only chunks",
                        [FieldViolation("context", "sent twice")],
                    )
                stream = self.checker.output_stream(
                    messages_from_pb(request.context.messages, "context.messages")
                )
            elif action == "chunk":
                if stream is None:
                    raise InvalidRequest(
                        "a chunk came before the context: send the dialog as 'context' first",
                        [FieldViolation("chunk", "before context")],
                    )
                start = time.perf_counter()
                index, verdict = await stream.add_chunk(request.chunk)
                self._record([verdict], time.perf_counter() - start, "stream")
                response = pb.CheckStreamResponse(chunk_index=index)
                verdict_to_pb(verdict, response.verdict)
                yield response
            else:
                raise InvalidRequest(
                    "a CheckStreamRequest must set 'context' or 'chunk'",
                    [FieldViolation("action", "not set")],
                )

    async def GetPolicy(
        self, request: pb.GetPolicyRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPolicyResponse:
        policy = self.checker.policy
        return pb.GetPolicyResponse(
            name=policy.name,
            categories=[
                pb.PolicyCategory(
                    code=c.code,
                    name=c.name,
                    description=c.description,
                    threshold=c.threshold,
                    enabled=c.enabled,
                )
                for c in policy.categories
            ],
            classifier_id=self.checker.classifier.id,
            classifier_version=self.checker.classifier.version,
        )
