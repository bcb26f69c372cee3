"""The `llamagate` command: one entry point, one subcommand module per job."""

from __future__ import annotations

import argparse
import importlib

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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)

