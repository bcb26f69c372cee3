"""FP8-weight projections on CUDA: a Triton skinny GEMM for few rows, FP8 tensor cores for larger
decode batches, a one-pass dequantize for prefill. Measured in bench/RESULTS.md ("FP8 weights").

Up to MAX_ROWS rows of x (decode at small batch, short prompt chunks): memory-bound, so the kernel's
job is to read each fp8 weight once at full bandwidth. The kernels are decode_gemm.py's (skinny_gemm.py): each program owns
a block of output channels, streams its rows of W over the whole of K with wide loads (16 e4m3
values per 16-byte load), converts them in registers and multiplies with the bf16/fp16 activations,
accumulating in fp32; the per-channel scale is applied once to the accumulator before the single
rounding to x's dtype. One row is a plain multiply-accumulate; more go through `tl.dot` on the
weights converted to x's dtype (exact: every e4m3 value is a bf16 and an fp16 value). Activations
stay in bf16: a few KB against megabytes of weights, so quantizing them would save nothing here.

Decode steps of more rows (17..64 streams): FP8 tensor cores, each token's activations quantized
to e4m3 with its own scale and the weights' per-channel scales applied to the accumulator (Hopper,
bf16). `tensor_cores` picks the kernel: "triton" (w8a8_gemm.py: one program per block of output
channels, no split-K) or "cublas" (`torch._scaled_mm` with row-wise scales; it also takes steps of
more than 64 rows). These steps replay from CUDA graphs, which hide the host's cost: on an H200
`_scaled_mm`'s matmuls took 3.1 ms of a 64-row 7B step against bf16's 3.8 ms, where the skinny
kernel at 64 rows (bf16 dot on converted weights) was slower than bf16 cuBLAS.

Prefill (more rows): by default the weight is dequantized to the activations' dtype by one Triton
pass (read 1 byte, write 2 per weight) and multiplied by cuBLAS. Chosen, when prefill ran eagerly,
over `_scaled_mm`, which was both slower (a 512-token 7B prefill: 95 ms against 72 ms dequantized and
38 ms for bf16 weights: each call's host cost showed) and less accurate (per-token FP8 activations on
top of FP8 weights: mean logit error 0.126 against 0.097 of the logits' spread on the random 7B).
With `scaled_mm="always"` the activations are quantized per token by one Triton pass and multiplied
on FP8 tensor cores instead: compiled, 0.77x bf16's prefill GPU time on the 7B shape, where the
dequantizing prefill takes 1.39x (bench/RESULTS.md). A prefill projection is one custom op
(`llamagate::fp8_prefill_linear`) that picks its kernel by row count when it runs: traced Python
would make each side of every row limit a graph of its own, and each prefill graph is the whole
model, compiled at start-up. With the default, prefill costs more with FP8 weights than with bf16
ones; what FP8 buys is decode speed and memory.

Elsewhere (off CUDA, fp32 activations) fp8.FP8Linear's reference runs. `use_fp8_kernels(model)`
gives the model's FP8 projections these paths (called by decode_gemm.use_decode_gemm, which the
runner applies at build); the kernels are custom ops, so torch.compile(fullgraph=True) traces
through them and CUDA graphs capture them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from services.inference.kernels import skinny_gemm, w8a8_gemm
from services.inference.model.fp8 import FP8_DTYPE, FP8_MAX, FP8Linear

try:
    import triton
    import triton.language as tl

    from services.inference.kernels.e4m3 import round_to_e4m3
except ImportError:  # CPU-only installs: the reference forward serves them.
    triton = None

# Rows of x (tokens in the step) up to which the Triton kernel runs.
MAX_ROWS = 16
# Where steps of more rows use FP8 tensor cores (per-token activation scales): "decode" steps only
# (one token a row, replayed from CUDA graphs), "always", or "never" (dequantized weights instead).
SCALED_MM = ("decode", "always", "never")
# Which FP8 tensor-core kernel those steps take (up to w8a8_gemm.MAX_ROWS rows; cuBLAS beyond).
TENSOR_CORES = ("triton", "cublas")
_DTYPES = (torch.bfloat16, torch.float16)


if triton is not None:

    @triton.jit
    def _dequantize_kernel(  # type: ignore[no-untyped-def]
        W, S, OUT, N, K, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr
    ):
        # One read of the fp8 weight and one write of the result: 3 bytes a weight for bf16.
        n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
        ok = (n < N)[:, None] & (k < K)[None, :]
        offsets = n[:, None].to(tl.int64) * K + k[None, :]
        w = tl.load(W + offsets, mask=ok, other=0.0).to(tl.float32)
        scale = tl.load(S + n, mask=n < N, other=0.0)
        tl.store(OUT + offsets, (w * scale[:, None]).to(OUT.dtype.element_ty), mask=ok)

    def _dequantized(weight: Tensor, scale: Tensor, dtype: torch.dtype) -> Tensor:
        n, k = weight.shape
        out = torch.empty(n, k, dtype=dtype, device=weight.device)
        grid = (triton.cdiv(n, 16), triton.cdiv(k, 512))
        _dequantize_kernel[grid](weight.contiguous(), scale, out, n, k, BLOCK_N=16, BLOCK_K=512)
        return out

    @torch.library.custom_op("llamagate::fp8_dequantize", mutates_args=())
    def _fp8_dequantize(weight: Tensor, scale: Tensor, dtype: torch.dtype) -> Tensor:
        return _dequantized(weight, scale, dtype)

    @_fp8_dequantize.register_fake
    def _(weight: Tensor, scale: Tensor, dtype: torch.dtype) -> Tensor:
        return weight.new_empty(weight.shape, dtype=dtype)

    @triton.jit
    def _quantize_rows_kernel(  # type: ignore[no-untyped-def]
        X, Q, S, K, stride_x, FP8_MAX: tl.constexpr, BLOCK_K: tl.constexpr
    ):
        # One program per token: its absmax, then every value over the scale that maps it to
        # FP8_MAX. The row is read twice (the second time from cache) and written once, where the
        # unfused torch ops take half a dozen kernels, each a launch on the host.
        row = tl.program_id(0).to(tl.int64)
        x_row = X + row * stride_x
        amax = tl.zeros([BLOCK_K], dtype=tl.float32)
        for start in range(0, K, BLOCK_K):
            k = start + tl.arange(0, BLOCK_K)
            amax = tl.maximum(amax, tl.abs(tl.load(x_row + k, mask=k < K, other=0.0).to(tl.float32)))
        top = tl.max(amax, axis=0)
        scale = tl.where(top > 0, top / FP8_MAX, 1.0)
        tl.store(S + row, scale)
        for start in range(0, K, BLOCK_K):
            k = start + tl.arange(0, BLOCK_K)
            x = tl.load(x_row + k, mask=k < K, other=0.0).to(tl.float32)
            tl.store(Q + row * K + k, round_to_e4m3(x / scale).to(Q.dtype.element_ty), mask=k < K)

    def quantize_rows_fused(x: Tensor) -> tuple[Tensor, Tensor]:
        """quantize_rows in one Triton kernel: for eager callers (inside a custom op), where
        inductor cannot fuse the torch version's ops."""
        rows = x if x.stride(-1) == 1 else x.contiguous()
        m, k = rows.shape
        values = torch.empty(m, k, dtype=FP8_DTYPE, device=x.device)
        scale = torch.empty(m, 1, dtype=torch.float32, device=x.device)
        if m:
            block_k = min(4096, triton.next_power_of_2(k))
            _quantize_rows_kernel[(m,)](
                rows, values, scale, k, rows.stride(0), FP8_MAX=FP8_MAX, BLOCK_K=block_k, num_warps=8
            )
        return values, scale

    # Wider K blocks than decode_gemm's: a byte per weight, so a 16-byte load per thread is 16 of them.
    _GEMV_CONFIGS = [
        triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
        for bn, bk, w, s in [
            (2, 4096, 4, 1),
            (4, 2048, 4, 1),
            (4, 2048, 8, 2),
            (4, 1024, 4, 3),
            (8, 1024, 4, 1),
            (8, 1024, 4, 2),
            (8, 2048, 8, 1),
            (8, 512, 4, 4),
            (16, 512, 4, 2),
            (16, 512, 8, 3),
            (16, 1024, 8, 1),
            (16, 1024, 4, 2),
            (32, 512, 8, 2),
            (32, 256, 4, 3),
            (32, 256, 8, 4),
            (64, 128, 8, 4),
        ]
    ]
    _SKINNY_CONFIGS = [
        triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
        for bn, bk, w, s in [
            (16, 256, 4, 3),
            (16, 512, 4, 2),
            (32, 256, 4, 3),
            (32, 256, 4, 4),
            (32, 512, 4, 2),
            (32, 512, 8, 3),
            (64, 128, 4, 3),
            (64, 256, 4, 3),
            (64, 256, 8, 3),
            (64, 128, 4, 4),
            (128, 64, 4, 4),
            (128, 128, 8, 3),
        ]
    ]
    _TUNED = skinny_gemm.tuned(_GEMV_CONFIGS, _SKINNY_CONFIGS)

    def launch(
        x: Tensor,
        weight: Tensor,
        scale: Tensor,
        out: Tensor,
        config: dict[str, int] | None = None,
        num_warps: int = 4,
        one_row_dot: bool | None = None,
        fusion: skinny_gemm.Fusion = skinny_gemm.NO_FUSION,
    ) -> None:
        """out [M, N] = (x [M, K] @ weight [N, K].T) * scale [N]; autotuned, or with an explicit `config`
        ({"BLOCK_N", "BLOCK_K"}: tests; Triton's CPU interpreter, which cannot autotune, gets a fixed one).
        `one_row_dot`, `fusion`: see skinny_gemm.launch."""
        skinny_gemm.launch(_TUNED, x, weight, scale, out, config, num_warps, one_row_dot, fusion)

    def _skinny_matmul(x: Tensor, weight: Tensor, scale: Tensor) -> Tensor:
        rows = x.reshape(-1, x.shape[-1])
        if rows.stride(-1) != 1:
            rows = rows.contiguous()
        result = torch.empty(*x.shape[:-1], weight.shape[0], dtype=x.dtype, device=x.device)
        launch(rows, weight, scale, result.view(-1, weight.shape[0]))
        return result

    @torch.library.custom_op("llamagate::fp8_matmul", mutates_args=())
    def _fp8_matmul(x: Tensor, weight: Tensor, scale: Tensor) -> Tensor:
        return _skinny_matmul(x, weight, scale)

    @_fp8_matmul.register_fake
    def _(x: Tensor, weight: Tensor, scale: Tensor) -> Tensor:
        return x.new_empty(*x.shape[:-1], weight.shape[0])

    @torch.library.custom_op("llamagate::fp8_prefill_linear", mutates_args=())
    def _fp8_prefill_linear(
        x: Tensor, weight: Tensor, scale: Tensor, max_rows: int, fp8_activations: bool, tensor_cores: str
    ) -> Tensor:
        # The kernels as plain calls: already inside an op, no second trip through the dispatcher.
        rows = math.prod(x.shape[:-1])
        if 1 <= rows <= max_rows and weight.stride(-1) == 1:
            return _skinny_matmul(x, weight, scale)
        if fp8_activations:
            return scaled_matmul(x, weight, scale, tensor_cores, quantize=quantize_rows_fused)
        return F.linear(x, _dequantized(weight, scale, x.dtype))

    @_fp8_prefill_linear.register_fake
    def _(
        x: Tensor, weight: Tensor, scale: Tensor, max_rows: int, fp8_activations: bool, tensor_cores: str
    ) -> Tensor:
        return x.new_empty(*x.shape[:-1], weight.shape[0])


