"""`llamagate chat`: an interactive conversation that streams each reply as it is generated.

Ctrl-C while a reply streams cancels that reply and returns to the prompt (a second Ctrl-C quits);
Ctrl-C at the prompt clears the line. /reset starts a new conversation, /exit or Ctrl-D quits.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from llamagate.client import (
    ApiError,
    ChatSession,
    Direction,
    FinishReason,
    Reply,
    SafetyCheck,
    SafetyRefusal,
    Sampling,
    TextChunk,
)
from llamagate.commands.options import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    ConnectionConfig,
    add_connection_arguments,
    add_sampling_arguments,
    connection_config_from_args,
    report_error,
    sampling_from_args,
)

PROMPT = "you> "
ASSISTANT = "llama> "
HELP = "/reset starts a new conversation, /exit (or Ctrl-D) quits, Ctrl-C stops a reply"


@dataclass(frozen=True)
class ChatConfig:
    connection: ConnectionConfig
    system_prompt: str
    sampling: Sampling
    show_usage: bool


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "chat",
        help="talk with a chat model through the gateway (replies stream as they are generated)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--system", default="", help="system prompt for the conversation")
    parser.add_argument("--usage", action="store_true", help="print request id and token counts per reply")
    add_connection_arguments(parser)
    add_sampling_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        connection = connection_config_from_args(args, os.environ)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    config = ChatConfig(connection, args.system, sampling_from_args(args), args.usage)
    if sys.stdin.isatty():
        # Line editing and history for input(); absent on some platforms, where input() still works.
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401
    with connection.client() as client:
        session = client.chat(system_prompt=config.system_prompt, sampling=config.sampling)
        try:
            return Repl(session, config, input, sys.stdout, sys.stderr).run()
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        finally:
            session.close()


class Repl:
    def __init__(
        self,
        session: ChatSession,
        config: ChatConfig,
        read_line: Callable[[str], str],
        out: TextIO,
        err: TextIO,
    ) -> None:
        self._session = session
        self._config = config
        self._read_line = read_line
        self._out = out
        self._err = err

    def run(self) -> int:
        print(f"llamagate chat with {self._config.connection.target} ({HELP})", file=self._out, flush=True)
        while True:
            try:
                line = self._read_line(PROMPT).strip()
            except EOFError:
                print(file=self._out)
                return 0
            except KeyboardInterrupt:
                print(file=self._out)
                continue
            if not line:
                continue
            if line in ("/exit", "/quit"):
                return 0
            if line == "/reset":
                self._session.reset()
                print("(new conversation)", file=self._out, flush=True)
                continue
            if line.startswith("/") and " " not in line:
                print(f"unknown command {line}: {HELP}", file=self._out, flush=True)
                continue
            self._turn(line)

    def _turn(self, line: str) -> None:
        print(ASSISTANT, end="", file=self._out, flush=True)
        try:
            reply = self._session.send(line)
            with _interrupt_cancels(reply):
                for event in reply:
                    if isinstance(event, TextChunk):
                        self._out.write(event.text)
                        self._out.flush()
                    elif isinstance(event, SafetyCheck) and event.refusal is not None:
                        self._show_refusal(event.refusal)
        except ApiError as error:
            print(file=self._out, flush=True)
            report_error(error, self._config.connection, self._err)
            return
        print(file=self._out)
        if reply.finish_reason is FinishReason.CANCELLED:
            print("[reply cancelled]", file=self._out)
        elif reply.finish_reason is FinishReason.LENGTH:
            print("[reply cut at its length limit]", file=self._out)
        if self._config.show_usage:
            usage = reply.usage
            print(
                f"[{reply.request_id}: {usage.prompt_tokens} prompt ({usage.cached_prompt_tokens} cached)"
                f" + {usage.completion_tokens} reply tokens]",
                file=self._out,
            )
        self._out.flush()

    def _show_refusal(self, refusal: SafetyRefusal) -> None:
        side = "your message" if refusal.direction is Direction.INPUT else "the reply"
        categories = ", ".join(f"{c.code} {c.name} ({c.score:.2f})" for c in refusal.categories)
        print(file=self._out)
        print(f"[refused: {side} violates the safety policy: {categories or 'unspecified'}]", file=self._out)
        if refusal.message:
            print(refusal.message, end="", file=self._out)
        self._out.flush()


@contextlib.contextmanager
def _interrupt_cancels(reply: Reply) -> Iterator[None]:
    """While `reply` streams, the first SIGINT cancels it; a second one interrupts as usual."""
    presses = 0

    def on_interrupt(signum: int, frame: object) -> None:
        nonlocal presses
        presses += 1
        if presses > 1:
            raise KeyboardInterrupt
        reply.cancel()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
