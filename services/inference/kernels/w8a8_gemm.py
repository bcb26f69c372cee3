"""FP8 activations times FP8 weights on tensor cores, for decode steps of 17..64 rows (Triton).

At 64 rows a 7B decode step is still bound by reading the weights (64 FLOPs per weight byte, where
an H200 needs several hundred to be compute-bound), so the kernel's job is the GEMV's: stream each
e4m3 weight once at full bandwidth. Unlike the skinny GEMM (skinny_gemm.py), whose bf16 `tl.dot`
needs every weight converted in registers first, here both operands are e4m3 (each token's
activations quantized with its own scale, fp8_linear.quantize_rows), so the loaded tiles go to the
FP8 tensor cores as they are. The per-token and per-channel scales multiply the fp32 accumulator
once, before the single rounding to the output dtype; the same numerics as `torch._scaled_mm` with
row-wise scales, which it replaces where it is faster.

One program owns BLOCK_N output channels over the whole of K, so no second pass sums partial
results (a split-K reduce would be one more launch per projection, 128 per 7B step). All rows sit in
one BLOCK_M tile: the weights are read once, the activations (a few hundred KB) once per program
from L2.
"""

from __future__ import annotations

import torch
from torch import Tensor

from services.inference.kernels import skinny_gemm

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: fp8_linear's other paths serve them.
    triton = None

# Most rows one launch takes (one tile).
MAX_ROWS = 64
# Triton's CPU interpreter (tests only) gets a fixed configuration: it cannot autotune.
INTERPRETER_CONFIG = {"BLOCK_N": 32, "BLOCK_K": 64}


if triton is not None:
    _CONFIGS = [
        triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
        for bn, bk, w, s in [
            (16, 256, 4, 4),
            (16, 512, 4, 3),
            (32, 128, 4, 5),
            (32, 256, 4, 4),
            (32, 512, 4, 3),
            (64, 128, 4, 5),
            (64, 256, 4, 4),
            (64, 256, 8, 3),
            (128, 128, 4, 4),
            (128, 128, 8, 5),
            (128, 256, 8, 3),
        ]
    ]

    @triton.jit
    def w8a8_kernel(  # type: ignore[no-untyped-def]
        X,
        XS,
        W,
        WS,
        Y,
        M,
        N,
        K,
        stride_xm,
        stride_wn,
        stride_ym,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        EVEN_K: tl.constexpr,
        DOT_FP32: tl.constexpr,
    ):
        m = tl.arange(0, BLOCK_M)
        m_ok = m < M
        n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        n_ok = n < N
        kk = tl.arange(0, BLOCK_K)
        x_rows = X + m[:, None] * stride_xm
        w_rows = W + n[:, None].to(tl.int64) * stride_wn
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for start in range(0, K, BLOCK_K):
            if EVEN_K:
                x = tl.load(x_rows + start + kk[None, :], mask=m_ok[:, None], other=0.0)
                w = tl.load(w_rows + start + kk[None, :], mask=n_ok[:, None], other=0.0)
            else:
                k_ok = start + kk < K
                x = tl.load(x_rows + start + kk[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
                w = tl.load(w_rows + start + kk[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0)
            # Triton's CPU interpreter has no e4m3 dot; fp32 holds every e4m3 value and product exactly.
            if DOT_FP32:
                acc += tl.dot(x.to(tl.float32), tl.trans(w.to(tl.float32)), input_precision="ieee")
            else:
                # W [N, K] is K-major, the layout FP8 tensor cores take for their second operand.
                acc = tl.dot(x, tl.trans(w), acc)
        x_scale = tl.load(XS + m, mask=m_ok, other=0.0)
        w_scale = tl.load(WS + n, mask=n_ok, other=0.0)
        acc = acc * x_scale[:, None] * w_scale[None, :]
        y = Y + m[:, None] * stride_ym + n[None, :]
        tl.store(y, acc.to(Y.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])

    # Per weight shape and row tile: the best channel block differs between wo (4096 channels:
    # few programs unless the block is narrow) and w13 (22016).
    _TUNED = triton.autotune(_CONFIGS, key=["N", "K", "BLOCK_M"])(
        triton.heuristics({"EVEN_K": skinny_gemm.even_k})(w8a8_kernel)
    )

    def launch(
        x: Tensor,
        x_scale: Tensor,
        weight: Tensor,
        scale: Tensor,
        out: Tensor,
        config: dict[str, int] | None = None,
        num_warps: int = 4,
    ) -> None:
        """out [M, N] = (x [M, K] * x_scale [M]) @ (weight [N, K] * scale [N]).T, x and weight e4m3,
        M <= MAX_ROWS; autotuned, or with an explicit `config` ({"BLOCK_N", "BLOCK_K"}: tests)."""
        m, k = x.shape
        n = weight.shape[0]
        if m > MAX_ROWS:
            raise ValueError(f"the W8A8 kernel takes at most {MAX_ROWS} rows, got {m}")
        block_m = max(16, triton.next_power_of_2(m))
        if config is None and not x.is_cuda:
            config = INTERPRETER_CONFIG
        if config is None:
            grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
            _TUNED[grid](
                x, x_scale, weight, scale, out, m, n, k, x.stride(0), weight.stride(0), out.stride(0),
                BLOCK_M=block_m, DOT_FP32=False,
            )  # fmt: skip
            return
        w8a8_kernel[(triton.cdiv(n, config["BLOCK_N"]),)](
            x, x_scale, weight, scale, out, m, n, k, x.stride(0), weight.stride(0), out.stride(0),
            BLOCK_M=block_m, EVEN_K=k % config["BLOCK_K"] == 0, DOT_FP32=not x.is_cuda,
            num_warps=num_warps, **config,
        )  # fmt: skip

    @torch.library.custom_op("llamagate::fp8_w8a8", mutates_args=())
    def _fp8_w8a8(
        x: Tensor, x_scale: Tensor, weight: Tensor, scale: Tensor, out_dtype: torch.dtype
    ) -> Tensor:
        out = torch.empty(x.shape[0], weight.shape[0], dtype=out_dtype, device=x.device)
        launch(x if x.stride(-1) == 1 else x.contiguous(), x_scale.reshape(-1), weight, scale, out)
        return out

    @_fp8_w8a8.register_fake
    def _(x: Tensor, x_scale: Tensor, weight: Tensor, scale: Tensor, out_dtype: torch.dtype) -> Tensor:
        return x.new_empty(x.shape[0], weight.shape[0], dtype=out_dtype)


def matmul(x: Tensor, x_scale: Tensor, weight: Tensor, scale: Tensor, out_dtype: torch.dtype) -> Tensor:
    """The kernel as a custom op (torch.compile traces through it, CUDA graphs capture it): e4m3
    x [M, K] with fp32 x_scale [M, 1], e4m3 weight [N, K] with fp32 scale [N] -> [M, N] out_dtype."""
    return torch.ops.llamagate.fp8_w8a8(x, x_scale, weight, scale, out_dtype)
