"""`python -m services.stack`: the three services on this machine, for trying llamagate (`make run`).

Starts the inference service on the demo model, the safety service with the embedded classifier and
the gateway with a development API key (written, hashed, to a keys file; the key is printed), waits
until each reports SERVING, prints where they listen and how to call them, and stops all three on
Ctrl-C or SIGTERM (or as soon as one of them exits).

    python -m services.inference.demo --out .work/demo     # `make demo`
    python -m services.stack --demo-dir .work/demo           # `make run`
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

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


@dataclass
class Service:
    name: str
    argv: list[str]
    port: int
    log_path: Path
    host: str
    proc: subprocess.Popen[bytes] | None = None

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


def write_dev_keys(path: Path) -> str:
    key = f"dev-{secrets.token_urlsafe(18)}"
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
    args = parser.parse_args(argv)
    if not (args.demo_dir / "llama-demo" / "params.json").is_file():
        parser.error(
            f"{args.demo_dir} has no demo model: run `python -m services.inference.demo --out {args.demo_dir}`"
        )
    return StackConfig(args.demo_dir, args.workdir, args.host, args.gateway_port, args.inference_port,
                       args.safety_port, args.policy, args.start_timeout_s)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    config.workdir.mkdir(parents=True, exist_ok=True)
    api_key = write_dev_keys(config.workdir / "api_keys.yaml")
    services = build_services(config)
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
        gateway, inference, safety = services[2], services[0], services[1]
        print(
            f"""
llamagate is running (DEMO model: tiny, trained for seconds; it babbles corpus-like sentences):
  gateway    {gateway.target}   llamagate.v1.ChatService   (log {gateway.log_path})
  inference  {inference.target}   llamagate.v1.InferenceService (internal)
  safety     {safety.target}   llamagate.v1.SafetyService    (internal)
  audit log  {config.workdir / "audit"}   (llamagate audit --dir {config.workdir / "audit"})

dev API key: {api_key}
  export LLAMAGATE_TARGET={gateway.target} LLAMAGATE_API_KEY={api_key}
  llamagate chat                       # interactive chat
  llamagate complete "Once upon a time"
  grpcurl -plaintext -H "authorization: Bearer {api_key}" -d '{{"start": {{"messages": [{{"role": "ROLE_USER", "content": "Hello"}}]}}}}' {gateway.target} llamagate.v1.ChatService/Chat

Ctrl-C stops all three.""",
            flush=True,
        )
        while not stop.wait(0.5):
            for service in services:
                assert service.proc is not None
                if service.proc.poll() is not None:
                    print(
                        f"{service.name} exited with {service.proc.returncode}; stopping (see {service.log_path})"
                    )
                    return 1
        print("stopping ...", flush=True)
        return 0
    except (RuntimeError, TimeoutError) as error:
        print(f"llamagate stack failed to start: {error}", file=sys.stderr)
        return 1
    finally:
        for service in reversed(services):
            service.stop()


if __name__ == "__main__":
    sys.exit(main())