def kernel_applies(x: Tensor, weight: Tensor, max_rows: int = MAX_ROWS) -> bool:
    """Few rows (decode steps, and short prompt chunks) of bf16/fp16 activations on CUDA."""
    rows = math.prod(x.shape[:-1])
    return (
        triton is not None
        and x.is_cuda
        and 1 <= rows <= max_rows
        and x.dtype in _DTYPES
        and weight.stride(-1) == 1
    )


def scaled_mm_supported(weight: Tensor) -> bool:
    """Whether torch._scaled_mm with row-wise scales serves this weight: Hopper or newer, dims
    multiples of 16 (the activations must also be bf16, checked per call)."""
    return (
        weight.is_cuda
        and weight.shape[0] % 16 == 0
        and weight.shape[1] % 16 == 0
        and weight.stride(-1) == 1
        and torch.cuda.get_device_capability(weight.device) >= (9, 0)
    )


def quantize_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """[M, K] activations -> (e4m3 [M, K], fp32 [M, 1] scales): each token's absmax maps to 448."""
    amax = x.abs().amax(dim=-1, keepdim=True).float()
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE), scale


def scaled_matmul(
    x: Tensor,
    weight: Tensor,
    scale: Tensor,
    tensor_cores: str = "cublas",
    quantize: Callable[[Tensor], tuple[Tensor, Tensor]] = quantize_rows,
) -> Tensor:
    """x [..., K] @ (weight * scale[:, None]).T with per-token FP8 activations, on FP8 tensor cores:
    through `tensor_cores`' kernel (one of TENSOR_CORES; the Triton one up to its MAX_ROWS rows).
    `quantize`: how the activations become e4m3 (quantize_rows, or its one-kernel form)."""
    rows = x.reshape(-1, x.shape[-1])
    values, row_scale = quantize(rows)
    if tensor_cores == "triton" and rows.shape[0] <= w8a8_gemm.MAX_ROWS and w8a8_gemm.triton is not None:
        out = w8a8_gemm.matmul(values, row_scale, weight, scale, x.dtype)
    else:
        # weight.t() is [K, N] column-major: the layout _scaled_mm wants for its second operand.
        out = torch._scaled_mm(
            values, weight.t(), scale_a=row_scale, scale_b=scale[None, :], out_dtype=x.dtype
        )
    return out.view(*x.shape[:-1], weight.shape[0])


