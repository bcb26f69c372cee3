"""The turn state machine of a Chat stream, driven directly through its inputs."""

import pytest
from opentelemetry import trace

from llamagate.v1 import chat_service_pb2 as chat_pb
from llamagate.v1 import types_pb2
from services.common.errors import FailedPrecondition
from services.gateway.audit import AuditSink
from services.gateway.auth import Tenant
from services.gateway.chat_turns import ChatTurns, ClientClosed, ClientMessage, StreamLimits, TurnState
from services.gateway.pipeline import Accepted, Done, PipelineConfig, ReplyPipeline
from services.gateway.ratelimit import RateLimiter
from services.gateway.replies import Replies
from tests.unit.gateway.scripted_backends import ScriptedGeneration, ScriptedInference, ScriptedSafety

START = chat_pb.ChatRequest(
    start=chat_pb.ChatStart(messages=[types_pb2.Message(role=types_pb2.ROLE_USER, content="hello")])
)
TURN = chat_pb.ChatRequest(turn=chat_pb.ChatTurn(content="again"))
CANCEL = chat_pb.ChatRequest(cancel=chat_pb.ChatCancel())


@pytest.fixture
def turns(tmp_path) -> ChatTurns:
    inference = ScriptedInference(ScriptedGeneration(["One.", " Two."]))
    pipeline = ReplyPipeline(PipelineConfig(), inference, ScriptedSafety(), AuditSink(tmp_path))
    replies = Replies(pipeline, RateLimiter(), None, trace.NoOpTracer())
    return ChatTurns(replies, Tenant("t"), StreamLimits(), lambda: None)


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


async def test_a_turn_while_a_reply_streams_is_refused(turns: ChatTurns) -> None:
    events = turns.events()
    turns.inputs.put_nowait(ClientMessage(START))
    assert isinstance(await anext(events), Accepted)
    turns.inputs.put_nowait(ClientMessage(TURN))
    with pytest.raises(FailedPrecondition, match="while a reply is streaming"):
        async for _ in events:
            pass
    await turns.close()
