"""`llamagate chat` in a pseudo-terminal against a scripted ChatService that streams slowly.

The real stack's version is test_cli_stack.py; this one pins the terminal behaviour (streaming,
Ctrl-C cancels the reply not the session) without the stack, in a few seconds.
"""

from __future__ import annotations

import asyncio
import os
import pty
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from pexpect.fdpexpect import fdspawn

from llamagate.v1 import chat_service_pb2 as chat_pb
from llamagate.v1 import types_pb2
from tests.support.fake_gateway import ChatCall, FakeChatService, accepted, delta, done, serve_in_thread
from tests.support.processes import ROOT

pytestmark = pytest.mark.slow

WORDS = 60


async def slow_story(call: ChatCall) -> None:
    """Each turn: up to WORDS words, one every 50 ms, until a ChatCancel arrives."""
    turns: asyncio.Queue[chat_pb.ChatRequest | None] = asyncio.Queue()
    cancelled = asyncio.Event()

    async def read_all() -> None:
        while (request := await call.next_request()) is not None:
            if request.HasField("cancel"):
                cancelled.set()
            else:
                await turns.put(request)
        await turns.put(None)

    reader = asyncio.ensure_future(read_all())
    try:
        while await turns.get() is not None:
            cancelled.clear()
            request_id = f"r{len(call.received)}"
            await call.send(accepted(request_id))
            finish = types_pb2.FINISH_REASON_STOP
            for i in range(WORDS):
                if cancelled.is_set():
                    finish = types_pb2.FINISH_REASON_CANCELLED
                    break
                await call.send(delta(f"w{i} "))
                await asyncio.sleep(0.05)
            await call.send(done(request_id, finish))
    finally:
        reader.cancel()


@pytest.fixture
def target() -> Iterator[str]:
    service = FakeChatService()
    service.chat_script = slow_story
    with serve_in_thread(service) as address:
        yield address


def spawn_in_terminal(argv: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], fdspawn]:
    """Run argv on a new pseudo-terminal and return it with a pexpect handle on the terminal's master.

    subprocess starts the child with vfork + exec, so no fork handler of this process runs in the
    child: pexpect.spawn forks with pty.fork(), and in a process where gRPC already runs (the scripted
    gateway's server thread) the child could die in gRPC's poller between fork and exec ("epoll_wait:
    Bad file descriptor") before the CLI ever started.
    """
    master, slave = pty.openpty()
    try:
        process = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, cwd=str(ROOT), env=env, start_new_session=True
        )
    finally:
        os.close(slave)
    return process, fdspawn(master, encoding="utf-8", timeout=20)


def test_ctrl_c_cancels_the_streaming_reply_and_the_prompt_comes_back(target: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LLAMAGATE_TARGET": target, "LLAMAGATE_API_KEY": "k"}
    process, child = spawn_in_terminal([sys.executable, "-m", "llamagate.cli", "chat"], env)
    try:
        child.expect_exact("you> ")
        child.sendline("tell me a story")
        child.expect_exact("llama> w0 ")
        child.expect_exact("w3 ")  # more words keep arriving: the reply streams
        # What the terminal sends the foreground process on Ctrl-C.
        process.send_signal(signal.SIGINT)
        child.expect_exact("[reply cancelled]")
        assert "w59" not in child.before
        child.expect_exact("you> ")
        child.sendline("again")
        child.expect_exact(f"w{WORDS - 1} ")
        child.expect_exact("you> ")
        child.sendline("/exit")
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=20)
        child.close()
