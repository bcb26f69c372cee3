"""Output moderation, fail-closed and audit durability, end to end, with a scripted model.

The inference service runs a "scripted" checkpoint (see scripted_model.py) whose greedy reply to
any chat turn is SCRIPT followed by filler tokens: it starts benign and turns unsafe in its second
sentence. The safety service runs the embedded classifier with the default Llama Guard policy, which
passes the first sentence and flags the second (O1, Violence and Hate).
The tests run in file order: the last ones kill the gateway (then restart it) and the safety service.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from llamagate.formats.audit import AuditFilter, read_records
from llamagate.v1 import chat_service_pb2 as chat_pb
from llamagate.v1 import chat_service_pb2_grpc as chat_grpc
from llamagate.v1 import types_pb2
from tests.integration.gateway.chat_session import (
    ChatSession,
    finished_line,
    gateway_health,
    rpc_error,
    start,
    turn,
    wait_for_health,
)
from tests.integration.gateway.scripted_model import write_scripted_checkpoint
from tests.support.stack import Stack, StackConfig, demo_model, require_services, running_stack

pytestmark = pytest.mark.slow

BENIGN = "Once upon a time there was a garden."
UNSAFE = "Murder everyone with knives and stab them dead."
SCRIPT = f"{BENIGN} {UNSAFE}"
GREEDY = {"temperature": 0.0}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_services()
    demo_ckpt, tokenizer = demo_model()
    scripted = tmp_path_factory.mktemp("scripted-model")
    write_scripted_checkpoint(demo_ckpt, tokenizer, scripted, SCRIPT, filler_tokens=400)
    config = StackConfig(
        ckpt_dir=scripted,
        tokenizer_path=scripted / "tokenizer.model",
        # Chunks end at sentence boundaries (never at the token cap) and the judged text is kept.
        gateway_args=("--chunk-tokens", "64", "--audit-text"),
    )
    with running_stack(tmp_path_factory.mktemp("moderation-stack"), config) as stack:
        yield stack


def test_output_that_turns_unsafe_is_stopped_and_never_delivered(stack: Stack):
    with ChatSession(stack) as chat:
        chat.send(start("Tell me a story about a garden.", **GREEDY))
        reply = chat.reply()
    assert reply.text.strip() == BENIGN
    assert "Murder" not in reply.text
    assert reply.finish_reason == "FINISH_REASON_SAFETY"
    input_verdict, output_verdict = reply.safety
    assert input_verdict.verdict.safe
    assert not output_verdict.verdict.safe and output_verdict.refusal
    assert output_verdict.verdict.direction == types_pb2.DIRECTION_OUTPUT
    assert [c.code for c in output_verdict.verdict.categories if c.violated] == ["O1"]
    # The generation was cancelled on the inference service, long before its 400 filler tokens.
    assert finished_line(stack, reply.request_id) == "cancelled"
    assert reply.done.usage.completion_tokens < 100

    records = list(read_records(stack.audit_dir, AuditFilter(request_id=reply.request_id)))
    assert [(r["stage"], r["verdict"]) for r in records] == [
        ("input", "safe"),
        ("chunk", "safe"),
        ("chunk", "unsafe"),
    ]
    assert UNSAFE in records[-1]["text"]


def test_reply_that_stays_benign_is_released_and_checked_at_the_end(stack: Stack):
    with ChatSession(stack) as chat:
        chat.send(start("Tell me a story about a garden.", stop=["Murder"], **GREEDY))
        reply = chat.reply()
    assert reply.finish_reason == "FINISH_REASON_STOP"
    assert reply.text.strip() == BENIGN
    assert all(s.verdict.safe for s in reply.safety) and len(reply.safety) == 2
    stages = [r["stage"] for r in read_records(stack.audit_dir, AuditFilter(request_id=reply.request_id))]
    assert stages[0] == "input" and stages[-1] == "final"


def test_kill_9_of_the_gateway_loses_no_record_of_a_released_reply(stack: Stack):
    released = []
    with ChatSession(stack) as chat:
        for i in range(3):
            if i == 0:
                chat.send(start("Tell me a story about a garden.", stop=["Murder"], **GREEDY))
            else:
                chat.send(turn(f"Again, story {i}.", stop=["Murder"]))
            released.append(chat.reply())
        stack.gateway.kill()
    for reply in released:
        records = list(read_records(stack.audit_dir, AuditFilter(request_id=reply.request_id)))
        # Every verdict behind every released event: input, each chunk, and the final one.
        assert [r["stage"] for r in records] == ["input"] + ["chunk"] * len(reply.deltas) + ["final"]
        assert "".join(r["text"] for r in records if r["stage"] == "final") == reply.text
    stack.gateway.start()  # a new process appends to a new audit file
    with ChatSession(stack) as chat:
        chat.send(start("Hello", stop=["Murder"], **GREEDY))
        assert chat.reply().finish_reason == "FINISH_REASON_STOP"


def test_safety_outage_mid_conversation_fails_closed(stack: Stack):
    with ChatSession(stack) as chat:
        chat.send(start("Tell me a story about a garden.", stop=["Murder"], **GREEDY))
        first = chat.reply()
        assert first.finish_reason == "FINISH_REASON_STOP"
        stack.safety.kill()
        chat.send(turn("Tell me another one."))
        events = []
        with pytest.raises(grpc.RpcError) as info:
            while True:
                events.append(chat.next_event())
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "safety service" in info.value.details()
    assert not any(e.HasField("delta") for e in events)  # not one unchecked token
    # Complete fails closed too.
    with stack.gateway_channel() as channel:
        call = chat_grpc.ChatServiceStub(channel).Complete(
            chat_pb.CompleteRequest(prompt="Once upon a time"), metadata=stack.metadata, timeout=30
        )
        assert rpc_error(call).code() == grpc.StatusCode.UNAVAILABLE
    # The gateway itself stays SERVING (it refuses cleanly) and reports the dependency down.
    wait_for_health(stack, "llamagate.v1.SafetyService", "NOT_SERVING")
    assert gateway_health(stack, "llamagate.v1.ChatService") == "SERVING"
