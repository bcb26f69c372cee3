"""The Triton kernels on CPU: tests/unit/engine/test_decode_kernels.py (decode step),
test_decode_block.py (the decode block's fused projections),
test_paged_prefill.py (prefill attention over the paged cache) and test_fp8_kernels.py (FP8 weights)
run again under TRITON_INTERPRET=1, which Triton reads when a kernel is defined (so in a child
process)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from services.inference.kernels import kv_write
from tests.support.processes import ROOT

ENGINE_TESTS = ROOT / "tests" / "unit" / "engine"


@pytest.mark.skipif(
    kv_write.triton is None or torch.cuda.is_available(),
    reason="needs Triton; on CUDA the kernels run natively",
)
@pytest.mark.parametrize(
    "tests",
    ["test_decode_kernels.py", "test_decode_block.py", "test_paged_prefill.py", "test_fp8_kernels.py"],
)
def test_kernels_pass_under_the_triton_interpreter_on_cpu(tests: str) -> None:
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
        str(ENGINE_TESTS / tests),
    ]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and " skipped" not in done.stdout, done.stdout[-2000:]
