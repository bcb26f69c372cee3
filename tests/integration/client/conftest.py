"""One stack for every client test (SDK, CLI, Node): starting one takes a while on CPU."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from tests.support.stack import StackConfig, stack_fixture

# Small moderation chunks, so text is released (and seen streaming) a few tokens at a time. A long
# safety timeout: on a busy 2-core machine one check of a reply's many small chunks can queue past
# the 2 s default, and the reply then fails closed (UNAVAILABLE), which no client test is about.
stack = stack_fixture(
    StackConfig(gateway_args=("--chunk-tokens", "2", "--safety-timeout-s", "15")),
    scope="package",  # type: ignore[arg-type]
)


@pytest.fixture(autouse=True)
def interrupt_as_at_a_terminal() -> Iterator[None]:
    """The CLI tests stand in for a person at a terminal, whose shell starts a command with SIGINT at
    its default. A test runner started in the background (nohup, `&` without job control) ignores
    SIGINT, every child inherits that, and Python then keeps ignoring it: Ctrl-C at the chat prompt
    would do nothing. A handled signal is reset to its default on exec, so handle it here."""
    if signal.getsignal(signal.SIGINT) != signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
