"""Access: the gateway refuses calls without a valid API key; with mTLS on, every service refuses
clients without a certificate of the deployment's CA; no secret ever reaches a log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llamagate.v1 import chat_service_pb2 as chat_pb
from llamagate.v1 import chat_service_pb2_grpc as chat_grpc
from llamagate.v1 import types_pb2
from tests.support.stack import Stack, StackConfig, TlsFiles, make_test_pki, require_services, running_stack

pytestmark = pytest.mark.slow

WRONG_KEY = "sk-wrong-7b1e0c5d9a2f44c3"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[TlsFiles, TlsFiles]:
    """The deployment's PKI and a second, unrelated CA with its own client certificate."""
    return make_test_pki(tmp_path_factory.mktemp("pki")), make_test_pki(tmp_path_factory.mktemp("other-pki"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, pki: tuple[TlsFiles, TlsFiles]) -> Iterator[Stack]:
    require_services()
    config = StackConfig(tls=pki[0], inference_args=("--device", "cpu", "--max-seq-len", "256"))
    with running_stack(tmp_path_factory.mktemp("access"), config) as stack:
        yield stack


def _start() -> chat_pb.ChatRequest:
    return chat_pb.ChatRequest(
        start=chat_pb.ChatStart(
            messages=[types_pb2.Message(role=types_pb2.ROLE_USER, content="Tell me about gardens.")],
            sampling=types_pb2.SamplingParams(max_gen_len=4, temperature=0.0),
        )
    )


def _chat(stack: Stack, metadata: tuple[tuple[str, str], ...]) -> list[chat_pb.ChatResponse]:
    with stack.gateway_channel() as channel:
        return list(chat_grpc.ChatServiceStub(channel).Chat(iter([_start()]), metadata=metadata, timeout=60))


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", f"Bearer {WRONG_KEY}"),),
        (("authorization", WRONG_KEY),),
        (("authorization", "Basic dXNlcjpwYXNz"),),
        (("authorization", "Bearer "),),
    ],
    ids=["none", "wrong", "no-scheme", "basic", "empty"],
)
def test_gateway_refuses_missing_or_wrong_api_keys(
    stack: Stack, metadata: tuple[tuple[str, str], ...]
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _chat(stack, metadata)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with stack.gateway_channel() as channel, pytest.raises(grpc.RpcError) as info:
        list(
            chat_grpc.ChatServiceStub(channel).Complete(
                chat_pb.CompleteRequest(prompt="Once"), metadata=metadata, timeout=30
            )
        )
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_gateway_with_the_right_certificates_works_end_to_end(stack: Stack) -> None:
    events = _chat(stack, stack.metadata)
    assert events[-1].HasField("done")
    assert any(e.HasField("safety") and e.safety.verdict.safe for e in events)


def _credentials(kind: str, pki: tuple[TlsFiles, TlsFiles]) -> grpc.ChannelCredentials | None:
    ours, other = pki
    if kind == "plaintext":
        return None
    if kind == "no-client-certificate":
        return grpc.ssl_channel_credentials(ours.ca.read_bytes())
    # Trusts our servers but presents a client certificate signed by another CA.
    return grpc.ssl_channel_credentials(
        ours.ca.read_bytes(), other.client_key.read_bytes(), other.client_cert.read_bytes()
    )


@pytest.mark.parametrize("kind", ["plaintext", "no-client-certificate", "certificate-of-another-ca"])
@pytest.mark.parametrize("service", ["gateway", "inference", "safety"])
def test_services_refuse_clients_without_our_certificate(
    stack: Stack, pki: tuple[TlsFiles, TlsFiles], service: str, kind: str
) -> None:
    target = {
        "gateway": stack.gateway_target,
        "inference": stack.inference_target,
        "safety": stack.safety_target,
    }
    credentials = _credentials(kind, pki)
    channel = (
        grpc.insecure_channel(target[service])
        if credentials is None
        else grpc.secure_channel(target[service], credentials)
    )
    with channel, pytest.raises(grpc.RpcError) as info:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value


def _secrets(stack: Stack, pki: tuple[TlsFiles, TlsFiles]) -> dict[str, str]:
    found = {"api key": stack.api_key, "wrong api key": WRONG_KEY}
    for files in pki:
        for key in (files.server_key, files.client_key, files.ca.with_name("ca.key")):
            body = [line for line in key.read_text().splitlines() if line and not line.startswith("-----")]
            # Any one line of a PEM body is 64 base64 characters of key material.
            found.update({f"{key.parent.name}/{key.name} line {i}": line for i, line in enumerate(body[:3])})
    return found


def test_no_secret_appears_in_logs_or_audit(stack: Stack, pki: tuple[TlsFiles, TlsFiles]) -> None:
    # Runs last in this module: the calls above (good, wrong and missing keys) have been logged.
    texts: dict[str, str] = {p.name: p.log_path.read_text(errors="replace") for p in stack.processes()}
    assert all(texts.values()), "a service log is empty: the check would prove nothing"
    for path in sorted(Path(stack.audit_dir).glob("*.jsonl")):
        texts[path.name] = path.read_text(errors="replace")
    leaks = [
        f"{name} in {where}"
        for name, secret in _secrets(stack, pki).items()
        for where, text in texts.items()
        if secret in text
    ]
    assert leaks == []
