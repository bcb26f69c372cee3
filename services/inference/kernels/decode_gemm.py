"""Skinny matmuls for decode steps: y = x @ W.T with few rows of x (1..16) and a large W.

At small batch a decode step is bound by reading the weights once. cuBLAS picks 128x8-tile kernels
for these shapes, some with split-K plus a separate reduce kernel (64 reduce launches per 7B step).
Here each Triton program owns a block of output columns (rows of W), streams its rows of W over the
whole of K with wide contiguous loads, and writes its outputs itself: no split-K and no reduce.
One row of x (batch 1) is a plain multiply-accumulate in fp32; 2..16 rows go through `tl.dot` (the
kernels are in skinny_gemm.py, shared with the FP8 weights of fp8_linear.py).

`use_decode_gemm(model, kind)` swaps the model's projections for `DecodeLinear`s sharing the same
weights (the model code does not change, as tensor parallelism is applied to a built model):
"cublas" keeps nn.Linear, "triton" always uses the kernel for decode steps of <= 16 rows on CUDA
(bf16/fp16), and "auto" times both once per shape while the runner warms up and keeps the faster.
Anything else (CPU, fp32, prefill, more rows) runs F.linear. FP8 projections (model/fp8.py) are
not nn.Linears: whatever `kind`, they take fp8_linear.py's kernels, and `kind` applies to the rest
(the output head).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from services.inference.kernels import DECODE_GEMMS, skinny_gemm
from services.inference.kernels.fp8_linear import use_fp8_kernels

try:
    import triton
    import triton.testing
except ImportError:  # CPU-only installs: F.linear serves them.
    triton = None

MAX_ROWS = 16
_DTYPES = (torch.bfloat16, torch.float16)

# "auto": per (rows, out, in, dtype), whether the Triton kernel beat cuBLAS while warming up.
# Module-level because the custom op below sees only tensors and scalars, not the module that called
# it; the answer depends on the GPU and the shape alone, so one per process is the right scope.
_auto_choice: dict[tuple[int, int, int, torch.dtype], bool] = {}


if triton is not None:
    _GEMV_CONFIGS = [
        triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
        for bn, bk, w, s in [
            (2, 2048, 4, 1),
            (4, 1024, 4, 1),
            (4, 2048, 8, 1),
            (8, 512, 4, 1),
            (8, 1024, 4, 2),
            (8, 1024, 8, 1),
            (16, 256, 4, 2),
            (16, 512, 4, 1),
            (16, 512, 8, 2),
            (32, 256, 4, 2),
            (32, 256, 8, 3),
            (32, 512, 8, 1),
        ]
    ]
    _SKINNY_CONFIGS = [
        triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
        for bn, bk, w, s in [
            (16, 256, 4, 3),
            (16, 512, 4, 2),
            (32, 128, 4, 4),
            (32, 256, 4, 3),
            (32, 256, 8, 3),
            (64, 128, 4, 4),
            (64, 256, 8, 3),
        ]
    ]
    _TUNED = skinny_gemm.tuned(_GEMV_CONFIGS, _SKINNY_CONFIGS)

    def launch(
        x: Tensor,
        weight: Tensor,
        out: Tensor,
        config: dict[str, int] | None = None,
        num_warps: int = 4,
        one_row_dot: bool | None = None,
        fusion: skinny_gemm.Fusion = skinny_gemm.NO_FUSION,
    ) -> None:
        """out [M, N] = x [M, K] @ weight [N, K].T; autotuned, or with an explicit `config`
        ({"BLOCK_N", "BLOCK_K"}: tests; Triton's CPU interpreter, which cannot autotune, gets a fixed one).
        `one_row_dot`, `fusion`: see skinny_gemm.launch."""
        skinny_gemm.launch(_TUNED, x, weight, None, out, config, num_warps, one_row_dot, fusion)

    def _device_ms(fn: Callable[[], object]) -> float:
        # Triton's timer clears L2 before each call (a decode step finds no weight in L2) and keeps
        # the GPU busy meanwhile, so the host's launch cost (higher for Triton) is not counted.
        return float(triton.testing.do_bench(fn, warmup=5, rep=30, return_mode="median"))

    def _triton_wins(x: Tensor, weight: Tensor, out: Tensor) -> bool:
        key = (x.shape[0], weight.shape[0], weight.shape[1], x.dtype)
        if key not in _auto_choice:
            if torch.cuda.is_current_stream_capturing():
                raise RuntimeError(f"decode GEMM 'auto' was not timed for {key} before CUDA graph capture")
            launch(x, weight, out)  # autotune first, so its timing is of the best config
            triton_ms = _device_ms(lambda: launch(x, weight, out))
            cublas_ms = _device_ms(lambda: torch.mm(x, weight.t(), out=out))
            _auto_choice[key] = triton_ms < cublas_ms
        return _auto_choice[key]

    @torch.library.custom_op("llamagate::decode_matmul", mutates_args=())
    def _decode_matmul(x: Tensor, weight: Tensor, kind: str) -> Tensor:
        rows = x.reshape(-1, x.shape[-1])
        if rows.stride(-1) != 1:
            rows = rows.contiguous()
        result = torch.empty(*x.shape[:-1], weight.shape[0], dtype=x.dtype, device=x.device)
        out = result.view(-1, weight.shape[0])
        if kind == "triton" or _triton_wins(rows, weight, out):
            launch(rows, weight, out)
        else:
            torch.mm(rows, weight.t(), out=out)
        return result

    @_decode_matmul.register_fake
    def _(x: Tensor, weight: Tensor, kind: str) -> Tensor:
        return x.new_empty(*x.shape[:-1], weight.shape[0])


def auto_choices() -> dict[str, bool]:
    """What "auto" picked so far, "rows x out x in" -> Triton won (for the benchmark's report)."""
    return {f"{m}x{n}x{k}": won for (m, n, k, _), won in sorted(_auto_choice.items(), key=str)}


def kernel_applies(x: Tensor, weight: Tensor) -> bool:
    """Decode steps only ([b, 1, dim] activations, b <= 16): their row counts are the captured batch
    sizes, tuned while the runner warms up, where short prompts would each bring a new one."""
    return (
        triton is not None
        and x.is_cuda
        and x.dim() == 3
        and x.shape[1] == 1
        and x.shape[0] <= MAX_ROWS
        and x.dtype in _DTYPES
        and weight.dtype == x.dtype
        and weight.stride(-1) == 1
    )


class DecodeLinear(nn.Linear):
    """A bias-free nn.Linear whose few-row products on CUDA go through `kind` ("triton" or "auto")."""

    def __init__(self, weight: nn.Parameter, kind: str) -> None:
        super().__init__(weight.shape[1], weight.shape[0], bias=False, device="meta")
        self.weight = weight
        self.kind = kind

    def forward(self, x: Tensor) -> Tensor:
        if kernel_applies(x, self.weight):
            return torch.ops.llamagate.decode_matmul(x, self.weight, self.kind)
        return F.linear(x, self.weight)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", kind={self.kind}"


def _projections(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(parent, attribute) of every weight read in a decode step: the layers' projections and the
    output head (the embedding is a lookup, not a matmul)."""
    names = ("wq", "wk", "wv", "wqkv", "wo", "w1", "w2", "w3", "w13", "output")
    found: list[tuple[nn.Module, str]] = []
    for parent in model.modules():
        for name in names:
            child = getattr(parent, name, None)
            if isinstance(child, nn.Linear) and child.bias is None:
                found.append((parent, name))
    return found


def use_decode_gemm(model: nn.Module, kind: str) -> None:
    """Make the model's projections run `kind` ("cublas", "triton" or "auto"), in place; the weights
    are shared, not copied, so this can switch back and forth on a loaded model."""
    if kind not in DECODE_GEMMS:
        raise ValueError(f"unknown decode GEMM {kind!r}: use one of {', '.join(DECODE_GEMMS)}")
    use_fp8_kernels(model)
    for parent, name in _projections(model):
        old = getattr(parent, name)
        if kind == "cublas" and type(old) is nn.Linear:
            continue
        weight = old.weight
        if kind == "cublas":
            new = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
            new.weight = weight
        else:
            new = DecodeLinear(weight, kind)
        # Tensor parallelism hangs its collectives on modules as hooks (parallel.py): keep them.
        new._forward_hooks = old._forward_hooks
        new._forward_pre_hooks = old._forward_pre_hooks
        new._forward_hooks_with_kwargs = old._forward_hooks_with_kwargs
        new._forward_hooks_always_called = old._forward_hooks_always_called
        setattr(parent, name, new)
