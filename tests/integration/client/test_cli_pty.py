"""`llamagate chat` in a pseudo-terminal against a scripted ChatService that streams slowly.

The real stack's version is test_cli_stack.py; this one pins the terminal behaviour (streaming,
Ctrl-C cancels the reply not the session) without the stack, in a few seconds.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator

import pexpect
import pytest

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


def test_ctrl_c_cancels_the_streaming_reply_and_the_prompt_comes_back(target: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LLAMAGATE_TARGET": target, "LLAMAGATE_API_KEY": "k"}
    child = pexpect.spawn(
        sys.executable, ["-m", "llamagate.cli", "chat"], cwd=str(ROOT), env=env, encoding="utf-8", timeout=20
    )
    try:
        child.expect_exact("you> ")
        child.sendline("tell me a story")
        child.expect_exact("llama> w0 ")
        child.expect_exact("w3 ")  # more words keep arriving: the reply streams
        child.sendintr()
        child.expect_exact("[reply cancelled]")
        assert "w59" not in child.before
        child.expect_exact("you> ")
        child.sendline("again")
        child.expect_exact(f"w{WORDS - 1} ")
        child.expect_exact("you> ")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
