"""`python -m services.stack`: the three services on this machine, for trying llamagate (`make run`).

Starts the inference service on the demo model, the safety service with the embedded classifier and
the gateway with a development API key (written, hashed, to a keys file; the key is printed), waits
until each reports SERVING, prints where they listen and how to call them, and stops all three on
Ctrl-C or SIGTERM.

A service that dies is started again after a pause that doubles with each quick failure (1 s up to
30 s; back to 1 s once it has run for a minute), and each exit and restart is printed. The dev key
is kept in the work directory and reused by later runs (--new-key makes a new one), so clients keep
working across restarts. A second stack on the same work directory, or on ports already taken, is
refused before anything starts.

    python -m services.inference.demo --out .work/demo     # `make demo`
    python -m services.stack --demo-dir .work/demo           # `make run`
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_POLICY = ROOT / "services" / "safety" / "policies" / "mlcommons.yaml"


@dataclass(frozen=True)
class StackConfig:
    demo_dir: Path
    workdir: Path
    host: str
    gateway_port: int
    inference_port: int
    safety_port: int
    policy: Path
    start_timeout_s: float
    new_key: bool = False


class StackRefused(RuntimeError):
    """The stack cannot start here (work directory in use, port taken); the message says why."""


@dataclass(frozen=True)
class Backoff:
    """Pause before a restart: doubles per quick failure, resets after a long enough run."""

    first_s: float = 1.0
    max_s: float = 30.0
    healthy_after_s: float = 60.0

    def next_delay(self, previous_s: float, ran_for_s: float) -> float:
        if previous_s <= 0 or ran_for_s >= self.healthy_after_s:
            return self.first_s
        return min(previous_s * 2, self.max_s)


@dataclass
class Service:
    name: str
    argv: list[str]
    port: int
    log_path: Path
    host: str
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_delay_s: float = 0.0
    restart_at: float | None = None
    restarts: int = 0

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        with self.log_path.open("ab") as log:
            # Own process group: Ctrl-C in the terminal reaches us only, and we stop each cleanly.
            self.proc = subprocess.Popen(
                self.argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started_at = time.monotonic()
        say(f"started {self.name} (pid {self.proc.pid}, log {self.log_path})")

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def wait_serving(self, deadline: float) -> None:
        with grpc.insecure_channel(self.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
                with contextlib.suppress(grpc.RpcError):
                    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=2.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                time.sleep(0.25)
        raise TimeoutError(f"{self.name} not SERVING on {self.target}; see {self.log_path}")


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def supervise(service: Service, backoff: Backoff, now: float) -> None:
    """One look at `service`: schedule a restart when it has exited, start it when one is due."""
    assert service.proc is not None
    if service.restart_at is None and service.proc.poll() is not None:
        ran_for = now - service.started_at
        service.restart_delay_s = backoff.next_delay(service.restart_delay_s, ran_for)
        service.restart_at = now + service.restart_delay_s
        say(
            f"{service.name} exited with {service.proc.returncode} after {ran_for:.0f} s; restarting in "
            f"{service.restart_delay_s:g} s (see {service.log_path})"
        )
    elif service.restart_at is not None and now >= service.restart_at:
        service.restart_at = None
        service.restarts += 1
        service.start()


def claim_workdir(workdir: Path) -> IO[str]:
    """An exclusive lock on the work directory for this process's lifetime (released when it exits)."""
    lock = (workdir / "stack.lock").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        raise StackRefused(
            f"a llamagate stack is already running from {workdir} ({holder}); stop it (Ctrl-C in its "
            "terminal) or pass another --workdir"
        ) from None
    lock.truncate(0)
    lock.write(f"pid {os.getpid()}\n")
    lock.flush()
    return lock


def check_ports_free(host: str, ports: dict[str, int]) -> None:
    """Refuse to start when a service's port is taken: its server would fail to bind after the rest started."""
    for name, port in ports.items():
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            # As grpc binds: a port left in TIME_WAIT by a previous run is free, a listener is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as error:
                reason = (
                    "is in use" if error.errno == errno.EADDRINUSE else f"cannot be bound ({error.strerror})"
                )
                raise StackRefused(
                    f"port {port} on {host} for the {name} {reason}: stop what listens there, or pass "
                    f"--{name}-port with a free port"
                ) from None


def dev_key(workdir: Path, new: bool) -> str:
    """The dev API key: the one kept in `workdir` by an earlier run unless `new`, else a fresh one."""
    path = workdir / "dev_api_key"
    if not new and path.is_file() and (kept := path.read_text().strip()):
        return kept
    key = f"dev-{secrets.token_urlsafe(18)}"
    # Created private, then renamed into place: never readable by others, never half-written.
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    tmp.replace(path)
    return key


def write_dev_keys(path: Path, key: str) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()
    document = {
        "tenants": {
            "dev": {"requests_per_minute": 600, "tokens_per_minute": 200000, "keys": [{"sha256": digest}]}
        }
    }
    path.write_text(
        "# written by `python -m services.stack`: the development tenant\n" + yaml.safe_dump(document)
    )
    path.chmod(0o600)
    return key


