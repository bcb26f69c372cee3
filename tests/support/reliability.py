"""The reliability suite's stack: the three real services on loopback, the inference service
exporting its scheduler gauges, the gateway auditing the judged text (so the suite can prove every
delivered token was checked); and a second gateway on the same backends for tests that need other
flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import ServiceProcess, free_port, python_module
from tests.support.stack import Stack, StackConfig

# Replies are kept short: the suite measures the system, not the demo model's speed.
INFERENCE_ARGS = ("--device", "cpu", "--max-seq-len", "512", "--max-batch-size", "16", "--max-queue", "256")


@dataclass
class ReliabilityStack:
    stack: Stack
    inference_metrics_port: int


# The suite proves correctness under load, not a latency target: on a 2-core CI box shared by
# inference, the classifier and 64 clients a safety call can queue past the 2 s default, and the
# gateway would then (by design, failing closed) end the reply UNAVAILABLE. A killed safety
# service still fails fast: its connection drops.
SAFETY_TIMEOUT_S = "15"


def reliability_stack_config(metrics_port: int, *gateway_args: str) -> StackConfig:
    return StackConfig(
        inference_args=(*INFERENCE_ARGS, "--metrics-port", str(metrics_port)),
        gateway_args=("--audit-text", "--safety-timeout-s", SAFETY_TIMEOUT_S, *gateway_args),
    )


def gateway_options() -> set[str]:
    """The gateway's command-line flags (to name a missing limit precisely rather than crash)."""
    from services.gateway.config import build_parser

    return {option for action in build_parser()._actions for option in action.option_strings}


def start_extra_gateway(rstack: ReliabilityStack, workdir: Path, *args: str) -> ServiceProcess:
    """A second gateway on the suite's backends with extra flags (the suite's gateway is untouched)."""
    stack = rstack.stack
    port = free_port()
    process = ServiceProcess(
        "gateway-extra",
        python_module(
            "services.gateway",
            "--inference-target", stack.inference_target,
            "--safety-target", stack.safety_target,
            "--api-keys", str(stack.workdir / "api_keys.yaml"),
            "--audit-dir", str(workdir / "audit"),
            "--port", str(port),
            "--host", "127.0.0.1",
            "--metrics-port", "0",
            "--log-format", "text",
            *args,
        ),
        port,
        workdir / "gateway-extra.log",
    )  # fmt: skip
    return process.start(timeout_s=60)
