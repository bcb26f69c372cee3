"""Run the suite's inference service as a torchrun group (MP 2 on CPU/gloo) and find its ranks."""

from __future__ import annotations

import sys
from pathlib import Path

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
