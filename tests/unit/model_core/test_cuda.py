"""bf16 on CUDA: the demo model loads in the GPU's dtype, matches fp32 on CPU, and generates."""

from __future__ import annotations

import pytest
import torch

from services.common.sampling import SamplingParams
from services.inference.demo import DemoPaths
from services.inference.model.checkpoint import default_dtype, load_model
from services.inference.model.generation import Llama
from services.inference.model.parallel import ParallelContext
from tests.support.models import CPU_MP1

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_half_precision_on_cuda_matches_fp32_on_cpu(demo: DemoPaths) -> None:
    cuda = ParallelContext(0, 1, 0, torch.device("cuda", 0), "nccl")
    dtype = default_dtype(cuda.device)
    assert dtype in (torch.bfloat16, torch.float16)
    gpu_model = load_model(demo.ckpt_dir, ctx=cuda, dtype=dtype, max_seq_len=256)
    cpu_model = load_model(demo.ckpt_dir, ctx=CPU_MP1, dtype=torch.float32, max_seq_len=256)
    assert {p.device.type for p in gpu_model.parameters()} == {"cuda"}
    assert gpu_model.rope_cos.device.type == "cuda" and gpu_model.rope_cos.dtype == torch.float32
    tokens = torch.randint(3, 1000, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        on_gpu = gpu_model(tokens.cuda())
        on_cpu = cpu_model(tokens)
    assert on_gpu.dtype == torch.float32
    # Half-precision weights: agreement to a few percent of the logit scale, and the same top token mostly.
    scale = on_cpu.abs().max().item()
    assert (on_gpu.cpu() - on_cpu).abs().max().item() < 0.05 * scale
    assert (on_gpu.argmax(-1).cpu() == on_cpu.argmax(-1)).float().mean().item() > 0.9


def test_generation_runs_on_cuda(demo: DemoPaths) -> None:
    llama = Llama.build(demo.ckpt_dir, demo.tokenizer, max_seq_len=128, max_batch_size=2, device="cuda")
    results = llama.text_completion(
        ["Hello", "The river froze"], SamplingParams(temperature=0.8, max_gen_len=16)
    )
    assert len(results) == 2 and all(isinstance(r.generation, str) for r in results)
