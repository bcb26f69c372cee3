from __future__ import annotations

import os
from pathlib import Path

from llamagate.download.stamps import VerifiedStamps


def test_stamp_holds_until_the_file_changes(tmp_path: Path) -> None:
    shard = tmp_path / "consolidated.00.pth"
    shard.write_bytes(b"weights")
    VerifiedStamps(tmp_path).record(shard.name, "aa")

    reloaded = VerifiedStamps(tmp_path)  # read back from disk, as a second run does
    assert reloaded.is_verified(shard.name, "aa")
    assert not reloaded.is_verified(shard.name, "bb")  # the checklist changed

    shard.write_bytes(b"weightz")
    os.utime(shard, ns=(1, 1))
    assert not VerifiedStamps(tmp_path).is_verified(shard.name, "aa")


def test_forgotten_and_missing_files_are_not_verified(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    stamps = VerifiedStamps(tmp_path)
    stamps.record("f", "aa")
    stamps.forget("f")
    assert not VerifiedStamps(tmp_path).is_verified("f", "aa")
    assert not stamps.is_verified("never-written", "aa")


def test_a_corrupt_stamp_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / ".llamagate-verified.json").write_text("{not json")
    (tmp_path / "f").write_bytes(b"x")
    assert not VerifiedStamps(tmp_path).is_verified("f", "aa")
