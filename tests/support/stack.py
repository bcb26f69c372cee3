"""The three real services (inference, safety, gateway) on loopback, for integration tests.

Usage in a test module (one stack per module; starting one takes a few seconds):

    from tests.support.stack import StackConfig, stack_fixture

    stack = stack_fixture()                              # demo model, default policy
    strict = stack_fixture(StackConfig(gateway_args=("--moderation", "buffer")))

    def test_something(stack):
        with stack.gateway_channel() as channel:
            stub = chat_service_pb2_grpc.ChatServiceStub(channel)
            for event in stub.Chat(iter(requests), metadata=stack.metadata): ...

`Stack` exposes each `ServiceProcess` (target, log file, terminate/kill), the dev API key, the
audit directory, and `inference_log()` (the inference service's log, which has one
`request_finished request_id=... finish_reason=...` line per request). Outside pytest,
`running_stack(workdir, config)` is the same as a context manager. Every process is started in its
own process group and killed on teardown, even when a test fails.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.processes import ROOT, ServiceProcess, free_port, python_module, wait_serving

DEMO_DIR = ROOT / ".work" / "demo"
DEFAULT_POLICY = ROOT / "services" / "safety" / "policies" / "llama_guard.yaml"


def telemetry_flags(service: str) -> tuple[str, ...]:
    """Quiet telemetry flags for `service`'s command line: no metrics port (tests run many stacks
    side by side), text logs. A test that wants either passes its own flags after these."""
    if service not in ("inference", "safety", "gateway"):
        raise ValueError(f"unknown service {service!r}")
    return ("--metrics-port", "0", "--log-format", "text")


def missing_services() -> list[str]:
    """Service entry points (python -m services.X) that do not exist in this checkout."""
    return [
        name
        for name in ("inference", "safety", "gateway")
        if not (ROOT / "services" / name / "__main__.py").is_file()
    ]


def demo_model(out_dir: Path = DEMO_DIR) -> tuple[Path, Path]:
    """(checkpoint dir, tokenizer path) of the demo model, written once (as `make demo` does).

    Runs in a subprocess so the test process does not need to import torch.
    """
    subprocess.run(
        python_module("services.inference.demo", "--out", str(out_dir)),
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out_dir / "llama-demo", out_dir / "tokenizer.model"


@dataclass(frozen=True)
class TlsFiles:
    """A test PKI: one CA that signs the servers' certificate (localhost, 127.0.0.1) and a client's."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            self.ca.read_bytes(), self.client_key.read_bytes(), self.client_cert.read_bytes()
        )


def make_test_pki(directory: Path) -> TlsFiles:
    """Create a CA, a server and a client certificate with the openssl command line."""
    directory.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=llamagate-test-ca",
            "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    for name, extension in (
        ("server", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        (directory / f"{name}.ext").write_text(extension + "\n")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=llamagate-test-{name}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr")  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem")  # fmt: skip
    return TlsFiles(
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
        directory / "client.pem",
        directory / "client.key",
    )


@dataclass(frozen=True)
class StackConfig:
    """What to run. None means the demo model / the default Llama Guard policy."""

    ckpt_dir: Path | None = None
    tokenizer_path: Path | None = None
    policy: Path | None = None
    inference_args: tuple[str, ...] = ("--device", "cpu", "--max-seq-len", "512", "--max-batch-size", "8")
    safety_args: tuple[str, ...] = ()
    gateway_args: tuple[str, ...] = ()
    # Tenants of the API keys file, in the gateway's format; the stack adds its dev key to "dev".
    tenants: dict[str, dict] = field(default_factory=dict)
    # mTLS on every hop (client -> gateway -> backends) when set.
    tls: TlsFiles | None = None
    start_timeout_s: float = 180.0
    # The gateway's --safety-timeout-s (gateway_args may override it). Its 2 s default is for
    # serving hardware; here one classifier thread on a CPU without bf16 instructions, sharing
    # two cores with the other services, judges a 7,000-token prompt in 1.5-2 s.
    safety_timeout_s: float = 15.0


@dataclass
class Stack:
    inference: ServiceProcess
    safety: ServiceProcess
    gateway: ServiceProcess
    api_key: str
    audit_dir: Path
    workdir: Path
    tls: TlsFiles | None = None
    # The gateway's OpenAI-compatible HTTP port (bound before its gRPC health says SERVING).
    http_port: int = 0

    @property
    def http_base_url(self) -> str:
        """Base URL of the OpenAI-compatible API, as the `openai` client takes it."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.http_port}/v1"

    @property
    def gateway_target(self) -> str:
        return self.gateway.target

    @property
    def inference_target(self) -> str:
        return self.inference.target

    @property
    def safety_target(self) -> str:
        return self.safety.target

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Call metadata carrying the dev tenant's API key."""
        return (("authorization", f"Bearer {self.api_key}"),)

    def gateway_channel(self) -> grpc.Channel:
        """A channel to the gateway (with the test client certificate when the stack runs mTLS)."""
        if self.tls is None:
            return grpc.insecure_channel(self.gateway_target)
        return grpc.secure_channel(self.gateway_target, self.tls.channel_credentials())

    def inference_log(self) -> str:
        return self.inference.log_path.read_text(errors="replace")

    def processes(self) -> list[ServiceProcess]:
        return [self.gateway, self.safety, self.inference]

    def stop(self) -> None:
        for process in self.processes():
            process.terminate(timeout_s=15)


