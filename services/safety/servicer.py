"""The gRPC edge of the safety service: protobuf <-> domain, nothing else."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

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

    def _record(self, verdict: Verdict, duration_s: float, mode: str) -> None:
        if self.metrics is not None:
            violated = [c.code for c in verdict.categories if c.violated]
            self.metrics.record_verdict(
                verdict.direction.value, violated, duration_s, verdict.judged_tokens, mode=mode
            )

    async def Check(self, request: pb.CheckRequest, context: grpc.aio.ServicerContext) -> pb.CheckResponse:
        items = [item_from_pb(item, f"items[{i}]") for i, item in enumerate(request.items)]
        start = time.perf_counter()
        verdicts = await self.checker.check(items)
        elapsed = time.perf_counter() - start
        for verdict in verdicts:
            # The items of one call are judged together; each gets an equal share of the wait.
            self._record(verdict, elapsed / len(verdicts), "unary")
        return pb.CheckResponse(verdicts=[verdict_to_pb(v) for v in verdicts])

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
                self._record(verdict, time.perf_counter() - start, "stream")
                yield pb.CheckStreamResponse(chunk_index=index, verdict=verdict_to_pb(verdict))
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
