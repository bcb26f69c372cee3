"""Rounding to e4m3 inside Triton kernels, the same on a GPU and in Triton's CPU interpreter.

A plain `x.to(tl.float8e4nv)` is right on the GPU's hardware conversion, but the interpreter
truncates e4m3 subnormals, drops carries into the exponent (124.3 becomes 64, not 128) and turns
values past 448 into NaN. Rounding in fp32 arithmetic first makes the cast that follows exact
whoever converts, so the interpreted tests check what the GPU computes.
"""

from __future__ import annotations

from services.inference.model.fp8 import FP8_MAX

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: no kernel calls this.
    triton = None


if triton is not None:
    _E4M3_MAX = tl.constexpr(FP8_MAX)

    @triton.jit
    def round_to_e4m3(x):  # type: ignore[no-untyped-def]
        """fp32 x saturated to +-448 and rounded to the nearest e4m3 value (ties to even), in fp32."""
        x = tl.minimum(tl.maximum(x, -_E4M3_MAX), _E4M3_MAX)
        exponent = (x.to(tl.int32, bitcast=True) >> 23) & 0xFF
        # e4m3 keeps 3 mantissa bits down to 2^-6, below that steps of 2^-9 (biased exponents).
        step = tl.maximum(exponent, 127 - 6) - 3
        # Adding 1.5 * 2^(step + 23) leaves no fp32 bits below the step, so fp32's own
        # round-to-nearest-even rounds x to a multiple of it.
        magic = (((step + 23) << 23) | (1 << 22)).to(tl.float32, bitcast=True)
        return (x + magic) - magic
