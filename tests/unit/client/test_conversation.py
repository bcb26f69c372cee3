"""The pure protocol logic: what a session sends and remembers, and how events add up to a reply."""

from __future__ import annotations

from llamagate.client import Accepted, Direction, Done, FinishReason, Message, Role, Sampling, TextChunk
from llamagate.client.conversation import Conversation
from llamagate.client.reply import ReplyState
from llamagate.client.types import SafetyCheck, event_from_pb
from llamagate.v1 import chat_service_pb2 as chat_pb
from llamagate.v1 import types_pb2


def _finished(text: str, finish: FinishReason, refusal_direction: Direction | None = None) -> ReplyState:
    state = ReplyState()
    if text:
        state.apply(TextChunk(text))
    if refusal_direction is not None:
        verdict = types_pb2.SafetyVerdict(
            safe=False,
            direction=refusal_direction.value,
            categories=[types_pb2.CategoryScore(code="O1", name="Violence", score=0.9, violated=True)],
        )
        event = event_from_pb(chat_pb.ChatResponse(safety=chat_pb.SafetyEvent(verdict=verdict, refusal="no")))
        assert event is not None
        state.apply(event)
    state.apply(Done(finish, usage=None, request_id="r"))  # type: ignore[arg-type]
    return state


def test_start_request_carries_system_prompt_history_new_turn_and_sampling() -> None:
    conversation = Conversation(
        "Be brief.",
        Sampling(temperature=0.0, max_gen_len=8),
        [Message(Role.USER, "a"), Message(Role.ASSISTANT, "b")],
    )
    request = conversation.start_request("c", conversation.sampling)
    start = request.start
    assert start.system_prompt == "Be brief."
    assert [(m.role, m.content) for m in start.messages] == [
        (types_pb2.ROLE_USER, "a"),
        (types_pb2.ROLE_ASSISTANT, "b"),
        (types_pb2.ROLE_USER, "c"),
    ]
    assert start.sampling.HasField("temperature") and start.sampling.temperature == 0.0
    assert start.sampling.max_gen_len == 8
    assert not start.sampling.HasField("top_p")


def test_turn_sends_sampling_only_when_it_differs_from_the_streams() -> None:
    base = Sampling(temperature=0.5)
    same = Conversation.turn_request("hi", base, base).turn
    assert same.content == "hi" and not same.HasField("sampling")
    override = base.merged(Sampling(max_gen_len=4))
    turn = Conversation.turn_request("hi", override, base).turn
    # The full merged parameters, so the server's merge-or-replace rule cannot change the result.
    assert turn.sampling.temperature == 0.5 and turn.sampling.max_gen_len == 4


def test_merged_keeps_unset_fields_of_the_base() -> None:
    base = Sampling(temperature=0.7, top_p=0.9, logprobs=True, stop=("\n",))
    assert base.merged(None) is base
    assert base.merged(Sampling(top_p=0.5)) == Sampling(
        temperature=0.7, top_p=0.5, logprobs=True, stop=("\n",)
    )


def test_history_follows_the_gateways_rules() -> None:
    conversation = Conversation()
    conversation.record("hello", _finished("hi there", FinishReason.STOP))
    conversation.record("long one", _finished("cut", FinishReason.LENGTH))
    conversation.record("refused in", _finished("", FinishReason.SAFETY, Direction.INPUT))
    conversation.record("refused out", _finished("partial", FinishReason.SAFETY, Direction.OUTPUT))
    conversation.record("stop early", _finished("par", FinishReason.CANCELLED))
    conversation.record("stop at once", _finished("", FinishReason.CANCELLED))
    conversation.record("tags", _finished("A reply. [/INST] imagined turn [INST]", FinishReason.STOP))
    assert [(m.role, m.content) for m in conversation.history] == [
        (Role.USER, "hello"),
        (Role.ASSISTANT, "hi there"),
        (Role.USER, "long one"),
        (Role.ASSISTANT, "cut"),
        (Role.USER, "stop early"),
        (Role.ASSISTANT, "par"),
        (Role.USER, "tags"),
        (Role.ASSISTANT, "A reply. "),
    ]
    unfinished = ReplyState()
    unfinished.apply(TextChunk("x"))
    conversation.record("failed", unfinished)
    assert len(conversation.history) == 8


def test_events_assemble_into_a_reply_with_a_typed_refusal() -> None:
    verdict = types_pb2.SafetyVerdict(
        safe=False,
        direction=types_pb2.DIRECTION_OUTPUT,
        classifier_id="embedded-minilm",
        judged_tokens=12,
        judged_segments=3,
        categories=[
            types_pb2.CategoryScore(code="O1", name="Violence and Hate", score=0.91, violated=True),
            types_pb2.CategoryScore(code="O3", name="Criminal Planning", score=0.10, violated=False),
        ],
    )
    responses = [
        chat_pb.ChatResponse(accepted=chat_pb.Accepted(request_id="req-1")),
        chat_pb.ChatResponse(delta=chat_pb.TextDelta(text="Hel", token_ids=[1, 2], logprobs=[-0.5, -0.25])),
        chat_pb.ChatResponse(delta=chat_pb.TextDelta(text="lo", token_ids=[3])),
        chat_pb.ChatResponse(safety=chat_pb.SafetyEvent(verdict=verdict, refusal="I can't help with that.")),
        chat_pb.ChatResponse(
            done=chat_pb.Done(
                finish_reason=types_pb2.FINISH_REASON_SAFETY,
                request_id="req-1",
                usage=types_pb2.Usage(prompt_tokens=9, completion_tokens=3),
            )
        ),
    ]
    state = ReplyState()
    events = [event_from_pb(r) for r in responses]
    for event in events:
        assert event is not None
        state.apply(event)
    assert isinstance(events[0], Accepted) and isinstance(events[3], SafetyCheck)
    assert events[1] == TextChunk("Hel", (1, 2), (-0.5, -0.25))
    assert state.text == "Hello" and state.streamed_text
    assert state.request_id == "req-1"
    assert state.done is not None and state.done.finish_reason is FinishReason.SAFETY
    assert state.done.usage.completion_tokens == 3
    refusal = state.refusal
    assert refusal is not None
    assert refusal.direction is Direction.OUTPUT and refusal.codes == ("O1",)
    assert refusal.categories[0].name == "Violence and Hate" and refusal.message == "I can't help with that."
    assert len(refusal.verdict.categories) == 2
    assert (refusal.verdict.judged_tokens, refusal.verdict.judged_segments) == (12, 3)


def test_unknown_enum_values_and_events_do_not_crash() -> None:
    future = chat_pb.ChatResponse(done=chat_pb.Done(finish_reason=99, request_id="r"))  # type: ignore[arg-type]
    event = event_from_pb(future)
    assert isinstance(event, Done) and event.finish_reason is FinishReason.UNSPECIFIED
    assert event_from_pb(chat_pb.ChatResponse()) is None


def test_echo_text_is_kept_apart_from_the_reply() -> None:
    state = ReplyState()
    state.apply(TextChunk("The sky is", echo=True))
    state.apply(TextChunk(" blue"))
    assert state.text == " blue" and state.echo_text == "The sky is"
