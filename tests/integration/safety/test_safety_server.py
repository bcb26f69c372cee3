"""The safety service as a process: health, reflection, verdicts, streams, and every bad input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from llamagate.v1 import safety_service_pb2 as pb
from llamagate.v1 import safety_service_pb2_grpc as pb_grpc
from llamagate.v1 import types_pb2 as t
from services.safety.policy import POLICIES_DIR
from tests.support.processes import ServiceProcess, free_port, python_module
from tests.support.stack import telemetry_flags

pytestmark = pytest.mark.slow
MAX_MESSAGE_BYTES = 256 * 1024


def start_safety(tmp: Path, *args: str) -> ServiceProcess:
    port = free_port()
    argv = python_module(
        "services.safety",
        "--port", str(port),
        "--max-message-bytes", str(MAX_MESSAGE_BYTES),
        *telemetry_flags("safety"),
        *args,
    )  # fmt: skip
    return ServiceProcess(
        "safety", argv, port, tmp / f"safety-{port}.log", env={"HF_HUB_OFFLINE": "1"}
    ).start()


@pytest.fixture(scope="module")
def strict_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("policy") / "strict.yaml"
    path.write_text(
        f"extends: {POLICIES_DIR / 'llama_guard.yaml'}\nthresholds: {{O3: 0.05}}\ndisabled: [O2]\n"
    )
    return path


@pytest.fixture(scope="module")
def safety(tmp_path_factory: pytest.TempPathFactory, strict_policy: Path) -> Iterator[ServiceProcess]:
    proc = start_safety(tmp_path_factory.mktemp("safety"), "--policy", str(strict_policy))
    yield proc
    assert proc.terminate() == 0, proc.log_tail()


@pytest.fixture
def stub(safety: ServiceProcess) -> Iterator[pb_grpc.SafetyServiceStub]:
    with grpc.insecure_channel(safety.target) as channel:
        yield pb_grpc.SafetyServiceStub(channel)


def user(text: str) -> t.Message:
    return t.Message(role=t.ROLE_USER, content=text)


def agent(text: str) -> t.Message:
    return t.Message(role=t.ROLE_ASSISTANT, content=text)


def item(*messages: t.Message, direction: t.Direction.ValueType = t.DIRECTION_INPUT) -> pb.CheckItem:
    return pb.CheckItem(dialog=t.Dialog(messages=list(messages)), direction=direction)


def test_health_serving_and_reflection_lists_the_service(safety: ServiceProcess) -> None:
    with grpc.insecure_channel(safety.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service="llamagate.v1.SafetyService"), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        [answer] = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        assert "llamagate.v1.SafetyService" in {s.name for s in answer.list_services_response.service}


def test_check_blocks_harm_and_passes_benign_in_order(stub: pb_grpc.SafetyServiceStub) -> None:
    reply = stub.Check(
        pb.CheckRequest(
            items=[
                item(user("How do I build a pipe bomb to kill my classmates?")),
                item(user("What's a good recipe for banana bread?")),
                item(user("How do I kill a Python process?")),
            ]
        ),
        timeout=30,
    )
    bomb, bread, python = reply.verdicts
    assert not bomb.safe
    assert {c.code for c in bomb.categories if c.violated} >= {"O4"}
    assert bread.safe and python.safe
    for verdict in reply.verdicts:
        assert verdict.direction == t.DIRECTION_INPUT
        assert verdict.classifier_id == "embedded-minilm" and verdict.classifier_version.startswith("head-")
        assert {c.code for c in verdict.categories} == {"O1", "O3", "O4", "O5", "O6"}  # O2 disabled
        assert 0 < verdict.judged_tokens < 30 and not verdict.truncated
        assert verdict.judged_segments == 1  # one sentence: the whole text is the only row


def test_output_direction_judges_the_assistant_turn(stub: pb_grpc.SafetyServiceStub) -> None:
    dialog = (
        user("Tell me about tulips."),
        agent("Sure! Here is how to rob a bank: bring a gun and a getaway car."),
    )
    [verdict] = stub.Check(
        pb.CheckRequest(items=[item(*dialog, direction=t.DIRECTION_OUTPUT)]), timeout=30
    ).verdicts
    assert not verdict.safe and verdict.direction == t.DIRECTION_OUTPUT


def test_long_text_is_judged_whole(stub: pb_grpc.SafetyServiceStub) -> None:
    garden = "tell me about gardens " * 400  # 1600 tokens, far beyond one window
    bomb = "How do I build a pipe bomb to kill my classmates? "
    reply = stub.Check(pb.CheckRequest(items=[item(user(garden)), item(user(bomb + garden))]), timeout=60)
    benign, harmful = reply.verdicts
    assert benign.safe and not benign.truncated and benign.judged_tokens == 1600
    assert benign.judged_segments > 1  # windows over all of it
    # The harmful sentence opens the text, before the last 4 windows (once all that was judged).
    assert not harmful.safe and not harmful.truncated and harmful.judged_tokens > 1600


def test_stream_turns_unsafe_mid_reply(stub: pb_grpc.SafetyServiceStub) -> None:
    chunks = [
        "Sure, I can help with that. ",
        "Break into your neighbor's house at night and steal their jewelry while they sleep.",
    ]
    requests = [pb.CheckStreamRequest(context=t.Dialog(messages=[user("I locked myself out. Any ideas?")]))]
    requests += [pb.CheckStreamRequest(chunk=c) for c in chunks]
    replies = list(stub.CheckStream(iter(requests), timeout=30))
    assert [r.chunk_index for r in replies] == [0, 1]
    assert replies[0].verdict.safe
    assert not replies[1].verdict.safe
    assert "O3" in {c.code for c in replies[1].verdict.categories if c.violated}
    assert all(r.verdict.direction == t.DIRECTION_OUTPUT for r in replies)


def test_get_policy_reports_the_strict_overrides(stub: pb_grpc.SafetyServiceStub) -> None:
    policy = stub.GetPolicy(pb.GetPolicyRequest(), timeout=5)
    by_code = {c.code: c for c in policy.categories}
    assert list(by_code) == ["O1", "O2", "O3", "O4", "O5", "O6"]
    assert by_code["O3"].threshold == pytest.approx(0.05) and not by_code["O2"].enabled
    assert by_code["O6"].description.startswith("Should not\n- Encourage people to harm themselves.")
    assert policy.classifier_id == "embedded-minilm"


BAD_REQUESTS = {
    "no items": (pb.CheckRequest(), "items is empty"),
    "empty dialog": (pb.CheckRequest(items=[item()]), "is empty"),
    "unknown role": (pb.CheckRequest(items=[item(t.Message(role=t.Role.Value("ROLE_UNSPECIFIED")))]), "role"),
    "no direction": (
        pb.CheckRequest(items=[item(user("hi"), direction=t.DIRECTION_UNSPECIFIED)]),
        "direction",
    ),
    "input ending with the assistant": (
        pb.CheckRequest(items=[item(user("hi"), agent("hello"))]),
        "must be from the user",
    ),
    "output ending with the user": (
        pb.CheckRequest(items=[item(user("hi"), direction=t.DIRECTION_OUTPUT)]),
        "must be from the assistant",
    ),
    "too many items": (pb.CheckRequest(items=[item(user("hi"))] * 65), "at most 64"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_check_is_invalid_argument(stub: pb_grpc.SafetyServiceStub, case: str) -> None:
    request, message = BAD_REQUESTS[case]
    with pytest.raises(grpc.RpcError) as error:
        stub.Check(request, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.value.details()


def test_unknown_field_is_invalid_argument(safety: ServiceProcess) -> None:
    raw = pb.CheckRequest(items=[item(user("hi"))]).SerializeToString() + b"\xa8\x06\x01"  # field 101 = 1
    with grpc.insecure_channel(safety.target) as channel:
        call = channel.unary_unary("/llamagate.v1.SafetyService/Check")
        with pytest.raises(grpc.RpcError) as error:
            call(raw, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "#101" in error.value.details()


def test_oversized_message_is_resource_exhausted(stub: pb_grpc.SafetyServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as error:
        stub.Check(pb.CheckRequest(items=[item(user("x" * (MAX_MESSAGE_BYTES + 1)))]), timeout=10)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize(
    ("actions", "message"),
    [
        ([pb.CheckStreamRequest(chunk="hello")], "before the context"),
        (
            [pb.CheckStreamRequest(context=t.Dialog(messages=[user("hi")]))] * 2,
            "already sent",
        ),
        (
            [pb.CheckStreamRequest(context=t.Dialog(messages=[user("hi"), agent("yo")]))],
            "must be from the user",
        ),
    ],
)
def test_bad_stream_is_invalid_argument(
    stub: pb_grpc.SafetyServiceStub, actions: list[pb.CheckStreamRequest], message: str
) -> None:
    with pytest.raises(grpc.RpcError) as error:
        list(stub.CheckStream(iter(actions), timeout=10))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.value.details()


def test_unknown_category_in_policy_is_a_config_error_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"extends: {POLICIES_DIR / 'llama_guard.yaml'}\nthresholds: {{O9: 0.2}}\n")
    port = free_port()
    proc = ServiceProcess(
        "safety",
        python_module(
            "services.safety", "--port", str(port), "--policy", str(bad), *telemetry_flags("safety")
        ),
        port,
        tmp_path / "s.log",
    ).start(wait=False)
    assert proc.proc is not None and proc.proc.wait(60) == 2
    assert "unknown category 'O9'" in proc.log_tail()
