"""One stack for every client test (SDK, CLI, Node): starting one takes a while on CPU."""

from __future__ import annotations

from tests.support.stack import StackConfig, stack_fixture

# Small moderation chunks, so text is released (and seen streaming) a few tokens at a time.
stack = stack_fixture(StackConfig(gateway_args=("--chunk-tokens", "2")), scope="package")  # type: ignore[arg-type]
