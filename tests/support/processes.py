"""Start service processes for integration tests and wait on their gRPC health, never on sleep."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]


# Ports this process has handed out. A probe socket is closed before the service binds the port,
# so bind(0) may return the same port twice; two services given one port would then share it
# (grpc servers set SO_REUSEPORT by default) and calls would reach the wrong service.
_handed_out: set[int] = set()


def free_port() -> int:
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no loopback port that was not handed out already after 100 tries")


def wait_serving(
    target: str, service: str = "", timeout_s: float = 120.0, proc: subprocess.Popen | None = None
) -> None:
    """Poll grpc.health.v1 until SERVING; fail early if `proc` exits. Bounded by timeout_s."""
    deadline = time.monotonic() + timeout_s
    last_error = "no answer yet"
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"process for {target} exited with {proc.returncode} before serving")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last_error = f"status {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
            except grpc.RpcError as error:
                last_error = f"{error.code().name}: {error.details()}"
            time.sleep(0.2)
    raise TimeoutError(f"{target} not SERVING after {timeout_s}s ({last_error})")


@dataclass
class ServiceProcess:
    """A service started as a subprocess in its own process group, logging to a file."""

    name: str
    argv: Sequence[str]
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, wait: bool = True, timeout_s: float = 120.0) -> ServiceProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            list(self.argv), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        if wait:
            self.wait_serving(timeout_s)
        return self

    def wait_serving(self, timeout_s: float = 120.0) -> None:
        """Wait for a started process to serve; if it does not, kill it and show its log."""
        try:
            wait_serving(self.target, timeout_s=timeout_s, proc=self.proc)
        except Exception:
            self.kill()
            raise RuntimeError(f"{self.name} failed to start; log:\n{self.log_tail()}") from None

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def terminate(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM the process group and wait; SIGKILL if it does not stop in time."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        """SIGKILL the whole process group (kill -9)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
