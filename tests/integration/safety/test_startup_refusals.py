"""The safety service's real entry point refuses a configuration it cannot serve: exit code 2,
before it listens, with a message that says what to pass instead."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from services.safety.policy import POLICIES_DIR
from tests.support.processes import ROOT, python_module

pytestmark = pytest.mark.slow


def test_cuda_without_a_cuda_device_stops_the_service_at_startup() -> None:
    """The real entry point, with every GPU hidden from torch: exit 2 and a message saying what to do."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        python_module("services.safety", "--device", "cuda", "--port", "0"),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "argument --device: cuda was asked for but torch sees no CUDA device" in proc.stderr
    assert "--device cpu" in proc.stderr


def test_a_mismatched_policy_stops_the_service_before_it_listens(tmp_path: Path) -> None:
    """The real entry point: the O-coded Llama Guard 1 policy with Llama Guard 3 is exit code 2."""
    flags = ["--classifier", "llama-guard", "--model-dir", str(tmp_path), "--llama-guard-version", "3"]
    policy = ["--policy", str(POLICIES_DIR / "llama_guard.yaml")]
    proc = subprocess.run(
        python_module("services.safety", *flags, *policy, "--port", "0"),
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "does not fit --llama-guard-version 3" in proc.stderr
    assert "--policy services/safety/policies/mlcommons.yaml" in proc.stderr
    assert "listening" not in proc.stderr