def write_api_keys(path: Path, api_key: str, tenants: dict[str, dict]) -> None:
    all_tenants = {name: dict(spec) for name, spec in tenants.items()}
    dev = all_tenants.setdefault("dev", {})
    dev["keys"] = [*dev.get("keys", []), {"plain": api_key}]
    path.write_text(yaml.safe_dump({"tenants": all_tenants}))


@contextlib.contextmanager
def running_stack(workdir: Path, config: StackConfig | None = None) -> Iterator[Stack]:
    """Start inference and safety (in parallel), then the gateway; stop all three on exit."""
    config = config or StackConfig()
    if missing := missing_services():
        raise RuntimeError(f"cannot start the stack: no entry point for {', '.join(missing)}")
    workdir.mkdir(parents=True, exist_ok=True)
    if config.ckpt_dir is None or config.tokenizer_path is None:
        ckpt_dir, tokenizer = demo_model()
    else:
        ckpt_dir, tokenizer = config.ckpt_dir, config.tokenizer_path
    api_key = f"test-{secrets.token_hex(8)}"
    keys_file = workdir / "api_keys.yaml"
    write_api_keys(keys_file, api_key, config.tenants)
    audit_dir = workdir / "audit"
    inference_port, safety_port, gateway_port, http_port = free_port(), free_port(), free_port(), free_port()
    common: tuple[str, ...] = ("--host", "127.0.0.1")
    backend_tls: tuple[str, ...] = ()
    if config.tls is not None:
        common += ("--tls-cert", str(config.tls.server_cert), "--tls-key", str(config.tls.server_key),
                   "--tls-client-ca", str(config.tls.ca))  # fmt: skip
        backend_tls = ("--backend-ca", str(config.tls.ca), "--backend-cert", str(config.tls.client_cert),
                       "--backend-key", str(config.tls.client_key))  # fmt: skip
    inference = ServiceProcess(
        "inference",
        python_module(
            "services.inference",
            "--ckpt-dir", str(ckpt_dir),
            "--tokenizer-path", str(tokenizer),
            "--port", str(inference_port),
            *common,
            *telemetry_flags("inference"),
            *config.inference_args,
        ),
        inference_port,
        workdir / "inference.log",
    )  # fmt: skip
    safety = ServiceProcess(
        "safety",
        python_module(
            "services.safety",
            "--policy", str(config.policy or DEFAULT_POLICY),
            "--classifier", "embedded",
            # One intra-op thread: three services share this machine's cores, and a second
            # OpenMP thread that is not scheduled stalls every op at its barrier (checks of
            # 5 ms took 100-500 ms on 2 busy cores, long enough for a generation to finish
            # before the gateway could cancel it).
            "--threads", "1",
            "--port", str(safety_port),
            *common,
            *telemetry_flags("safety"),
            *config.safety_args,
        ),
        safety_port,
        workdir / "safety.log",
    )  # fmt: skip
    gateway = ServiceProcess(
        "gateway",
        python_module(
            "services.gateway",
            "--inference-target", f"127.0.0.1:{inference_port}",
            "--safety-target", f"127.0.0.1:{safety_port}",
            "--api-keys", str(keys_file),
            "--audit-dir", str(audit_dir),
            "--port", str(gateway_port),
            "--http-port", str(http_port),
            "--safety-timeout-s", str(config.safety_timeout_s),
            *common,
            *telemetry_flags("gateway"),
            *backend_tls,
            *config.gateway_args,
        ),
        gateway_port,
        workdir / "gateway.log",
    )  # fmt: skip
    stack = Stack(inference, safety, gateway, api_key, audit_dir, workdir, config.tls, http_port)
    try:
        for process in (inference, safety):
            process.start(wait=False)
        for process in (inference, safety):
            _wait(process, config.start_timeout_s, config.tls)
        gateway.start(wait=False)
        _wait(gateway, config.start_timeout_s, config.tls)
        yield stack
    finally:
        stack.stop()


def _wait(process: ServiceProcess, timeout_s: float, tls: TlsFiles | None = None) -> None:
    try:
        if tls is None:
            wait_serving(process.target, timeout_s=timeout_s, proc=process.proc)
        else:
            wait_serving_tls(process, tls, timeout_s)
    except Exception as error:
        raise RuntimeError(f"{process.name} failed to start ({error}); log:\n{process.log_tail()}") from None


def require_services() -> None:
    """Skip the calling test (with the reason) while a service's entry point is not in the checkout."""
    missing = missing_services()
    if missing:
        pytest.skip(
            f"services not in this checkout yet: {', '.join(f'services/{m}/__main__.py' for m in missing)}"
        )


def wait_serving_tls(process: ServiceProcess, tls: TlsFiles, timeout_s: float) -> None:
    """wait_serving over mTLS (bounded; fails early if the process exits)."""
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    with grpc.secure_channel(process.target, tls.channel_credentials()) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.proc is not None and process.proc.poll() is not None:
                raise RuntimeError(f"{process.name} exited with {process.proc.returncode} before serving")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = f"status {reply.status}"
            except grpc.RpcError as error:
                last = f"{error.code().name}: {error.details()}"
            time.sleep(0.2)
    raise TimeoutError(f"{process.target} not SERVING over mTLS after {timeout_s}s ({last})")


def stack_fixture(
    config: StackConfig | None = None, scope: Literal["module", "session", "function"] = "module"
) -> Any:
    """A pytest fixture yielding a running Stack (module-scoped by default)."""

    @pytest.fixture(scope=scope)
    def _stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
        require_services()
        with running_stack(tmp_path_factory.mktemp("stack"), config) as stack:
            yield stack

    return _stack
