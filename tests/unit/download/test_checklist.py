from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from llamagate.download.checklist import ChecklistSyntaxError, Mismatch, check_all, md5_of, parse_checklist

A = "0123456789abcdef0123456789abcdef"
B = "fedcba9876543210fedcba9876543210"


def test_parses_md5sum_text_and_binary_mode_lines() -> None:
    text = f"{A}  consolidated.00.pth\n{B.upper()} *./params.json\n\n"
    assert parse_checklist(text) == {"consolidated.00.pth": A, "params.json": B}


def test_crlf_line_endings_are_accepted() -> None:
    assert parse_checklist(f"{A}  tokenizer.model\r\n") == {"tokenizer.model": A}


@pytest.mark.parametrize("text", ["<html>Access denied</html>", f"{A[:-1]}  x", f"{A}x"])
def test_a_line_that_is_not_md5sum_format_is_named(text: str) -> None:
    with pytest.raises(ChecklistSyntaxError, match="line 1"):
        parse_checklist(text, source="llama-2-7b/checklist.chk")


def test_empty_checklist_is_an_error() -> None:
    with pytest.raises(ChecklistSyntaxError, match="empty"):
        parse_checklist("\n")


def test_md5_of_a_file_matches_hashlib(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40_000  # > one read chunk
    (tmp_path / "f").write_bytes(data)
    assert md5_of(tmp_path / "f") == hashlib.md5(data).hexdigest()


def test_check_all_reports_exactly_the_bad_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "good").write_bytes(b"good")
    (tmp_path / "bad").write_bytes(b"bad")
    entries = {
        "good": hashlib.md5(b"good").hexdigest(),
        "bad": hashlib.md5(b"expected").hexdigest(),
        "gone": A,
    }
    bad, gone = check_all(tmp_path, entries)
    assert bad == Mismatch("bad", entries["bad"], hashlib.md5(b"bad").hexdigest())
    assert gone == Mismatch("gone", A, None)
    assert bad.describe("llama-2-7b").startswith("llama-2-7b/bad: md5 ")
    assert gone.describe() == "gone: missing"
