"""The turn state machine of a Chat stream, driven directly through its inputs."""

from collections.abc import AsyncIterator

import pytest
from opentelemetry import trace

from llamagate.v1 import chat_service_pb2 as chat_pb
from llamagate.v1 import types_pb2
from services.common.errors import Overloaded
from services.gateway.audit import AuditSink
from services.gateway.auth import Tenant
from services.gateway.backends import FinishReason
from services.gateway.chat_turns import ChatTurns, ClientClosed, ClientMessage, StreamLimits, TurnState
from services.gateway.pipeline import Accepted, Done, PipelineConfig, ReplyEvent, ReplyPipeline
from services.gateway.ratelimit import RateLimiter
from services.gateway.replies import Replies
from tests.unit.gateway.scripted_backends import ScriptedGeneration, ScriptedInference, ScriptedSafety

START = chat_pb.ChatRequest(
    start=chat_pb.ChatStart(messages=[types_pb2.Message(role=types_pb2.ROLE_USER, content="hello")])
)
TURN = chat_pb.ChatRequest(turn=chat_pb.ChatTurn(content="again"))
CANCEL = chat_pb.ChatRequest(cancel=chat_pb.ChatCancel())


def _machine(tmp_path, limits: StreamLimits | None = None) -> tuple[ChatTurns, ScriptedInference]:
    inference = ScriptedInference(ScriptedGeneration(["One.", " Two."]))
    pipeline = ReplyPipeline(PipelineConfig(), inference, ScriptedSafety(), AuditSink(tmp_path))
    replies = Replies(pipeline, RateLimiter(), None, trace.NoOpTracer())
    return ChatTurns(replies, Tenant("t"), limits or StreamLimits(), lambda: None), inference


@pytest.fixture
def turns(tmp_path) -> ChatTurns:
    return _machine(tmp_path)[0]


async def test_a_turn_replies_then_awaits_the_next_and_a_close_ends_the_stream(turns: ChatTurns) -> None:
    events = turns.events()
    turns.inputs.put_nowait(ClientMessage(CANCEL))  # no reply streams: ignored
    turns.inputs.put_nowait(ClientMessage(START))
    assert isinstance(await anext(events), Accepted)
    assert turns.state is TurnState.REPLYING
    while not isinstance(await anext(events), Done):
        assert turns.state is TurnState.REPLYING
    turns.inputs.put_nowait(ClientClosed())
    assert [e async for e in events] == []
    assert turns.state is TurnState.CLOSED


async def test_a_client_that_closes_mid_reply_gets_the_rest_of_it(turns: ChatTurns) -> None:
    events = turns.events()
    turns.inputs.put_nowait(ClientMessage(START))
    assert isinstance(await anext(events), Accepted)
    turns.inputs.put_nowait(ClientClosed())
    rest = [e async for e in events]
    assert isinstance(rest[-1], Done) and rest[-1].reply_text == "One. Two."
    assert turns.state is TurnState.CLOSED


def _turn(content: str, **sampling: object) -> chat_pb.ChatRequest:
    params = types_pb2.SamplingParams(**sampling) if sampling else None  # type: ignore[arg-type]
    return chat_pb.ChatRequest(turn=chat_pb.ChatTurn(content=content, sampling=params))


async def _replies_of(events: AsyncIterator[ReplyEvent]) -> list[list[ReplyEvent]]:
    """The events grouped per reply (each group from its Accepted to its Done)."""
    replies: list[list[ReplyEvent]] = []
    async for event in events:
        if isinstance(event, Accepted):
            replies.append([])
        replies[-1].append(event)
    return replies


async def test_turns_sent_ahead_are_queued_and_answered_in_order(tmp_path) -> None:
    turns, inference = _machine(tmp_path)
    # All at once, as grpcurl sends its input: the turns arrive while the first reply streams.
    for request in (START, _turn("first"), _turn("second"), ClientClosed()):
        turns.inputs.put_nowait(request if isinstance(request, ClientClosed) else ClientMessage(request))
    replies = await _replies_of(turns.events())
    assert [type(r[0]) for r in replies] == [Accepted] * 3
    assert [r[-1].finish_reason for r in replies] == [FinishReason.STOP] * 3  # type: ignore[union-attr]
    assert len({r[0].request_id for r in replies}) == 3  # type: ignore[union-attr]
    # Each reply saw the dialog up to its own turn, the replies before it included.
    asked = [[m.content for m in request.dialog] for request in inference.requests]
    assert asked == [
        ["hello"],
        ["hello", "One. Two.", "first"],
        ["hello", "One. Two.", "first", "One. Two.", "second"],
    ]
    assert turns.state is TurnState.CLOSED


async def test_a_turn_past_the_queue_bound_is_resource_exhausted(tmp_path) -> None:
    turns, _ = _machine(tmp_path, StreamLimits(max_queued_turns=2))
    for request in (START, _turn("a"), _turn("b"), _turn("c")):
        turns.inputs.put_nowait(ClientMessage(request))
    with pytest.raises(Overloaded) as raised:
        async for _ in turns.events():
            pass
    assert raised.value.reason == "TURN_QUEUE_FULL"
    assert raised.value.metadata == {"max_queued_turns": "2"}
    await turns.close()


async def test_a_cancel_ends_the_reply_in_flight_and_the_queued_turn_is_answered(tmp_path) -> None:
    turns, inference = _machine(tmp_path)
    for request in (START, _turn("next"), CANCEL):
        turns.inputs.put_nowait(ClientMessage(request))
    turns.inputs.put_nowait(ClientClosed())
    replies = await _replies_of(turns.events())
    assert [r[-1].finish_reason for r in replies] == [  # type: ignore[union-attr]
        FinishReason.CANCELLED,
        FinishReason.STOP,
    ]
    # The cancelled reply released nothing: it left the dialog with its user message.
    assert [m.content for m in inference.requests[-1].dialog] == ["next"]


async def test_a_turn_merges_its_sampling_over_the_starts_field_by_field(tmp_path) -> None:
    turns, inference = _machine(tmp_path)
    start = chat_pb.ChatRequest()
    start.CopyFrom(START)
    start.start.sampling.CopyFrom(types_pb2.SamplingParams(logprobs=True, stop=["END"], temperature=0.2))
    for request in (start, _turn("a", temperature=0.9), _turn("b", logprobs=False, stop=["X"]), _turn("c")):
        turns.inputs.put_nowait(ClientMessage(request))
    turns.inputs.put_nowait(ClientClosed())
    await _replies_of(turns.events())
    sampled = [request.sampling for request in inference.requests]
    assert [(s.temperature, s.logprobs, s.stop) for s in sampled] == [
        (pytest.approx(0.2), True, ("END",)),
        (pytest.approx(0.9), True, ("END",)),  # only temperature set: logprobs and stop kept
        (pytest.approx(0.2), False, ("X",)),  # each turn starts again from the start's
        (pytest.approx(0.2), True, ("END",)),
    ]