def build_services(config: StackConfig) -> list[Service]:
    py = sys.executable
    logs = config.workdir
    common = ["--host", config.host]
    return [
        Service(
            "inference",
            [py, "-m", "services.inference", "--ckpt-dir", str(config.demo_dir / "llama-demo"),
             "--tokenizer-path", str(config.demo_dir / "tokenizer.model"), "--device", "cpu",
             "--port", str(config.inference_port), "--metrics-port", "0", *common],
            config.inference_port, logs / "inference.log", config.host,
        ),
        Service(
            "safety",
            # One intra-op thread: the three services share the machine's cores, and an OpenMP
            # thread that is not scheduled stalls each op at its barrier (tests/support/stack.py).
            [py, "-m", "services.safety", "--policy", str(config.policy), "--classifier", "embedded",
             "--threads", "1", "--port", str(config.safety_port), "--metrics-port", "0", *common],
            config.safety_port, logs / "safety.log", config.host,
        ),
        Service(
            "gateway",
            [py, "-m", "services.gateway", "--inference-target", f"{config.host}:{config.inference_port}",
             "--safety-target", f"{config.host}:{config.safety_port}", "--api-keys", str(logs / "api_keys.yaml"),
             "--audit-dir", str(logs / "audit"), "--port", str(config.gateway_port), "--metrics-port", "0",
             *common],
            config.gateway_port, logs / "gateway.log", config.host,
        ),
    ]  # fmt: skip


def cli_command() -> str:
    """The `llamagate` command as it can be pasted into a fresh shell: the script installed next to
    this interpreter (a virtualenv's bin/, which a fresh shell does not have on PATH), else this
    interpreter running the CLI module."""
    script = Path(sys.executable).parent / "llamagate"
    if script.is_file() and os.access(script, os.X_OK):
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m llamagate.cli"


def banner(services: list[Service], workdir: Path, api_key: str, llamagate: str) -> str:
    """What `make run` prints once the stack serves: where each service listens and commands that
    work as printed (`llamagate` is the command from `cli_command`)."""
    inference, safety, gateway = services
    audit = shlex.quote(str(workdir / "audit"))
    return f"""
llamagate is running (DEMO model: tiny, trained for seconds; it babbles corpus-like sentences):
  gateway    {gateway.target}   llamagate.v1.ChatService   (log {gateway.log_path})
  inference  {inference.target}   llamagate.v1.InferenceService (internal)
  safety     {safety.target}   llamagate.v1.SafetyService    (internal)
  audit log  {workdir / "audit"}   ({llamagate} audit --dir {audit})

dev API key: {api_key}
  export LLAMAGATE_TARGET={gateway.target} LLAMAGATE_API_KEY={api_key}
  {llamagate} chat                       # interactive chat
  {llamagate} complete "Once upon a time"
  grpcurl -plaintext -H "authorization: Bearer {api_key}" -d '{{"start": {{"messages": [{{"role": "ROLE_USER", "content": "Hello"}}]}}}}' {gateway.target} llamagate.v1.ChatService/Chat

A service that dies is restarted (the dev key stays). Ctrl-C stops all three."""


def parse_args(argv: list[str] | None) -> StackConfig:
    parser = argparse.ArgumentParser(prog="python -m services.stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument(
        "--demo-dir", type=Path, required=True, help="output of python -m services.inference.demo"
    )
    parser.add_argument("--workdir", type=Path, default=ROOT / ".work" / "stack", help="logs, keys, audit")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--gateway-port", type=int, default=50051)
    parser.add_argument("--inference-port", type=int, default=50052)
    parser.add_argument("--safety-port", type=int, default=50053)
    parser.add_argument("--policy", type=Path, default=DEFAULT_POLICY)
    parser.add_argument("--start-timeout-s", type=float, default=300.0)
    parser.add_argument("--new-key", action="store_true", help="replace the dev API key kept in --workdir")
    args = parser.parse_args(argv)
    if not (args.demo_dir / "llama-demo" / "params.json").is_file():
        parser.error(
            f"{args.demo_dir} has no demo model: run `python -m services.inference.demo --out {args.demo_dir}`"
        )
    return StackConfig(args.demo_dir, args.workdir, args.host, args.gateway_port, args.inference_port,
                       args.safety_port, args.policy, args.start_timeout_s, args.new_key)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    config.workdir.mkdir(parents=True, exist_ok=True)
    try:
        lock = claim_workdir(config.workdir)
        ports = {
            "gateway": config.gateway_port,
            "inference": config.inference_port,
            "safety": config.safety_port,
        }
        check_ports_free(config.host, ports)
    except StackRefused as refused:
        print(f"llamagate stack not started: {refused}", file=sys.stderr)
        return 2
    api_key = write_dev_keys(config.workdir / "api_keys.yaml", dev_key(config.workdir, config.new_key))
    services = build_services(config)
    backoff = Backoff()
    stop = threading.Event()
    # SIGHUP too: closing the terminal must stop the services, not orphan them.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    try:
        for service in services[:2]:
            service.start()
        deadline = time.monotonic() + config.start_timeout_s
        for service in services[:2]:
            print(f"waiting for {service.name} on {service.target} (log: {service.log_path}) ...", flush=True)
            service.wait_serving(deadline)
        services[2].start()
        services[2].wait_serving(deadline)
        print(banner(services, config.workdir, api_key, cli_command()), flush=True)
        while not stop.wait(0.5):
            for service in services:
                supervise(service, backoff, time.monotonic())
        print("stopping ...", flush=True)
        return 0
    except (RuntimeError, TimeoutError) as error:
        print(f"llamagate stack failed to start: {error}", file=sys.stderr)
        return 1
    finally:
        for service in reversed(services):
            service.stop()
        lock.close()


if __name__ == "__main__":
    sys.exit(main())
