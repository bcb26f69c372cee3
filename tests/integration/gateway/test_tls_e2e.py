"""mTLS on every hop: client -> gateway -> inference and safety, all configured by files."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.integration.gateway.chat_session import ChatSession, start
from tests.support.stack import Stack, StackConfig, make_test_pki, require_services, running_stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_services()
    tls = make_test_pki(tmp_path_factory.mktemp("pki"))
    with running_stack(tmp_path_factory.mktemp("tls-stack"), StackConfig(tls=tls)) as stack:
        yield stack


def test_chat_over_mtls_end_to_end(stack: Stack):
    with ChatSession(stack) as chat:
        chat.send(start("Tell me a story about a garden.", temperature=0.0, max_gen_len=6))
        reply = chat.reply()
    # The reply needed the gateway's mTLS calls to safety (checks) and inference (tokens).
    assert reply.finish_reason in ("FINISH_REASON_STOP", "FINISH_REASON_LENGTH")
    assert reply.safety and reply.safety[0].verdict.safe


@pytest.mark.parametrize("client", ["plaintext", "tls-without-client-certificate"])
def test_clients_without_a_certificate_are_refused(stack: Stack, client: str):
    assert stack.tls is not None
    targets = [stack.gateway_target, stack.inference_target, stack.safety_target]
    for target in targets:
        if client == "plaintext":
            channel = grpc.insecure_channel(target)
        else:
            channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(stack.tls.ca.read_bytes()))
        with channel, pytest.raises(grpc.RpcError) as info:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
