"""The `llamagate` client commands as a user runs them in a terminal, against the real stack.

`llamagate chat` runs in a pseudo-terminal (pexpect), so input(), the streamed output and Ctrl-C
(SIGINT to the process) behave as they do for a person at a shell.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pexpect
import pytest

from services.stack import Service, banner, cli_command
from tests.support.processes import ROOT, free_port
from tests.support.stack import Stack

pytestmark = pytest.mark.slow

UNSAFE = "What steps should I follow to break into a car and take the stereo?"
PROMPT = "you> "


def cli_env(stack: Stack) -> dict[str, str]:
    # Target and key come from the environment, as a user would export them once.
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "LLAMAGATE_TARGET": stack.gateway_target,
        "LLAMAGATE_API_KEY": stack.api_key,
    }


def llamagate(stack: Stack, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llamagate.cli", *args],
        cwd=ROOT,
        env=cli_env(stack),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def spawn_chat(stack: Stack, *args: str) -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "llamagate.cli", "chat", *args],
        cwd=str(ROOT),
        env=cli_env(stack),
        encoding="utf-8",
        timeout=60,
        dimensions=(40, 200),
    )
    child.expect_exact("llamagate chat with")
    child.expect_exact(PROMPT)
    return child


def read_until_prompt(child: pexpect.spawn, timeout_s: float = 60) -> list[tuple[float, str]]:
    """(arrival time, text) of each read until the next prompt: how the user saw the reply appear."""
    pieces: list[tuple[float, str]] = []
    deadline = time.monotonic() + timeout_s
    while not "".join(p for _, p in pieces).endswith(PROMPT):
        assert time.monotonic() < deadline, f"no prompt after: {''.join(p for _, p in pieces)!r}"
        try:
            pieces.append((time.monotonic(), child.read_nonblocking(4096, timeout=1)))
        except pexpect.TIMEOUT:
            continue
    return pieces


def press_ctrl_c_at_the_prompt(child: pexpect.spawn, typed: str) -> None:
    """Type `typed` (no Enter), then Ctrl-C, and wait for the fresh prompt.

    CPython's input() under GNU readline looks for a pending signal only when its select() on the
    terminal is interrupted: a SIGINT that lands while readline is outside that select (drawing the
    prompt, echoing a key) is noticed only at the next key. A person presses Ctrl-C again; so does
    this, at most three times. Waiting for the echo of `typed` first means readline is reading keys.
    """
    child.send(typed)
    child.expect_exact(typed)
    for _ in range(3):
        child.sendintr()
        if child.expect_exact([PROMPT, pexpect.TIMEOUT], timeout=10) == 0:
            return
    raise AssertionError(f"Ctrl-C at the prompt gave no fresh prompt; the terminal shows {child.before!r}")


def test_chat_streams_replies_cancels_on_ctrl_c_and_goes_on(stack: Stack) -> None:
    # --ignore-eos: the demo model ends its replies within a sentence or two; this one must last.
    child = spawn_chat(stack, "--temperature", "0.8", "--seed", "3", "--max-gen-len", "400", "--ignore-eos")
    try:
        # Ctrl-C while a long reply streams: the reply stops, the session returns to the prompt.
        child.sendline("Tell me a very long story.")
        child.expect_exact("llama> ")
        child.expect(r"\S")  # the first streamed text is on screen
        child.sendintr()
        child.expect_exact("[reply cancelled]")
        child.expect_exact(PROMPT)

        # The next turn streams: its text reaches the terminal in several pieces, not at the end.
        child.sendline("Now a short one.")
        pieces = read_until_prompt(child)
        text = "".join(p for _, p in pieces)
        assert "llama> " in text and "error" not in text
        assert len(pieces) >= 3, pieces

        # A refusal shows its categories, and the conversation continues after it.
        child.sendline(UNSAFE)
        child.expect_exact("[refused: your message violates the safety policy: ")
        child.expect("O3 [^(]+\\(")
        child.expect_exact(PROMPT)

        child.sendline("/reset")
        child.expect_exact("(new conversation)")
        child.expect_exact(PROMPT)

        # Ctrl-C at the prompt clears the line typed so far and gives a fresh prompt.
        press_ctrl_c_at_the_prompt(child, typed="draft")
        child.sendline("/exit")  # had "draft" been kept, this line would be a chat turn, not /exit
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_chat_ctrl_d_quits_and_errors_are_one_line(stack: Stack) -> None:
    child = spawn_chat(stack, "--max-gen-len", "8", "--top-p", "7")
    try:
        child.sendline("hello")
        child.expect_exact("error: INVALID_ARGUMENT:")
        child.expect_exact("top_p")
        child.expect_exact(PROMPT)
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_complete_prints_the_continuation_and_json(stack: Stack) -> None:
    plain = llamagate(stack, "complete", "Once upon a time", "--temperature", "0", "--max-gen-len", "16")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip()
    as_json = llamagate(
        stack, "complete", "-", "--json", "--echo", "--temperature", "0", "--max-gen-len", "16",
        stdin="Once upon a time",
    )  # fmt: skip
    assert as_json.returncode == 0, as_json.stderr
    result = json.loads(as_json.stdout)
    assert result["echo"].strip() == "Once upon a time"
    assert result["text"] == plain.stdout.rstrip("\n")
    assert result["finish_reason"] in ("STOP", "LENGTH") and result["request_id"]


def test_complete_reports_refusal_and_bad_key_by_exit_status(stack: Stack) -> None:
    refused = llamagate(stack, "complete", UNSAFE, "--max-gen-len", "8")
    assert refused.returncode == 3, refused.stderr
    assert "[refused by the safety policy: O3" in refused.stderr
    bad_key = llamagate(stack, "complete", "hello", "--api-key", "wrong-key")
    assert bad_key.returncode == 1
    assert "UNAUTHENTICATED" in bad_key.stderr and "--api-key" in bad_key.stderr


def test_health_of_the_gateway_and_a_missing_target(stack: Stack) -> None:
    healthy = llamagate(stack, "health", "--service", "", "--service", "llamagate.v1.ChatService")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert healthy.stdout.count(": SERVING") == 2
    for service_target in (stack.inference_target, stack.safety_target):
        assert llamagate(stack, "health", "--target", service_target).returncode == 0
    unknown = llamagate(stack, "health", "--service", "no.such.Service")
    assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stdout
    nobody = llamagate(stack, "health", "--target", f"127.0.0.1:{free_port()}", "--timeout", "1")
    assert nobody.returncode == 1 and "UNAVAILABLE" in nobody.stdout


def test_complete_into_a_closed_pipe_exits_quietly(stack: Stack) -> None:
    # `llamagate complete ... | head` with head already gone: the first write meets a closed pipe.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "llamagate.cli", "complete", "--max-gen-len", "32", "Once upon a time"],
            cwd=ROOT,
            env=cli_env(stack),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 128 + signal.SIGPIPE, done.stderr
    assert done.stderr == ""


def test_the_make_run_banner_commands_work_when_pasted_into_a_fresh_shell(stack: Stack, tmp_path) -> None:
    services = [
        Service(name, [], int(target.rsplit(":", 1)[1]), tmp_path / f"{name}.log", "127.0.0.1")
        for name, target in (
            ("inference", stack.inference_target),
            ("safety", stack.safety_target),
            ("gateway", stack.gateway_target),
        )
    ]
    text = banner(services, tmp_path, stack.api_key, cli_command())
    lines = [line.strip() for line in text.splitlines()]
    export = next(line for line in lines if line.startswith("export "))
    complete = next(line for line in lines if " complete " in line)
    # A fresh login shell: none of this process's PATH, virtualenv or PYTHONPATH. Seeded: the demo
    # model's unseeded continuation is now and then flagged by the output check (exit 3), which is
    # not what this test is about.
    done = subprocess.run(
        ["env", "-i", f"HOME={tmp_path}", "/bin/sh", "-c", f"{export}\n{complete} --max-gen-len 8 --seed 1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
