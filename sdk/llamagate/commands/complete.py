"""`llamagate complete`: continue a text prompt with a pretrained model, streaming the output.

Exit status: 0 done, 1 error, 3 refused by the safety policy, 130 interrupted (Ctrl-C cancels).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from llamagate.client import ApiError, Completion, FinishReason, Sampling, TextChunk
from llamagate.commands.options import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_REFUSED,
    ConnectionConfig,
    add_connection_arguments,
    add_sampling_arguments,
    connection_config_from_args,
    report_error,
    sampling_from_args,
)


@dataclass(frozen=True)
class CompleteConfig:
    connection: ConnectionConfig
    prompt: str
    sampling: Sampling
    echo: bool
    as_json: bool


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "complete",
        help="continue a text prompt with a pretrained model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("prompt", nargs="?", default="-", help="the prompt; '-' or omitted: read stdin")
    parser.add_argument("--echo", action="store_true", help="print the prompt before its continuation")
    parser.add_argument("--logprobs", action="store_true", help="ask for token logprobs (shown with --json)")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end instead")
    add_connection_arguments(parser)
    add_sampling_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        connection = connection_config_from_args(args, os.environ)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    sampling = sampling_from_args(args)
    if args.logprobs:
        sampling = sampling.merged(Sampling(logprobs=True))
    config = CompleteConfig(connection, prompt, sampling, args.echo, args.json)
    with connection.client() as client:
        completion = client.complete(config.prompt, sampling=config.sampling, echo=config.echo)
        try:
            return stream(completion, config, sys.stdout, sys.stderr)
        except KeyboardInterrupt:
            completion.cancel()
            print("\n[cancelled]", file=sys.stderr)
            return EXIT_INTERRUPTED


def stream(completion: Completion, config: CompleteConfig, out: TextIO, err: TextIO) -> int:
    try:
        for event in completion:
            if isinstance(event, TextChunk) and not config.as_json:
                out.write(event.text)
                out.flush()
        completion.wait()
    except ApiError as error:
        if not config.as_json:
            print(file=out)
        return report_error(error, config.connection, err)
    refusal = completion.refusal
    if config.as_json:
        json.dump(_as_json(completion), out, indent=2)
    elif refusal is not None:
        codes = ", ".join(f"{c.code} {c.name} ({c.score:.2f})" for c in refusal.categories)
        print(f"\n[refused by the safety policy: {codes or 'unspecified'}] {refusal.message}", file=err)
    print(file=out)
    if completion.finish_reason is FinishReason.CANCELLED:
        return EXIT_INTERRUPTED
    return EXIT_REFUSED if refusal is not None else 0


def _as_json(completion: Completion) -> dict[str, Any]:
    refusal = completion.refusal
    return {
        "text": completion.text,
        "echo": completion.echo_text,
        "finish_reason": completion.finish_reason.name,
        "request_id": completion.request_id,
        "usage": {
            "prompt_tokens": completion.usage.prompt_tokens,
            "completion_tokens": completion.usage.completion_tokens,
            "cached_prompt_tokens": completion.usage.cached_prompt_tokens,
        },
        "tokens": [
            {"text": c.text, "token_ids": list(c.token_ids), "logprobs": list(c.logprobs), "echo": c.echo}
            for c in completion.chunks
        ],
        "refusal": None
        if refusal is None
        else {
            "direction": refusal.direction.name,
            "message": refusal.message,
            "categories": [{"code": c.code, "name": c.name, "score": c.score} for c in refusal.categories],
        },
    }
