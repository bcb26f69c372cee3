"""Cached prompt tokens as users see them: in the inference service's usage, and through the
gateway in the SDK's `Usage` and the CLI's `--usage` line, for a chat whose second turn extends
its first (the prefix cache serves the first turn's blocks)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid

import pytest

from llamagate.client import ChatClient, Sampling
from llamagate.v1 import inference_service_pb2_grpc as pb_grpc
from tests.support.inference_service import channel, generate, start_request, wait_all_blocks_free
from tests.support.processes import ROOT, ServiceProcess
from tests.support.stack import Stack, stack_fixture

pytestmark = pytest.mark.slow

stack = stack_fixture(scope="module")
GREEDY = Sampling(temperature=0.0, max_gen_len=16)
BLOCK = 16  # the service's default --kv-block-size


async def test_a_repeated_prompt_reports_its_cached_tokens_and_the_same_reply(mp1: ServiceProcess) -> None:
    # Unique, so no earlier test of the shared service has cached it.
    prompt = f"{uuid.uuid4().hex} the quick brown fox jumps over the lazy dog again and again"
    async with channel(mp1) as ch:
        stub = pb_grpc.InferenceServiceStub(ch)
        first = await generate(stub, start_request(prompt, n=8))
        second = await generate(stub, start_request(prompt, n=8))
        await wait_all_blocks_free(stub)
    assert first.done is not None and second.done is not None
    assert second.tokens == first.tokens
    assert first.done.usage.cached_prompt_tokens == 0
    usage = second.done.usage
    # Every full block before the last prompt token, which is always computed.
    assert usage.cached_prompt_tokens == (usage.prompt_tokens - 1) // BLOCK * BLOCK > 0


def test_the_sdk_reports_the_cached_history_of_a_second_turn(stack: Stack) -> None:
    with ChatClient(stack.gateway_target, api_key=stack.api_key) as client:
        session = client.chat(
            system_prompt="Answer in one short sentence about the weather.", sampling=GREEDY
        )
        first = session.send("Tell me about the sea and the boats on it.")
        assert first.text and first.usage.cached_prompt_tokens == 0
        second = session.send("And the sky?")
        assert second.text
    usage = second.usage
    # The second prompt starts with the first prompt and its reply, so it finds at least the
    # first prompt's full blocks.
    assert first.usage.prompt_tokens // BLOCK * BLOCK <= usage.cached_prompt_tokens < usage.prompt_tokens


def llamagate(stack: Stack, *args: str, stdin: str = "") -> str:
    """The CLI's stdout, run as a user would with target and key exported."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LLAMAGATE_TARGET": stack.gateway_target,
        "LLAMAGATE_API_KEY": stack.api_key,
    }
    done = subprocess.run(
        [sys.executable, "-m", "llamagate.cli", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_cli_prints_cached_prompt_tokens_with_usage(stack: Stack) -> None:
    out = llamagate(
        stack,
        *("chat", "--usage", "--temperature", "0", "--max-gen-len", "16"),
        stdin="Tell me a long story about the old lighthouse keeper.\nWhat happened next?\n",
    )
    lines = re.findall(r"\[\S+: (\d+) prompt \((\d+) cached\) \+ (\d+) reply tokens\]", out)
    assert len(lines) == 2, out
    (prompt_1, cached_1, _), (prompt_2, cached_2, _) = [tuple(map(int, line)) for line in lines]
    assert cached_1 == 0 and prompt_1 // BLOCK * BLOCK <= cached_2 < prompt_2


def test_complete_json_reports_cached_prompt_tokens(stack: Stack) -> None:
    prompt = f"{uuid.uuid4().hex} once upon a time in a small village by the sea there lived"
    args = ("complete", "--json", "--temperature", "0", "--max-gen-len", "4", prompt)
    first, second = (json.loads(llamagate(stack, *args))["usage"] for _ in range(2))
    assert first["cached_prompt_tokens"] == 0
    assert second["cached_prompt_tokens"] == (second["prompt_tokens"] - 1) // BLOCK * BLOCK > 0
