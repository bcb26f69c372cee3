"""torchrun, the inference container's main process, lets a draining rank finish: launched with the
rendered manifest's own flags, a rank still draining 35 s after SIGTERM (past torchrun's default
30 s shutdown timeout) completes instead of being SIGKILLed."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.deploy.manifests import OVERLAYS_DIR, build, containers, find

pytestmark = pytest.mark.slow

DRAIN_S = 35.0
WORKER = Path(__file__).with_name("draining_rank.py")


def manifest_shutdown_timeout() -> int:
    docs = build(OVERLAYS_DIR / "llama-2-7b-chat")
    (c,) = [c for c in containers([find(docs, "Deployment", "llamagate-inference")], init=False)]
    args = c.expanded_args()
    assert args[0] == "torchrun"
    (value,) = [a.split("=", 1)[1] for a in args if a.startswith("--shutdown-timeout=")]
    return int(value)


def wait_for(path: Path, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert proc.poll() is None, f"torchrun exited with {proc.returncode} before {path.name}"
        assert time.monotonic() < deadline, f"no {path.name} after {timeout_s}s"
        time.sleep(0.1)


def test_a_rank_draining_past_30_s_finishes_under_the_manifest_torchrun(tmp_path: Path) -> None:
    shutdown_timeout = manifest_shutdown_timeout()
    assert shutdown_timeout > DRAIN_S
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
            "--nproc_per_node=1", f"--shutdown-timeout={shutdown_timeout}",
            str(WORKER), str(tmp_path), str(DRAIN_S)]  # fmt: skip
    log = (tmp_path / "torchrun.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(tmp_path / "ready", proc, timeout_s=120)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # what the kubelet sends the container's main process
        proc.wait(timeout=DRAIN_S + 60)
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    output = (tmp_path / "torchrun.log").read_text(errors="replace")
    assert (tmp_path / "drained").exists(), (
        f"the draining rank was killed after {elapsed:.1f}s:\n{output[-3000:]}"
    )
    assert float((tmp_path / "drained").read_text()) >= DRAIN_S
    assert elapsed >= DRAIN_S > 30.3
