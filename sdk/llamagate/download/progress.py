"""Progress bars (one overall, one per file in flight) and the user-facing notes printed between them."""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm


class Progress:
    """tqdm bars that stay correct when a file restarts from zero or resumes from a partial file.

    With `enabled=False` (no TTY, e.g. a Kubernetes Job log) there are no bars: a file gets a line at
    every 10% and one when it is done, so a log shows a 17 GB shard moving without carriage returns.
    """

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self._enabled = enabled
        self._stream = stream or sys.stderr
        self._overall = tqdm(
            total=0,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc="total",
            disable=not enabled,
            file=self._stream,
            position=0,
        )
        self._files: dict[str, tqdm] = {}
        self._counted: dict[str, int] = {}  # bytes of each file already added to the overall bar
        self._totals: dict[str, int | None] = {}
        self._logged_tenths: dict[str, int] = {}

    def expect(self, n_bytes: int) -> None:
        """Start the overall bar over: `n_bytes` are still to be fetched (checklists fetched so far
        are not part of it; partial files count as fetched)."""
        self._overall.reset(total=n_bytes)
        self._counted.clear()

    def start(self, label: str, total: int | None, initial: int) -> None:
        """(Re)start a file's bar at `initial` bytes; a restart from zero rewinds the overall bar too."""
        self._overall.update(initial - self._counted.get(label, initial))
        self._counted[label] = initial
        self._totals[label] = total
        self._logged_tenths[label] = initial * 10 // total if total else 0
        old = self._files.pop(label, None)
        if old is not None:
            old.close()
        self._files[label] = tqdm(
            total=total,
            initial=initial,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=label,
            leave=False,
            disable=not self._enabled,
            file=self._stream,
            position=len(self._files) + 1,
        )

    def advance(self, label: str, n_bytes: int) -> None:
        self._files[label].update(n_bytes)
        self._counted[label] = self._counted.get(label, 0) + n_bytes
        self._overall.update(n_bytes)
        total = self._totals.get(label)
        if not self._enabled and total:
            tenths = self._counted[label] * 10 // total
            if self._logged_tenths[label] < tenths < 10:
                self._logged_tenths[label] = tenths
                self.note(f"{label}: {tenths * 10}% of {total / 2**20:.1f} MiB")

    def finish(self, label: str, message: str) -> None:
        bar = self._files.pop(label, None)
        if bar is not None:
            bar.close()
        self.note(message)

    def note(self, message: str) -> None:
        tqdm.write(message, file=self._stream)

    def close(self) -> None:
        for bar in self._files.values():
            bar.close()
        self._overall.close()
