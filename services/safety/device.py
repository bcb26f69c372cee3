"""Where the classifier runs: `--device` and `--dtype`, resolved once at startup.

`auto` picks CUDA when the machine has it. On CUDA the default dtype is bf16 (fp16 on GPUs
without bf16), except for the embedded classifier, which chooses its own on every device
(`embedded.default_precision`: its trained precision, with rows near a threshold scored again in
fp32, so that its verdicts do not move with the batch); on CPU
it is None, meaning each backend keeps its own CPU choice (the embedded
encoder's trained precision, a transformers checkpoint's saved dtype), because half precision
on a CPU is a different speed/accuracy trade-off per model. Only CPUs with bf16 matrix
instructions run bf16 fast (`cpu_runs_bf16_natively`).
"""

from __future__ import annotations

import argparse

import torch

DEVICES = ("auto", "cpu", "cuda")
DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
}
CPU = torch.device("cpu")


def parse_device(name: str) -> torch.device:
    """argparse `type` for --device: a usage error (exit 2) when CUDA is asked for and absent.

    Failing here, before the port opens, is the point: a pod that silently judged on the CPU
    would pass its health check and then be too slow to serve.
    """
    if name not in DEVICES:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(DEVICES)}, not {name!r}")
    if name == "cpu":
        return CPU
    if torch.cuda.is_available():
        return torch.device("cuda")
    if name == "auto":
        return CPU
    raise argparse.ArgumentTypeError(
        f"cuda was asked for but torch sees no CUDA device (torch {torch.__version__}, "
        f"CUDA build: {torch.version.cuda or 'none'}); run on a GPU node with the CUDA build of "
        "torch, or pass --device cpu"
    )


def resolve_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The weights' dtype for --dtype `name` on `device`; None: the backend's own CPU choice."""
    if name != "auto":
        if name not in DTYPES:
            raise ValueError(f"--dtype must be auto or one of {', '.join(DTYPES)}, not {name!r}")
        return DTYPES[name]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def cuda_runs_bf16() -> bool:
    """Whether the CUDA device computes in bf16 natively (Ampere and newer); False without CUDA."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def cpu_runs_bf16_natively() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX).

    Without them oneDNN converts bf16 in software: on an AVX2-only AMD EPYC core a bf16 linear of
    MiniLM's shape ran at 7 GFLOP/s against 65 in fp32, so a long text took seconds.
    """
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    # Private probes of torch.cpu (inductor uses them); a torch without them counts as "no".
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)
