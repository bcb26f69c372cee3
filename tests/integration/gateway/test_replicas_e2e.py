"""Several inference replicas behind one target: the gateway spreads turns over all of them."""

from __future__ import annotations

import re

import pytest

from tests.integration.gateway.chat_session import ChatSession, GatewayAddress, start
from tests.support.processes import ServiceProcess, free_port, python_module
from tests.support.stack import DEFAULT_POLICY, demo_model, require_services, write_api_keys

pytestmark = pytest.mark.slow


def test_turns_are_spread_round_robin_over_inference_replicas(tmp_path):
    require_services()
    ckpt_dir, tokenizer = demo_model()
    common = ("--host", "127.0.0.1", "--metrics-port", "0", "--log-format", "text")
    replicas = []
    for i in range(2):
        port = free_port()
        replicas.append(
            ServiceProcess(
                f"inference-{i}",
                python_module("services.inference", "--ckpt-dir", str(ckpt_dir), "--tokenizer-path", str(tokenizer),
                              "--device", "cpu", "--max-seq-len", "256", "--port", str(port), *common),
                port,
                tmp_path / f"inference-{i}.log",
            )
        )  # fmt: skip
    safety_port, gateway_port = free_port(), free_port()
    safety = ServiceProcess(
        "safety",
        python_module("services.safety", "--policy", str(DEFAULT_POLICY), "--classifier", "embedded",
                      "--port", str(safety_port), *common),
        safety_port,
        tmp_path / "safety.log",
    )  # fmt: skip
    write_api_keys(tmp_path / "keys.yaml", "k", {})
    # One target naming every replica, as a DNS name with several A records resolves.
    target = "ipv4:" + ",".join(r.target for r in replicas)
    gateway = ServiceProcess(
        "gateway",
        python_module("services.gateway", "--inference-target", target, "--safety-target", safety.target,
                      "--api-keys", str(tmp_path / "keys.yaml"), "--audit-dir", str(tmp_path / "audit"),
                      "--port", str(gateway_port), *common),
        gateway_port,
        tmp_path / "gateway.log",
    )  # fmt: skip
    processes = [*replicas, safety, gateway]
    try:
        # The backends start side by side; the gateway once they serve.
        for process in (*replicas, safety):
            process.start(wait=False)
        for process in (*replicas, safety):
            process.wait_serving()
        gateway.start()

        for i in range(6):
            with ChatSession(GatewayAddress(gateway.target, "k")) as chat:
                chat.send(start(f"Hello {i}", temperature=0.0, max_gen_len=2))
                assert chat.reply().done.request_id
        served = [len(re.findall("request_finished", r.log_path.read_text())) for r in replicas]
        assert sum(served) == 6 and min(served) >= 2, served
    finally:
        for process in processes:
            process.terminate(timeout_s=15)
