"""What the reliability suite observes from outside the services: process memory, the inference
service's scheduler gauges (Prometheus), health, and the gateway's audit trail."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llamagate.formats.audit import read_records


def descendants(pid: int) -> list[int]:
    """Pids of every process below `pid` (children, grandchildren, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def process_tree_rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and all its descendants (a torchrun group counts every rank)."""
    total = 0
    for current in [pid, *descendants(pid)]:
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        if match:
            total += int(match.group(1)) * 1024
    return total


# Python allocators keep freed arenas, so "memory back to baseline" allows this much over the
# post-warm-up baseline; a per-stream or per-reply leak under sustained load exceeds it.
RSS_SLACK = 1.25
RSS_SLACK_BYTES = 96 * 1024 * 1024


def rss_limit_bytes(baseline: int) -> int:
    """The most RSS a process may hold after a load run that started at `baseline` bytes."""
    return max(int(baseline * RSS_SLACK), baseline + RSS_SLACK_BYTES)


def running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a zombie holds no port or memory)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def scrape(port: int) -> dict[str, float]:
    """The unlabelled samples of a Prometheus text endpoint, by metric name."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5.0).text
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        samples[name.split("{", 1)[0]] = float(value)
    return samples


def gauge(samples: dict[str, float], prefix: str) -> float:
    """A gauge by name prefix (the exporter may add a unit suffix such as `_ratio`)."""
    for name, value in samples.items():
        if name.startswith(prefix):
            return value
    raise KeyError(f"{prefix} not exported; names: {sorted(samples)}")


def wait_scheduler_idle(metrics_port: int, timeout_s: float = 60.0) -> dict[str, float]:
    """Poll the inference gauges until no request is queued or running and no KV block is used."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, float] = {}
    while time.monotonic() < deadline:
        samples = scrape(metrics_port)
        last = {
            "kv": gauge(samples, "llamagate_kv_cache_utilization"),
            "queue": gauge(samples, "llamagate_queue_depth"),
            "running": gauge(samples, "llamagate_running_batch_size"),
        }
        if last == {"kv": 0.0, "queue": 0.0, "running": 0.0}:
            return last
        time.sleep(0.25)
    raise AssertionError(f"inference not idle after {timeout_s}s: {last}")


def health_status(target: str, service: str = "", timeout_s: float = 2.0) -> str:
    """SERVING / NOT_SERVING / ..., or the status code name when the server cannot be reached."""
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError as error:
            return str(error.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def wait_health(target: str, service: str, wanted: Iterable[str], timeout_s: float = 30.0) -> str:
    wanted = set(wanted)
    deadline = time.monotonic() + timeout_s
    status = "?"
    while time.monotonic() < deadline:
        status = health_status(target, service)
        if status in wanted:
            return status
        time.sleep(0.2)
    raise AssertionError(f"health of {service or 'server'} at {target} is {status}, wanted {wanted}")


def unchecked_deliveries(audit_dir: Path, replies: dict[str, list[str]]) -> list[str]:
    """Delivered text that no safe audit record covers, as readable problems (empty = fail closed held).

    `replies` maps a request id to the texts of its delivered `TextDelta`s in order. Each chunk
    record holds the output released so far plus the judged chunk (the gateway runs with
    --audit-text), so every prefix a client saw must be the text of a safe chunk or final record.
    """
    safe_texts: dict[str, set[str]] = {}
    for record in read_records(audit_dir):
        if record["direction"] == "output" and record["verdict"] == "safe" and "text" in record:
            safe_texts.setdefault(record["request_id"], set()).add(record["text"])
    problems = []
    for request_id, deltas in replies.items():
        prefix = ""
        for delta in deltas:
            prefix += delta
            if delta and prefix not in safe_texts.get(request_id, set()):
                problems.append(f"{request_id!r}: delivered {prefix!r} without a safe verdict on it")
                break
    return problems


def audit_stages(audit_dir: Path) -> dict[str, list[str]]:
    """The stages (input, chunk, final) audited for each request id, in file order."""
    stages: dict[str, list[str]] = {}
    for record in read_records(audit_dir):
        stages.setdefault(record["request_id"], []).append(record["stage"])
    return stages


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
