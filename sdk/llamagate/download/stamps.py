"""Remember which files were verified, so a second run does not re-hash 130 GB of shards.

A stamp is trusted only while the file's size and modification time are unchanged and the checklist
still expects the same md5; anything else (a file rewritten or truncated) is hashed again.
"""

from __future__ import annotations

import json
from pathlib import Path

STAMP_FILE = ".llamagate-verified.json"


class VerifiedStamps:
    def __init__(self, folder: Path) -> None:
        self._path = folder / STAMP_FILE
        try:
            self._stamps: dict[str, dict[str, int | str]] = json.loads(self._path.read_text())
        except (OSError, ValueError):
            self._stamps = {}

    def is_verified(self, name: str, md5: str) -> bool:
        stamp = self._stamps.get(name)
        path = self._path.parent / name
        if stamp is None or not path.is_file():
            return False
        st = path.stat()
        return stamp == {"md5": md5, "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def record(self, name: str, md5: str) -> None:
        st = (self._path.parent / name).stat()
        self._stamps[name] = {"md5": md5, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._stamps, indent=1, sort_keys=True))
        tmp.replace(self._path)

    def forget(self, name: str) -> None:
        if self._stamps.pop(name, None) is not None and self._path.exists():
            self._path.write_text(json.dumps(self._stamps, indent=1, sort_keys=True))