class FP8KernelLinear(FP8Linear):
    """An FP8Linear whose CUDA products take the Triton kernel (up to `max_rows` rows) or, beyond,
    FP8 tensor cores (where `scaled_mm` says) or the weights dequantized by one Triton pass."""

    # Set per module by use_fp8_kernels, not per call: a device query does not trace.
    max_rows: int = MAX_ROWS
    scaled_mm: str = "never"
    tensor_cores: str = TENSOR_CORES[0]

    def forward(self, x: Tensor) -> Tensor:
        decode = x.dim() == 3 and x.shape[1] == 1
        if not decode and triton is not None and x.is_cuda and x.dtype in _DTYPES:
            # Prefill: the row count is dynamic there, so the kernel is chosen inside the op.
            fp8_activations = self.scaled_mm == "always" and x.dtype == torch.bfloat16
            return torch.ops.llamagate.fp8_prefill_linear(
                x, self.weight, self.scale, self.max_rows, fp8_activations, self.tensor_cores
            )
        # Decode: each batch size is a graph of its own anyway, so the choice can be traced.
        if kernel_applies(x, self.weight, self.max_rows):
            return torch.ops.llamagate.fp8_matmul(x, self.weight, self.scale)
        if x.dtype == torch.bfloat16 and (
            self.scaled_mm == "always" or (self.scaled_mm == "decode" and decode)
        ):
            return scaled_matmul(x, self.weight, self.scale, self.tensor_cores)
        if triton is not None and x.is_cuda:
            return F.linear(x, torch.ops.llamagate.fp8_dequantize(self.weight, self.scale, x.dtype))
        return super().forward(x)

    def extra_repr(self) -> str:
        return (
            super().extra_repr()
            + f", kernel up to {self.max_rows} rows, FP8 tensor cores: {self.scaled_mm} ({self.tensor_cores})"
        )


