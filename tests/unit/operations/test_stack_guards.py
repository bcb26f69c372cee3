"""`make run` refuses a second stack before anything starts, keeps its dev key, and restarts a
service that dies with a growing pause."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from services.stack import Backoff, Service, claim_workdir, dev_key, supervise, write_dev_keys
from tests.support.processes import ROOT, free_port


def fake_demo(tmp_path: Path) -> Path:
    demo = tmp_path / "demo"
    (demo / "llama-demo").mkdir(parents=True)
    (demo / "llama-demo" / "params.json").write_text("{}")
    return demo


def run_stack(tmp_path: Path, workdir: Path, gateway_port: int) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "services.stack", "--demo-dir", str(fake_demo(tmp_path)),
            "--workdir", str(workdir), "--gateway-port", str(gateway_port),
            "--inference-port", str(free_port()), "--safety-port", str(free_port())]  # fmt: skip
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_a_taken_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    workdir = tmp_path / "stack"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_stack(tmp_path, workdir, port)
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 for the gateway is in use" in result.stderr
    assert "--gateway-port" in result.stderr
    assert "llamagate is running" not in result.stdout
    assert not (workdir / "api_keys.yaml").exists()  # nobody's key file was touched


def test_a_second_stack_on_the_same_workdir_is_refused_and_leaves_its_keys_alone(tmp_path: Path) -> None:
    workdir = tmp_path / "stack"
    workdir.mkdir()
    lock = claim_workdir(workdir)  # the first stack
    try:
        keys = write_dev_keys(workdir / "api_keys.yaml", dev_key(workdir, new=False))
        before = (workdir / "api_keys.yaml").read_text()
        result = run_stack(tmp_path, workdir, free_port())
    finally:
        lock.close()
    assert result.returncode == 2
    assert f"already running from {workdir} (pid {os.getpid()})" in result.stderr
    assert "llamagate is running" not in result.stdout
    assert (workdir / "api_keys.yaml").read_text() == before
    assert keys == dev_key(workdir, new=False)


def test_the_dev_key_is_kept_across_runs_unless_a_new_one_is_asked_for(tmp_path: Path) -> None:
    first = dev_key(tmp_path, new=False)
    assert dev_key(tmp_path, new=False) == first
    assert (tmp_path / "dev_api_key").stat().st_mode & 0o777 == 0o600
    second = dev_key(tmp_path, new=True)
    assert second != first and dev_key(tmp_path, new=False) == second
    write_dev_keys(tmp_path / "api_keys.yaml", second)
    document = yaml.safe_load((tmp_path / "api_keys.yaml").read_text())
    assert document["tenants"]["dev"]["keys"] == [{"sha256": hashlib.sha256(second.encode()).hexdigest()}]


def test_the_restart_pause_doubles_up_to_its_cap_and_resets_after_a_long_run() -> None:
    backoff = Backoff(first_s=1.0, max_s=8.0, healthy_after_s=60.0)
    delays, delay = [], 0.0
    for _ in range(6):
        delay = backoff.next_delay(delay, ran_for_s=2.0)
        delays.append(delay)
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff.next_delay(8.0, ran_for_s=61.0) == 1.0


def test_a_dead_service_is_restarted_after_its_pause_and_logged(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    service = Service(
        "flaky", [sys.executable, "-c", "raise SystemExit(3)"], 0, tmp_path / "flaky.log", "127.0.0.1"
    )
    service.start()
    assert service.proc is not None
    first_pid = service.proc.pid
    service.proc.wait(30)
    backoff = Backoff(first_s=0.2, max_s=1.0)
    now = time.monotonic()
    supervise(service, backoff, now)
    assert service.restart_at == now + 0.2
    supervise(service, backoff, now + 0.1)  # not due yet
    assert service.proc.pid == first_pid
    supervise(service, backoff, now + 0.2)
    assert service.proc.pid != first_pid and service.restarts == 1
    service.proc.wait(30)
    supervise(service, backoff, time.monotonic())
    assert service.restart_delay_s == 0.4  # failed again at once: twice the pause
    out = capsys.readouterr().out
    assert "flaky exited with 3" in out and "restarting in 0.2 s" in out
    assert f"started flaky (pid {service.proc.pid}" in out
