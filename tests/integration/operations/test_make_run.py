"""`make run` (python -m services.stack) as a platform would try it on loopback: a service killed
with -9 comes back with the same dev key; the gateway's readiness (not its liveness) drops while a
backend does not answer and `llamagate health` names that backend; a revoked key is refused on the
running gateway without a restart."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llamagate.v1 import chat_service_pb2_grpc as chat_grpc
from tests.integration.gateway.chat_session import start
from tests.support.processes import ROOT, free_port, wait_serving
from tests.support.stack import demo_model, require_services

pytestmark = pytest.mark.slow


@dataclass
class MakeRun:
    proc: subprocess.Popen[str]
    workdir: Path
    output: Path
    api_key: str
    gateway: str
    safety: str
    inference: str

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def pid_of(self, service: str) -> int:
        pids = re.findall(rf"started {service} \(pid (\d+)", self.text())
        assert pids, f"no start of {service} in:\n{self.text()}"
        return int(pids[-1])

    def wait_for_output(self, pattern: str, timeout_s: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if match := re.search(pattern, self.text()):
                return match
            assert self.proc.poll() is None, f"the stack exited with {self.proc.returncode}:\n{self.text()}"
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} not printed within {timeout_s}s:\n{self.text()}")


@pytest.fixture(scope="module")
def make_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeRun]:
    require_services()
    ckpt_dir, _ = demo_model()
    workdir = tmp_path_factory.mktemp("make-run")
    ports = {name: free_port() for name in ("gateway", "inference", "safety")}
    output = workdir / "stack.out"
    argv = [sys.executable, "-m", "services.stack", "--demo-dir", str(ckpt_dir.parent), "--workdir",
            str(workdir), *(f"--{name}-port={port}" for name, port in ports.items())]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with output.open("w") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    targets = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    run = MakeRun(proc, workdir, output, "", targets["gateway"], targets["safety"], targets["inference"])
    try:
        run.api_key = run.wait_for_output(r"dev API key: (\S+)", timeout_s=300).group(1)
        yield run
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


def health(target: str, service: str = "") -> str:
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2
            )
        except grpc.RpcError as error:
            return error.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def wait_health(target: str, service: str, status: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    seen = ""
    while time.monotonic() < deadline:
        if (seen := health(target, service)) == status:
            return
        time.sleep(0.2)
    raise AssertionError(f"{target} {service or '(server)'} is {seen}, not {status}, after {timeout_s}s")


def chat_code(run: MakeRun, key: str) -> grpc.StatusCode:
    """The status a short chat ends with when `key` is presented."""
    with grpc.insecure_channel(run.gateway) as channel:
        stub = chat_grpc.ChatServiceStub(channel)
        try:
            for _ in stub.Chat(
                iter([start("Hello there", max_gen_len=4)]),
                metadata=(("authorization", f"Bearer {key}"),),
                timeout=60,
            ):
                pass
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def llamagate_health(run: MakeRun) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llamagate.cli", "health", "--target", run.gateway, "--timeout", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_killed_service_is_restarted_and_the_dev_key_still_works(make_run: MakeRun) -> None:
    assert chat_code(make_run, make_run.api_key) == grpc.StatusCode.OK
    victim = make_run.pid_of("safety")
    os.killpg(victim, signal.SIGKILL)
    make_run.wait_for_output(r"safety exited with -9 after \d+ s; restarting in 1 s", timeout_s=30)
    make_run.wait_for_output(rf"started safety \(pid (?!{victim}\b)\d+", timeout_s=30)
    wait_serving(make_run.safety, timeout_s=120)
    wait_health(make_run.gateway, "readiness", "SERVING", timeout_s=30)
    assert make_run.proc.poll() is None, "the stack must outlive one of its services"
    assert chat_code(make_run, make_run.api_key) == grpc.StatusCode.OK
    assert "dev API key" not in make_run.text().split("safety exited")[-1]  # no new key printed


def test_readiness_and_llamagate_health_follow_a_backend_that_stops_answering(make_run: MakeRun) -> None:
    wait_health(make_run.gateway, "readiness", "SERVING", timeout_s=30)
    healthy = llamagate_health(make_run)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert f"{make_run.gateway} backend llamagate.v1.SafetyService: SERVING" in healthy.stdout
    assert f"{make_run.gateway} backend llamagate.v1.InferenceService: SERVING" in healthy.stdout

    safety = make_run.pid_of("safety")
    os.killpg(safety, signal.SIGSTOP)  # alive but not answering: the supervisor leaves it be
    try:
        wait_health(make_run.gateway, "readiness", "NOT_SERVING", timeout_s=30)
        assert health(make_run.gateway) == "SERVING"  # liveness: restarting the gateway would not help
        down = llamagate_health(make_run)
        assert down.returncode == 1
        assert f"{make_run.gateway} (server): SERVING" in down.stdout
        assert f"{make_run.gateway} backend llamagate.v1.SafetyService: NOT_SERVING" in down.stdout
        assert f"{make_run.gateway} backend llamagate.v1.InferenceService: SERVING" in down.stdout
    finally:
        os.killpg(safety, signal.SIGCONT)
    wait_health(make_run.gateway, "readiness", "SERVING", timeout_s=30)


def test_a_revoked_key_is_refused_by_the_running_gateway(make_run: MakeRun) -> None:
    keys_file = make_run.workdir / "api_keys.yaml"
    rotated = "rotated-" + hashlib.sha256(make_run.api_key.encode()).hexdigest()[:16]
    document = yaml.safe_load(keys_file.read_text())
    document["tenants"]["dev"]["keys"] = [{"sha256": hashlib.sha256(rotated.encode()).hexdigest()}]
    keys_file.write_text(yaml.safe_dump(document))
    deadline = time.monotonic() + 20  # the gateway looks at the file every 2 s
    while chat_code(make_run, make_run.api_key) != grpc.StatusCode.UNAUTHENTICATED:
        assert time.monotonic() < deadline, "the revoked key is still accepted"
        time.sleep(0.2)
    assert chat_code(make_run, rotated) == grpc.StatusCode.OK
    gateway_log = (make_run.workdir / "gateway.log").read_text()
    assert "api keys reloaded" in gateway_log
