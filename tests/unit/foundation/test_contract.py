"""The gRPC contract: buf lint clean, breaking-change check, generated code never committed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BUF = ROOT / ".work" / "buf" / "node_modules" / ".bin" / "buf"


def buf() -> str:
    if BUF.exists():
        return str(BUF)
    found = shutil.which("buf")
    if found is None:
        pytest.skip("buf is not installed (make test installs it from the npm registry)")
    return found


def test_protos_lint_clean_under_buf_standard_rules() -> None:
    result = subprocess.run([buf(), "lint", "proto"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_breaking_change_since_last_release_tag() -> None:
    tags = subprocess.run(
        ["git", "tag", "--list", "v*", "--sort=-v:refname"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    if not tags:
        pytest.skip("no release tag yet: the breaking-change check starts with the first v* tag")
    against = f".git#tag={tags[0]},subdir=proto"
    result = subprocess.run(
        [buf(), "breaking", "proto", "--against", against],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_one_proto_file_per_service_in_a_versioned_package() -> None:
    files = sorted(p.name for p in (ROOT / "proto" / "llamagate" / "v1").glob("*.proto"))
    assert files == ["chat_service.proto", "inference_service.proto", "safety_service.proto", "types.proto"]
    for name in files:
        assert "package llamagate.v1;" in (ROOT / "proto" / "llamagate" / "v1" / name).read_text()


def test_every_field_message_and_rpc_is_documented() -> None:
    for path in (ROOT / "proto" / "llamagate" / "v1").glob("*.proto"):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            stripped = line.strip()
            declares = stripped.startswith(("message ", "rpc ", "service ", "enum ", "oneof ")) or (
                stripped.endswith(";") and "=" in stripped and not stripped.startswith(("option", "//"))
            )
            if declares and not stripped.startswith(("syntax", "package", "import")):
                assert lines[i - 1].strip().startswith("//"), f"{path.name}:{i + 1} undocumented: {stripped}"


def test_generated_stubs_are_not_committed() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "proto/llamagate/v1"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    assert "_pb2" not in tracked, "generated stubs must come from `make proto`, not from git"
