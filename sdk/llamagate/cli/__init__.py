"""The `llamagate` command: one entry point, one subcommand module per job."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

# Each module exposes `register(subparsers)`, which adds its subcommand and sets `func(args) -> int`.
SUBCOMMAND_MODULES = [
    "llamagate.download.command",
    "llamagate.commands.chat",
    "llamagate.commands.complete",
    "llamagate.commands.health",
    "llamagate.commands.audit",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llamagate", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


# The status of a process ended by SIGPIPE, as the shell reports `yes | head`'s `yes`.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # The reader of our output left (`llamagate complete ... | head`): leaving the subcommand
        # has closed its client, so its call is cancelled; stop quietly, as the shell tools do.
        # Output still buffered would fail again when the interpreter flushes stdout at exit,
        # so stdout now points at /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
