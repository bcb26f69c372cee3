"""Where the engine's Triton kernels can run in a test: on CUDA, or on CPU under TRITON_INTERPRET=1
(which Triton reads when a kernel is defined, so tests/integration/inference_service/
test_kernels_interpreted.py runs the kernel test files again in a child process that sets it)."""

from __future__ import annotations

import os

import pytest
import torch

from services.inference.kernels import skinny_gemm

HAS_TRITON = skinny_gemm.triton is not None
INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
kernels = pytest.mark.skipif(
    not HAS_TRITON or not (CUDA or INTERPRETING), reason="needs Triton on CUDA, or TRITON_INTERPRET=1"
)
