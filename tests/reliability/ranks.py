"""Run the suite's inference service as a torchrun group (MP 2 on CPU/gloo) and find its ranks."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from tests.reliability.probes import descendants, running
from tests.support.processes import ServiceProcess, free_port


def as_torchrun_group(process: ServiceProcess, nproc: int = 2) -> None:
    """Restart `process` (a `python -m services.inference ...` ServiceProcess) as a torchrun group
    of `nproc` ranks on the same port. No torchrun restarts: a dead rank takes the group down, and
    whoever runs it (the test, Kubernetes) starts it again, as after any other crash."""
    argv = list(process.argv)
    module_at = argv.index("-m")
    assert argv[module_at + 1] == "services.inference", argv
    process.terminate(timeout_s=30)
    process.argv = [
        sys.executable, "-m", "torch.distributed.run",
        "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        "--max-restarts", "0",
        *argv[module_at:],
    ]  # fmt: skip
    process.start(timeout_s=180)


def rank_pids(torchrun_pid: int) -> dict[int, int]:
    """{rank: pid} of the workers a torchrun agent started (read from their RANK environment)."""
    ranks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != torchrun_pid:
            continue
        for item in environ:
            if item.startswith(b"RANK="):
                ranks[int(item[5:])] = int(entry.name)
    return ranks


def kill_group(process: ServiceProcess, ranks: Iterable[int] = (), timeout_s: float = 30.0) -> None:
    """SIGKILL a torchrun agent, every process below it and `ranks`; wait until none is running.

    `ServiceProcess.kill` signals the agent's process group only, but torchrun starts each rank in
    a session of its own: a rank would survive the agent (draining after its SIGTERM, or orphaned)
    and keep the gRPC and metrics ports bound, so the restart on the same ports would fail. Ranks
    orphaned before this call are no longer below the agent; pass their pids in `ranks`.
    """
    assert process.proc is not None
    # A rank pid recorded earlier is only signalled while it is still an inference process.
    ours = [pid for pid in ranks if b"services.inference" in _cmdline(pid)]
    pids = {process.proc.pid, *descendants(process.proc.pid), *ours}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.proc.wait(timeout_s)
    deadline = time.monotonic() + timeout_s
    while (alive := [pid for pid in pids if running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive, f"{process.name}: processes {alive} outlived SIGKILL"


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
