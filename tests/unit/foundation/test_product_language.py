"""Tracked text speaks of the product only: docs, code, comments, tests and manifests state what the
product does and what was measured, not how or by whom the work was organised (ticket numbers, who
wrote what, which machine was borrowed, paths of a development machine, diary entries)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
THIS_FILE = Path(__file__).resolve().relative_to(ROOT).as_posix()

# Each pattern names one kind of process talk. They are narrow on purpose: "session" (ChatSession, a
# pytest fixture scope, a POSIX session), "agent" (torchrun's agent, Llama Guard's 'Agent' role) and
# "helpers" (helper functions) are product words and must stay allowed.
PROCESS_LANGUAGE: dict[str, str] = {
    "ticket number": r"\bissues? ?#?\d+|\bissues? #",
    "borrowed machine": r"\blent\b|\bwithheld\b|\bnvidia-h200|\bdevice budget\b|\bdevice time left\b|\bno device time\b",
    "who did the work": r"(?-i:\bhelper [A-Z]\b|\bB's\b)|\bother helpers\b|\bsafety helper\b",
    "the work's sitting": r"\bthis session\b|\bthe session that\b|\bsession's device time\b",
    "development machine": r"/work/|\.library/|/tmp/site\b|`/tmp`-local|\bdev (box|machine)\b",
    "moving files to a machine": r"\bcarr(y|ied)\b[^.]*\bwheels?\b",
    "work history": r"\b(first|second|third|earlier|later|next|last) wave\b|\bwe tried\b",
    "diary entry": r"\bUpdate \d{4}-\d{2}-\d{2}|\bStatus \(\d{4}-\d{2}-\d{2}",
}
MATCHERS = {kind: re.compile(pattern, re.IGNORECASE) for kind, pattern in PROCESS_LANGUAGE.items()}


def process_language(line: str) -> list[str]:
    """The kinds of process talk in one line of text (empty when it speaks of the product only)."""
    return [kind for kind, matcher in MATCHERS.items() if matcher.search(line)]


def tracked_text_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout: the scan covers the tracked files")
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return [ROOT / name for name in listed.split("\0") if name and name != THIS_FILE]


@pytest.mark.parametrize(
    "line",
    [
        "Issue 4 on CPU: the service under torchrun",
        "the issue 12/13 benchmark end to end",
        "see issue #7",
        "Both issues need machines that were not lent in the session that wrote this",
        "helper B's engine with rank 0 broadcasting each step",
        "other helpers' test runs shared the cores",
        "the device budget of this session was spent on three runs",
        "see /work/.library/device/README.md",
        "pip install --target /tmp/site .whl/*.whl",
        "carry its wheel (`.whl/`, ignored by git)",
        "Only `nvidia-h200` (one GPU) was available",
        "Seen from the code as it stood after the first wave",
        "we tried a larger batch first",
        "**Update 2026-12-01: the single-GPU parts**",
        "**Status (2026-12-01):** engine core built",
        "the shared 2-core CPU dev box",
    ],
)
def test_process_language_is_recognised(line: str) -> None:
    assert process_language(line), line


@pytest.mark.parametrize(
    "line",
    [
        "session = client.chat(system_prompt='Be brief.')",
        "class ChatSession: one conversation on one gRPC stream",
        "A failed turn does not end the session: the next send continues it.",
        "torchrun starts each rank in a session of its own",
        '@pytest.fixture(scope="session")',
        "kills the torchrun agent and every rank below it",
        "'User: ...' / 'Agent: ...' turns, each followed by a blank line",
        "I tried a new recipe for lentil curry and it turned out well.",
        "the helpers below make the spans of a turn",
        "HF_HOME=/tmp/hf",
        "the client certificate's issuer",
        "Run of 2026-12-02 (AMD EPYC, 2 cores)",
        "commit 7d43675; 2026-12-02",
        "Span attributes carry ids, token counts and directions.",
        "a file verified by an earlier run is trusted while its size matches",
        "a port left in TIME_WAIT by a previous run is free, a listener is not",
    ],
)
def test_product_words_are_allowed(line: str) -> None:
    assert process_language(line) == [], line


def test_tracked_files_speak_of_the_product_only() -> None:
    found: list[str] = []
    for path in tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue  # binary, or listed in the index but moved in the working tree meanwhile
        for number, line in enumerate(text.splitlines(), 1):
            for kind in process_language(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {kind}: {line.strip()[:120]}")
    assert not found, "state the product fact instead of how the work went:\n" + "\n".join(found)