def use_fp8_kernels(
    model: nn.Module,
    on: bool = True,
    max_rows: int = MAX_ROWS,
    scaled_mm: str = SCALED_MM[0],
    tensor_cores: str = TENSOR_CORES[0],
) -> int:
    """Give every FP8 projection the CUDA paths (or, with on=False, the reference back), in place:
    the class changes, the module (its weights, scales and tensor-parallel hooks) stays.
    max_rows: the most rows the Triton kernel takes; scaled_mm: one of SCALED_MM, for the steps of
    more rows (where the GPU supports it; else they dequantize); tensor_cores: one of TENSOR_CORES,
    the kernel those steps take. Returns how many projections are FP8."""
    if scaled_mm not in SCALED_MM:
        raise ValueError(f"scaled_mm must be one of {', '.join(SCALED_MM)}, not {scaled_mm!r}")
    if tensor_cores not in TENSOR_CORES:
        raise ValueError(f"tensor_cores must be one of {', '.join(TENSOR_CORES)}, not {tensor_cores!r}")
    layers = [module for module in model.modules() if isinstance(module, FP8Linear)]
    for module in layers:
        module.__class__ = FP8KernelLinear if on else FP8Linear
        if isinstance(module, FP8KernelLinear):
            module.max_rows = max_rows
            module.scaled_mm = scaled_mm if scaled_mm_supported(module.weight) else "never"
            module.tensor_cores = tensor_cores
    return len(layers)
