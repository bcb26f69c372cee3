"""md5 checklists in `md5sum -c` format ("<md5>  <name>" per line), and checking files against them."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

# md5sum writes "<hex>  <name>" (text mode) or "<hex> *<name>" (binary mode).
_LINE = re.compile(r"^(?P<md5>[0-9a-fA-F]{32}) [ *](?P<name>.+)$")
_CHUNK = 8 * 1024 * 1024


class ChecklistSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Mismatch:
    name: str
    expected: str
    actual: str | None  # None: the file is missing

    def describe(self, folder: str = "") -> str:
        path = f"{folder}/{self.name}" if folder else self.name
        if self.actual is None:
            return f"{path}: missing"
        return f"{path}: md5 {self.actual} does not match the checklist's {self.expected}"


def parse_checklist(text: str, source: str = "checklist") -> dict[str, str]:
    """-> {file name: lowercase md5}. Names are relative to the checklist's folder ("./" dropped)."""
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _LINE.match(line.rstrip("\r"))
        if match is None:
            raise ChecklistSyntaxError(f"{source} line {number} is not '<md5>  <name>': {line[:80]!r}")
        name = match["name"].removeprefix("./")
        entries[name] = match["md5"].lower()
    if not entries:
        raise ChecklistSyntaxError(f"{source} is empty")
    return entries


def md5_of(path: Path) -> str:
    """Blocking: call it in a thread from async code (a 70B shard is ~17 GB)."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_file(folder: Path, name: str, expected: str) -> Mismatch | None:
    path = folder / name
    if not path.is_file():
        return Mismatch(name, expected, None)
    actual = md5_of(path)
    return None if actual == expected else Mismatch(name, expected, actual)


def check_all(folder: Path, entries: dict[str, str]) -> list[Mismatch]:
    """Like `md5sum -c`: every entry of the checklist, in order; returns only the failures."""
    return [m for name, md5 in entries.items() if (m := check_file(folder, name, md5)) is not None]
