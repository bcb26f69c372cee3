"""The Triton kernels of y = x @ W.T for few rows of x and a large W, shared by decode_gemm.py
(bf16/fp16 weights) and fp8_linear.py (e4m3 weights with one scale per output channel).

Each program owns a block of output channels (rows of W), streams them over the whole of K with wide
contiguous loads and writes its outputs itself: no split-K, no reduce kernel. The weight is converted
to fp32 (one row of x) or to x's dtype (`tl.dot`, more rows) in registers; with a scale (FP8 weights)
it multiplies the fp32 accumulator once, before the single rounding to the output's dtype. Each
caller autotunes its own configurations (a byte per FP8 weight wants wider K blocks) through
`tuned`.

A `Fusion` folds the elementwise work around a projection of the decode step into the same kernel,
so a step launches fewer kernels (at batch 1 each costs a few microseconds, the time to read ~10 MB
of weights): the RMSNorm before it (each program sums the squares of x while it streams x anyway
and scales its outputs by the row's 1/rms at the end), the SwiGLU after w13 (a program owns a gate
row and its up row, and writes silu(gate) * up) and the residual add after wo and w2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the callers' reference paths serve them.
    triton = None

# The fixed configuration of Triton's CPU interpreter (tests), which cannot autotune.
INTERPRETER_CONFIG = {"BLOCK_N": 16, "BLOCK_K": 64}


@dataclass(frozen=True)
class Fusion:
    """Elementwise work folded into a projection y = x @ W.T (each part optional):

    norm_weight: x is first RMS-normalised over its last dim and scaled by this weight (eps as the
        model's RMSNorm), so x is the residual stream, not the norm's output;
    glu: W stacks the gate rows over the up rows (w13); the output is silu(x Wg) * (x Wu), half as wide;
    residual: [rows, out] added to the output (wo, w2: the block's residual connection).
    """

    norm_weight: Tensor | None = None
    eps: float = 0.0
    glu: bool = False
    residual: Tensor | None = None

    def out_features(self, weight: Tensor) -> int:
        return weight.shape[0] // 2 if self.glu else weight.shape[0]

    def flags(self) -> dict[str, bool]:
        return {"NORM": self.norm_weight is not None, "GLU": self.glu, "RESIDUAL": self.residual is not None}


NO_FUSION = Fusion()


@dataclass(frozen=True)
class TunedKernels:
    """A caller's autotuned launchers: one row of x, and 2..BLOCK_M rows.

    One row can take either kernel: the GEMV multiplies on the CUDA cores, one conversion and one
    FMA per weight, which for one-byte FP8 weights can cost more than loading them; the tensor-core
    kernel pads the row to 16 and leaves only the conversion. Which is faster depends on the GPU
    and the shape, so it is timed once per (N, K) on first use (`one_row_dot`)."""

    gemv: Any
    skinny: Any
    # (N, K, fused norm, GLU, residual) -> whether one row is faster through the tensor-core kernel.
    one_row_dot: dict[tuple[int, ...], bool] = field(default_factory=dict)


if triton is not None:

    @triton.jit
    def gemv_kernel(  # type: ignore[no-untyped-def]
        X,
        W,
        S,
        Y,
        G,
        R,
        N,
        K,
        stride_wn,
        EPS,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        EVEN_K: tl.constexpr,
        HAS_SCALE: tl.constexpr,
        NORM: tl.constexpr,
        GLU: tl.constexpr,
        RESIDUAL: tl.constexpr,
    ):
        # One row of x: an fp32 [BLOCK_N, BLOCK_K] partial product per step, summed over K once at the end.
        # N counts outputs; with GLU, W has 2N rows (gate rows, then up rows).
        n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        n_ok = n < N
        kk = tl.arange(0, BLOCK_K)
        w_rows = W + n[:, None].to(tl.int64) * stride_wn
        up_rows = W + (n + N)[:, None].to(tl.int64) * stride_wn
        acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        acc_up = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        squares = tl.zeros([BLOCK_K], tl.float32)
        for start in range(0, K, BLOCK_K):
            if EVEN_K:
                k_ok = kk < BLOCK_K
                w = tl.load(w_rows + start + kk[None, :], mask=n_ok[:, None], other=0.0)
                x = tl.load(X + start + kk).to(tl.float32)
            else:
                k_ok = start + kk < K
                w = tl.load(w_rows + start + kk[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0)
                x = tl.load(X + start + kk, mask=k_ok, other=0.0).to(tl.float32)
            if NORM:
                squares += x * x
                x = x * tl.load(G + start + kk, mask=k_ok, other=0.0).to(tl.float32)
            acc += w.to(tl.float32) * x[None, :]
            if GLU:
                up = tl.load(up_rows + start + kk[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0)
                acc_up += up.to(tl.float32) * x[None, :]
        y = tl.sum(acc, 1)
        if HAS_SCALE:
            y = y * tl.load(S + n, mask=n_ok, other=0.0)
        if NORM:
            rstd = tl.rsqrt(tl.sum(squares, 0) / K + EPS)
            y = y * rstd
        if GLU:
            y_up = tl.sum(acc_up, 1)
            if HAS_SCALE:
                y_up = y_up * tl.load(S + N + n, mask=n_ok, other=0.0)
            if NORM:
                y_up = y_up * rstd
            y = y * tl.sigmoid(y) * y_up
        if RESIDUAL:
            y += tl.load(R + n, mask=n_ok, other=0.0).to(tl.float32)
        tl.store(Y + n, y.to(Y.dtype.element_ty), mask=n_ok)

    @triton.jit
    def skinny_kernel(  # type: ignore[no-untyped-def]
        X,
        W,
        S,
        Y,
        G,
        R,
        M,
        N,
        K,
        stride_xm,
        stride_wn,
        stride_ym,
        EPS,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        EVEN_K: tl.constexpr,
        DOT_FP32: tl.constexpr,
        HAS_SCALE: tl.constexpr,
        NORM: tl.constexpr,
        GLU: tl.constexpr,
        RESIDUAL: tl.constexpr,
    ):
        # 2..BLOCK_M rows of x, padded to BLOCK_M (tl.dot needs 16); W is still read once.
        m = tl.arange(0, BLOCK_M)
        m_ok = m < M
        n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        n_ok = n < N
        kk = tl.arange(0, BLOCK_K)
        w_rows = W + n[:, None].to(tl.int64) * stride_wn
        up_rows = W + (n + N)[:, None].to(tl.int64) * stride_wn
        x_rows = X + m[:, None] * stride_xm
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        acc_up = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        squares = tl.zeros([BLOCK_M, BLOCK_K], tl.float32)
        for start in range(0, K, BLOCK_K):
            if EVEN_K:
                k_ok = kk < BLOCK_K
                w = tl.load(w_rows + start + kk[None, :], mask=n_ok[:, None], other=0.0)
                x = tl.load(x_rows + start + kk[None, :], mask=m_ok[:, None], other=0.0)
            else:
                k_ok = start + kk < K
                w = tl.load(w_rows + start + kk[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0)
                x = tl.load(x_rows + start + kk[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
            if NORM:
                xf = x.to(tl.float32)
                squares += xf * xf
                g = tl.load(G + start + kk, mask=k_ok, other=0.0).to(tl.float32)
                x = (xf * g[None, :]).to(X.dtype.element_ty)
            # Triton's CPU interpreter computes bf16 dots wrongly; there (tests only) fp32 is exact.
            if DOT_FP32:
                acc += tl.dot(x.to(tl.float32), tl.trans(w.to(tl.float32)), input_precision="ieee")
            else:
                # Exact for e4m3 weights: every e4m3 value is a bf16 and an fp16 value.
                acc += tl.dot(x, tl.trans(w.to(x.dtype)))
            if GLU:
                up = tl.load(up_rows + start + kk[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0)
                if DOT_FP32:
                    acc_up += tl.dot(x.to(tl.float32), tl.trans(up.to(tl.float32)), input_precision="ieee")
                else:
                    acc_up += tl.dot(x, tl.trans(up.to(x.dtype)))
        if HAS_SCALE:
            acc = acc * tl.load(S + n, mask=n_ok, other=0.0)[None, :]
        if NORM:
            rstd = tl.rsqrt(tl.sum(squares, 1) / K + EPS)[:, None]
            acc = acc * rstd
        if GLU:
            if HAS_SCALE:
                acc_up = acc_up * tl.load(S + N + n, mask=n_ok, other=0.0)[None, :]
            if NORM:
                acc_up = acc_up * rstd
            acc = acc * tl.sigmoid(acc) * acc_up
        out_ok = m_ok[:, None] & n_ok[None, :]
        if RESIDUAL:
            acc += tl.load(R + m[:, None] * stride_ym + n[None, :], mask=out_ok, other=0.0).to(tl.float32)
        y = Y + m[:, None] * stride_ym + n[None, :]
        tl.store(y, acc.to(Y.dtype.element_ty), mask=out_ok)

    def even_k(meta: dict[str, int]) -> bool:
        """The EVEN_K heuristic of a kernel looping over K in BLOCK_K steps: no masked tail."""
        return meta["K"] % meta["BLOCK_K"] == 0

    def block_m(m: int) -> int:
        return max(16, triton.next_power_of_2(m))

    def tuned(gemv_configs: Sequence[Any], skinny_configs: Sequence[Any]) -> TunedKernels:
        """Launchers autotuned over these configurations, per weight shape (and padded row count)
        and fusion: a fused kernel holds more in registers, so its best blocks may differ."""
        fused = ["NORM", "GLU", "RESIDUAL"]
        return TunedKernels(
            gemv=triton.autotune(list(gemv_configs), key=["N", "K", *fused])(
                triton.heuristics({"EVEN_K": even_k})(gemv_kernel)
            ),
            skinny=triton.autotune(list(skinny_configs), key=["N", "K", "BLOCK_M", *fused])(
                triton.heuristics({"EVEN_K": even_k})(skinny_kernel)
            ),
        )

    def _pointers(weight: Tensor, scale: Tensor | None, fusion: Fusion) -> tuple[Tensor, Tensor, Tensor]:
        # Parts a kernel does not read still need a pointer; the weight's will do.
        return (
            scale if scale is not None else weight,
            fusion.norm_weight if fusion.norm_weight is not None else weight,
            fusion.residual if fusion.residual is not None else weight,
        )

    def _launch_tuned(
        kernels: TunedKernels,
        x: Tensor,
        weight: Tensor,
        scale: Tensor | None,
        out: Tensor,
        fusion: Fusion,
        dot: bool,
    ) -> None:
        m, k = x.shape
        n = fusion.out_features(weight)
        s, g, r = _pointers(weight, scale, fusion)
        grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
        flags = fusion.flags()
        if m == 1 and not dot:
            kernels.gemv[grid](
                x, weight, s, out, g, r, n, k, weight.stride(0), fusion.eps,
                HAS_SCALE=scale is not None, **flags,
            )  # fmt: skip
        else:
            kernels.skinny[grid](
                x, weight, s, out, g, r, m, n, k, x.stride(0), weight.stride(0), out.stride(0), fusion.eps,
                BLOCK_M=block_m(m), DOT_FP32=False, HAS_SCALE=scale is not None, **flags,
            )  # fmt: skip

    def _one_row_dot(
        kernels: TunedKernels, x: Tensor, weight: Tensor, scale: Tensor | None, out: Tensor, fusion: Fusion
    ) -> bool:
        key = (weight.shape[0], weight.shape[1], *fusion.flags().values())
        if key not in kernels.one_row_dot:
            if torch.cuda.is_current_stream_capturing():
                raise RuntimeError(f"the one-row kernel for {key} was not chosen before CUDA graph capture")
            timings = []
            for dot in (False, True):
                _launch_tuned(kernels, x, weight, scale, out, fusion, dot)  # autotune first
                timings.append(
                    # do_bench clears L2 before each call, as a decode step finds no weight there.
                    triton.testing.do_bench(
                        lambda dot=dot: _launch_tuned(kernels, x, weight, scale, out, fusion, dot),
                        warmup=5,
                        rep=30,
                        return_mode="median",
                    )
                )
            kernels.one_row_dot[key] = timings[1] < timings[0]
        return kernels.one_row_dot[key]

    def launch(
        kernels: TunedKernels,
        x: Tensor,
        weight: Tensor,
        scale: Tensor | None,
        out: Tensor,
        config: dict[str, int] | None = None,
        num_warps: int = 4,
        one_row_dot: bool | None = None,
        fusion: Fusion = NO_FUSION,
    ) -> None:
        """out [M, N] = (x [M, K] @ weight [N, K].T) (* scale [N]), with `fusion`'s elementwise work;
        autotuned by `kernels`, or with an explicit `config` ({"BLOCK_N", "BLOCK_K"}: tests; the CPU
        interpreter gets a fixed one). `one_row_dot`: one row through the tensor-core kernel (True)
        or the GEMV (False); None: the faster, timed per shape (the GEMV with an explicit config)."""
        m, k = x.shape
        n = fusion.out_features(weight)
        if config is None and not x.is_cuda:
            config = INTERPRETER_CONFIG
        if config is None:
            # A fused one-row projection takes the GEMV without timing the alternative: it won for
            # every fused 7B projection in bf16 on an H200, and each timing compiles a dozen more
            # kernel variants while the runner warms up.
            fused = any(fusion.flags().values())
            dot = m == 1 and (
                one_row_dot
                if one_row_dot is not None
                else not fused and _one_row_dot(kernels, x, weight, scale, out, fusion)
            )
            _launch_tuned(kernels, x, weight, scale, out, fusion, dot)
            return
        s, g, r = _pointers(weight, scale, fusion)
        grid_n = (triton.cdiv(n, config["BLOCK_N"]),)
        even_k = k % config["BLOCK_K"] == 0
        flags = fusion.flags()
        if m == 1 and not one_row_dot:
            gemv_kernel[grid_n](
                x, weight, s, out, g, r, n, k, weight.stride(0), fusion.eps,
                EVEN_K=even_k, HAS_SCALE=scale is not None, num_warps=num_warps, **config, **flags,
            )  # fmt: skip
        else:
            skinny_kernel[grid_n](
                x, weight, s, out, g, r, m, n, k, x.stride(0), weight.stride(0), out.stride(0), fusion.eps,
                BLOCK_M=block_m(m), EVEN_K=even_k, DOT_FP32=not x.is_cuda, HAS_SCALE=scale is not None,
                num_warps=num_warps, **config, **flags,
            )  # fmt: skip
