"""One stack for every client test (SDK, CLI, Node): starting one takes a while on CPU."""

from __future__ import annotations

from tests.support.stack import StackConfig, stack_fixture

# Small moderation chunks, so text is released (and seen streaming) a few tokens at a time. A long
# safety timeout: on a busy 2-core machine one check of a reply's many small chunks can queue past
# the 2 s default, and the reply then fails closed (UNAVAILABLE), which no client test is about.
stack = stack_fixture(
    StackConfig(gateway_args=("--chunk-tokens", "2", "--safety-timeout-s", "15")),
    scope="package",  # type: ignore[arg-type]
)
