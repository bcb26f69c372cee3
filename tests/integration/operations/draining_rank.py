"""A torchrun worker that drains like a serving rank: on SIGTERM it keeps working for DRAIN_S
seconds (streams finishing), then records that it finished and exits 0.

    torchrun ... draining_rank.py OUT_DIR DRAIN_S
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path


def main() -> None:
    out, drain_s = Path(sys.argv[1]), float(sys.argv[2])
    terminated = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: terminated.set())
    (out / "ready").write_text("ready\n")
    terminated.wait()
    started = time.monotonic()
    while time.monotonic() - started < drain_s:
        time.sleep(0.1)
    (out / "drained").write_text(f"{time.monotonic() - started:.1f}\n")


if __name__ == "__main__":
    main()
