"""Concurrent bidirectional Chat streams against a gateway: the load driver of the reliability
suite and of `bench/load_bench.py`.

Each of N workers keeps one Chat stream busy for the whole run: a `ChatStart`, then `ChatTurn`s
until the run's time is up (a new stream every `turns_per_stream` replies, so opening streams is
exercised too). Every reply ends either with `Done` (a finish reason) or with a gRPC status; both
are counted. Times are taken on the client: TTFT is from the write of the start/turn to the first
`TextDelta`.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

from llamagate.v1 import chat_service_pb2 as chat_pb
from llamagate.v1 import chat_service_pb2_grpc as chat_grpc
from llamagate.v1 import types_pb2

# Statuses a reply may end with under load that are documented outcomes, not failures
# (docs/reliability.md): shed load with RetryInfo.
SHED_STATUSES = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED})

OK_FINISHES = frozenset({"FINISH_REASON_STOP", "FINISH_REASON_LENGTH", "FINISH_REASON_SAFETY"})

PROMPTS = (
    "Tell me a story about a garden.",
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain how a bicycle works.",
)


@dataclass(frozen=True)
class LoadConfig:
    target: str
    metadata: tuple[tuple[str, str], ...]
    streams: int = 64
    duration_s: float = 20.0
    max_gen_len: int = 8
    turns_per_stream: int = 4
    # Each reply's deadline; a reply slower than this ends DEADLINE_EXCEEDED (counted as unexpected).
    reply_timeout_s: float = 120.0
    channels: int = 4
    retry_backoff_s: float = 0.2
    credentials: grpc.ChannelCredentials | None = None


@dataclass(frozen=True)
class ReplyOutcome:
    """One reply: `finish` is a FinishReason name when it ended with Done, else the status code name."""

    finish: str
    ttft_s: float | None
    tokens: int
    duration_s: float
    error: str = ""
    request_id: str = ""
    # The texts of the TextDeltas the client received, in order (also for a reply that failed).
    deltas: tuple[str, ...] = ()
    ended_at: float = 0.0  # time.monotonic() when the reply ended


@dataclass
class LoadReport:
    config: LoadConfig
    wall_s: float = 0.0
    outcomes: list[ReplyOutcome] = field(default_factory=list)
    streams_opened: int = 0
    # Set (from any thread) to end the run early: workers finish their reply in flight and stop.
    stop_requested: bool = False

    @property
    def finishes(self) -> Counter[str]:
        return Counter(o.finish for o in self.outcomes)

    @property
    def unexpected(self) -> list[ReplyOutcome]:
        ok = OK_FINISHES | {code.name for code in SHED_STATUSES}
        return [o for o in self.outcomes if o.finish not in ok]

    @property
    def ttfts(self) -> list[float]:
        return sorted(o.ttft_s for o in self.outcomes if o.ttft_s is not None)

    def percentile(self, values: Sequence[float], q: float) -> float:
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(q * len(values)))]

    @property
    def tokens(self) -> int:
        return sum(o.tokens for o in self.outcomes)

    def summary(self) -> dict[str, object]:
        ttfts = self.ttfts
        return {
            "streams": self.config.streams,
            "duration_s": round(self.wall_s, 1),
            "streams_opened": self.streams_opened,
            "replies": len(self.outcomes),
            "finishes": dict(self.finishes),
            "unexpected": len(self.unexpected),
            "ttft_p50_s": round(self.percentile(ttfts, 0.50), 4),
            "ttft_p99_s": round(self.percentile(ttfts, 0.99), 4),
            "ttft_mean_s": round(statistics.fmean(ttfts), 4) if ttfts else None,
            "tokens": self.tokens,
            "tokens_per_s": round(self.tokens / self.wall_s, 2) if self.wall_s else 0.0,
            "replies_per_s": round(len(self.outcomes) / self.wall_s, 2) if self.wall_s else 0.0,
        }


def _sampling(config: LoadConfig, seed: int) -> types_pb2.SamplingParams:
    return types_pb2.SamplingParams(max_gen_len=config.max_gen_len, temperature=0.8, seed=seed)


@dataclass
class _Partial:
    """What a reply delivered so far; kept by the caller so a failed reply still reports it."""

    sent: float
    request_id: str = ""
    ttft_s: float | None = None
    tokens: int = 0
    deltas: list[str] = field(default_factory=list)

    def outcome(self, finish: str, error: str = "") -> ReplyOutcome:
        return ReplyOutcome(
            finish,
            self.ttft_s,
            self.tokens,
            time.monotonic() - self.sent,
            error,
            self.request_id,
            tuple(self.deltas),
            time.monotonic(),
        )


async def _reply(call: grpc.aio.StreamStreamCall, request: chat_pb.ChatRequest, partial: _Partial) -> str:
    """Write one start/turn and read its reply up to Done; its finish reason (raises AioRpcError)."""
    await call.write(request)
    while True:
        event = await call.read()
        if event is grpc.aio.EOF:
            raise RuntimeError("the stream ended without Done")
        if event.HasField("accepted"):
            partial.request_id = event.accepted.request_id
        elif event.HasField("delta"):
            partial.tokens += len(event.delta.token_ids)
            partial.deltas.append(event.delta.text)
            if partial.ttft_s is None:
                partial.ttft_s = time.monotonic() - partial.sent
        elif event.HasField("done"):
            return str(types_pb2.FinishReason.Name(event.done.finish_reason))


async def _worker(
    index: int, stub: chat_grpc.ChatServiceStub, config: LoadConfig, stop_at: float, report: LoadReport
) -> None:
    n = 0
    while time.monotonic() < stop_at and not report.stop_requested:
        report.streams_opened += 1
        call = stub.Chat(metadata=config.metadata)
        try:
            for turn in range(config.turns_per_stream):
                if time.monotonic() >= stop_at or report.stop_requested:
                    break
                prompt = PROMPTS[(index + n) % len(PROMPTS)]
                n += 1
                if turn == 0:
                    request = chat_pb.ChatRequest(
                        start=chat_pb.ChatStart(
                            messages=[types_pb2.Message(role=types_pb2.ROLE_USER, content=prompt)],
                            sampling=_sampling(config, index * 100_000 + n),
                        )
                    )
                else:
                    request = chat_pb.ChatRequest(
                        turn=chat_pb.ChatTurn(content=prompt, sampling=_sampling(config, index * 100_000 + n))
                    )
                partial = _Partial(time.monotonic())
                try:
                    finish = await asyncio.wait_for(_reply(call, request, partial), config.reply_timeout_s)
                except grpc.aio.AioRpcError as error:
                    report.outcomes.append(partial.outcome(error.code().name, error.details() or ""))
                    break
                except TimeoutError:
                    report.outcomes.append(partial.outcome("CLIENT_TIMEOUT", "no Done in time"))
                    break
                except RuntimeError as error:
                    report.outcomes.append(partial.outcome("EOF_WITHOUT_DONE", str(error)))
                    break
                outcome = partial.outcome(finish)
                report.outcomes.append(outcome)
                if outcome.finish == "FINISH_REASON_SAFETY":
                    break  # a refused turn: open a fresh conversation
        finally:
            call.cancel()
        if report.outcomes and report.outcomes[-1].finish not in OK_FINISHES:
            # A client's retry backoff: a failed stream is retried on a new stream, not in a hot loop.
            await asyncio.sleep(config.retry_backoff_s)


async def run_load(config: LoadConfig, report: LoadReport | None = None) -> LoadReport:
    """Run the load for `config.duration_s` (replies in flight then finish) and report.

    Outcomes are appended to `report` as they happen, so another thread may watch it.
    """
    report = report or LoadReport(config)
    channels = [
        grpc.aio.insecure_channel(config.target)
        if config.credentials is None
        else grpc.aio.secure_channel(config.target, config.credentials)
        for _ in range(config.channels)
    ]
    start = time.monotonic()
    try:
        stubs = [chat_grpc.ChatServiceStub(c) for c in channels]
        stop_at = start + config.duration_s
        await asyncio.gather(
            *(_worker(i, stubs[i % len(stubs)], config, stop_at, report) for i in range(config.streams))
        )
    finally:
        report.wall_s = time.monotonic() - start
        for channel in channels:
            await channel.close()
    return report
