"""Cancelling is an ordinary way for a reply to end: whichever way a client cancels (dropping the
call, a ChatCancel, Ctrl-C in `llamagate chat`), the services' logs hold no error or traceback and
at most one INFO line about that cancellation."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest

from tests.integration.client.test_cli_stack import PROMPT, spawn_chat
from tests.integration.gateway.chat_session import CANCEL, ChatSession, finished_line, start
from tests.support.stack import Stack

pytestmark = pytest.mark.slow

LONG = {"temperature": 0.8, "seed": 3, "max_gen_len": 400, "ignore_eos": True}


def _new_log_text(stack: Stack, before: dict[str, int]) -> dict[str, str]:
    return {p.name: p.log_path.read_text(errors="replace")[before[p.name] :] for p in stack.processes()}


def _log_sizes(stack: Stack) -> dict[str, int]:
    return {p.name: len(p.log_path.read_text(errors="replace")) for p in stack.processes()}


def _finished_ids(stack: Stack, before: dict[str, int]) -> list[str]:
    """The ids of the generations that ended since `before` (bounded wait for the first).

    However fast the engine was, the cancel reaches the services mid-call: the client cancels
    before its reply's done event, so the gateway's call to the inference service is still open.
    """
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.findall(r"request_finished request_id=(\w+)", _new_log_text(stack, before)["inference"])
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no generation ended in:\n{stack.inference.log_tail()}")


def _drop_the_call(stack: Stack) -> None:
    chat = ChatSession(stack)
    chat.send(start("Tell me a very long story.", **LONG))
    request_id = chat.next_event().accepted.request_id
    while not chat.next_event().HasField("delta"):
        pass
    chat.close()
    # The gateway cancels the generation when it sees the call go; wait for it to end.
    assert finished_line(stack, request_id) in ("cancelled", "length")


def _chat_cancel(stack: Stack) -> None:
    with ChatSession(stack) as chat:
        chat.send(start("Tell me a very long story.", **LONG))
        while not chat.next_event().HasField("delta"):
            pass
        chat.send(CANCEL)
        reply = chat.reply()
        assert reply.finish_reason == "FINISH_REASON_CANCELLED"
        finished_line(stack, reply.done.request_id)


def _ctrl_c_in_the_cli(stack: Stack) -> None:
    child = spawn_chat(stack, "--temperature", "0.8", "--seed", "3", "--max-gen-len", "400", "--ignore-eos")
    try:
        child.sendline("Tell me a very long story.")
        child.expect_exact("llama> ")
        child.expect(r"\S")
        child.sendintr()
        child.expect_exact("[reply cancelled]")
        child.expect_exact(PROMPT)
        child.sendeof()
        child.expect(r"$")
    finally:
        child.close(force=True)


@pytest.mark.parametrize(
    "cancel",
    [_drop_the_call, _chat_cancel, _ctrl_c_in_the_cli],
    ids=["client-drops-the-call", "chat-cancel", "cli-ctrl-c"],
)
def test_a_cancel_leaves_no_error_in_the_logs(stack: Stack, cancel: Callable[[Stack], None]) -> None:
    before = _log_sizes(stack)
    cancel(stack)
    [request_id] = _finished_ids(stack, before)
    time.sleep(1)  # let any late unwinding (a dropped generator, a detached context) reach the logs
    logs = _new_log_text(stack, before)
    for name, text in logs.items():
        assert not re.search(r"\bERROR\b|\bCRITICAL\b|Traceback|Failed to detach", text), f"{name}:\n{text}"
        lines = [line for line in text.splitlines() if request_id in line and "cancel" in line.lower()]
        assert len(lines) <= 1, f"{name}:\n" + "\n".join(lines)
