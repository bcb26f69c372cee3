"""The FP8 Triton kernels on CPU: tests/unit/engine/test_fp8_kernels.py run again under
TRITON_INTERPRET=1, which Triton reads when a kernel is defined (so in a child process)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from services.inference.kernels import fp8_linear
from tests.support.processes import ROOT

KERNEL_TESTS = ROOT / "tests" / "unit" / "engine" / "test_fp8_kernels.py"


@pytest.mark.skipif(
    fp8_linear.triton is None or torch.cuda.is_available(),
    reason="needs Triton; on CUDA the kernels run natively",
)
def test_fp8_kernels_pass_under_the_triton_interpreter_on_cpu() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-m",
        "not gpu",
        str(KERNEL_TESTS),
    ]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and " skipped" not in done.stdout, done.stdout[-2000:]
