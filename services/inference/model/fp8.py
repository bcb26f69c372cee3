"""FP8 projection weights: float8_e4m3fn values with one fp32 scale per output channel.

Why: a decode step at small batch reads every weight once and little else, so its speed is the
weights' bytes over memory bandwidth. One byte per weight instead of bf16's two halves that read;
it also fits 70B (about 68 GB) on one or two H200s.

Format: `weight` [out, in] float8_e4m3fn and `scale` [out] fp32 with scale = absmax(row) / 448
(e4m3's largest finite value), so every row uses the whole e4m3 range and w ~= weight * scale[:, None].
Per output channel because the rows of a Llama projection differ in magnitude by orders of
magnitude; one scale per tensor would flush the small rows towards e4m3's subnormals.

What is quantized: the transformer layers' projections (wq/wk/wv/wo/w1/w2/w3, or the fused
wqkv/w13), over 97% of the bytes a 7B decode step reads. What stays in the activation dtype:
- the embedding: a lookup of one row per token, so it costs no bandwidth per step;
- the norms: vectors of `dim` values;
- the output head: 2-3% of the bytes, but its error lands on the logits unscaled by anything after
  it, where sampling and greedy ties read it; it also sets the KV cache's dtype (engine/runner.py)
  unless the cache is asked for in FP8 (`--kv-cache-dtype fp8`, engine/kv_cache.py).

Scales are per output row, so quantizing commutes with every split tensor parallelism makes along
the output dim (column-parallel: a rank's rows carry their own scales) and with fusion (stacking
rows stacks scales). A row-parallel weight (wo, w2) has each row split across ranks: its absmax is
taken over the whole row (`parallel.whole_row_absmax`), so every rank holds the same scale vector as
MP 1 and the same fp8 values in its block. Quantizing at load, per tensor as it is read
(checkpoint.py), keeps the peak at the fp8 model plus one weight in bf16.

This module holds the format and the reference forward (dequantize, then F.linear), which runs on
CPU and in tests as the oracle. On CUDA, kernels/fp8_linear.py swaps in the fast paths (a Triton
skinny GEMM for few rows, FP8 tensor cores for larger decode batches, a one-pass dequantize for
prefill); the model code does not change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8_DTYPE).max)
# Hopper (9.0) and Ada (8.9) have FP8 tensor cores and convert e4m3 in hardware.
MIN_CAPABILITY = (8, 9)
# The options that ask for FP8, and what their `auto` gives instead.
FP8_FLAGS = {"--weights-dtype": "bf16 weights", "--kv-cache-dtype": "keys and values cached in --dtype"}
# The projections quantized, by attribute name (separate and fused).
PROJECTIONS = ("wq", "wk", "wv", "wqkv", "wo", "w1", "w2", "w3", "w13")


class FP8Unsupported(ValueError):
    """FP8 weights or an FP8 KV cache were asked for on a device that cannot run them."""


def check_fp8_device(device: torch.device, flag: str = "--weights-dtype") -> None:
    """Refuse a CUDA device without FP8 support, naming it, what is needed and what `flag` (one of
    FP8_FLAGS, the option that asked for FP8) can say instead. CPU is accepted: there the reference
    paths run (for weights: half the weight memory, slower than plain weights, each forward
    dequantizes), which is what tests and CPU checks of an FP8 deployment use."""
    if device.type != "cuda":
        return
    index = device.index if device.index is not None else torch.cuda.current_device()
    capability = torch.cuda.get_device_capability(index)
    if capability < MIN_CAPABILITY:
        name = torch.cuda.get_device_name(index)
        need = ".".join(map(str, MIN_CAPABILITY))
        raise FP8Unsupported(
            f"{flag} fp8 needs a GPU with FP8 support (compute capability {need} or newer: "
            f"L4, L40S, H100, H200); cuda:{index} is {name} with compute capability "
            f"{capability[0]}.{capability[1]}: serve with {flag} auto ({FP8_FLAGS[flag]}) instead"
        )


def saturate_to_fp8(x: Tensor) -> Tensor:
    """x in e4m3, values beyond +-FP8_MAX clamped to it: a plain cast turns them into NaN (e4m3fn
    has no inf)."""
    return x.clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)


def row_absmax(weight: Tensor) -> Tensor:
    """[out, in] -> the largest |value| of each row, fp32 [out]."""
    return weight.abs().amax(dim=1).float()


def quantize(weight: Tensor, absmax: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """[out, in] weight -> (float8_e4m3fn [out, in], fp32 scales [out]).

    absmax: each row's largest |value| when it is known beyond this block (a row-parallel shard);
    by default this block's own.
    """
    amax = row_absmax(weight) if absmax is None else absmax.float()
    # An all-zero row keeps scale 1: any scale reproduces it, and 0 would divide by zero.
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    # Clamped: rounding a value at the very top of the range must not overflow to NaN (e4m3fn has no inf).
    values = (weight.float() / scale[:, None]).clamp_(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return values, scale


def dequantize(weight: Tensor, scale: Tensor, dtype: torch.dtype) -> Tensor:
    """fp8 [out, in] and fp32 [out] -> the weight in `dtype` (the product taken in fp32)."""
    return (weight.float() * scale[:, None]).to(dtype)


class FP8Linear(nn.Module):
    """A bias-free linear layer over an fp8 weight and per-output-channel scales.

    Weight and scale are frozen Parameters, so parameter counts, `named_parameters` and moves
    between devices see them; `.to(dtype)` leaves them as they are (see `_apply`).
    """

    def __init__(self, weight: Tensor, scale: Tensor) -> None:
        super().__init__()
        if weight.dtype != FP8_DTYPE or scale.dtype != torch.float32:
            raise TypeError(
                f"FP8Linear takes {FP8_DTYPE} weights and fp32 scales, got {weight.dtype}/{scale.dtype}"
            )
        if weight.dim() != 2 or tuple(scale.shape) != (weight.shape[0],):
            raise ValueError(
                f"one scale per output row: weight {tuple(weight.shape)}, scale {tuple(scale.shape)}"
            )
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.scale = nn.Parameter(scale, requires_grad=False)

    @classmethod
    def from_weight(cls, weight: Tensor, absmax: Tensor | None = None) -> FP8Linear:
        return cls(*quantize(weight.detach(), absmax))

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, dequantize(self.weight, self.scale, x.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weight=fp8 e4m3, per-channel scales"

    def _apply(self, fn: Any, recurse: bool = True) -> FP8Linear:
        # Module.to(dtype) casts every floating tensor, fp8 included: a bf16 "weight" without its
        # scale would be silently wrong. Only the device moves; the dtypes are the format.
        # The tensors, not the Parameters: Module._apply may swap a Parameter's data in place.
        weight, scale = self.weight.data, self.scale.data
        super()._apply(fn, recurse)
        if self.weight.dtype != weight.dtype:
            self.weight = nn.Parameter(weight.to(self.weight.device), requires_grad=False)
        if self.scale.dtype != scale.dtype:
            self.scale = nn.Parameter(scale.to(self.scale.device), requires_grad=False)
        return self


# (name of the weight in model naming, e.g. "layers.3.attention.wo.weight", this block's row absmax)
# -> the row absmax to quantize with. parallel.whole_row_absmax widens it to whole rows over ranks.
AbsmaxOf = Callable[[str, Tensor], Tensor]


def _own_absmax(name: str, absmax: Tensor) -> Tensor:
    return absmax


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def quantize_projections(model: ModuleT, absmax_of: AbsmaxOf = _own_absmax) -> ModuleT:
    """Replace every layer projection (any bias-free nn.Linear named in PROJECTIONS under
    `model.layers`) with an FP8Linear, in place; the output head and embedding stay as they are.

    Works before or after fusion and sharding, on real or meta tensors; forward hooks (tensor
    parallelism's collectives) move to the new module. Each bf16 weight is freed as it is replaced.
    """
    layers = model.get_submodule("layers")
    for parent_name, parent in layers.named_modules(prefix="layers"):
        for name in PROJECTIONS:
            old = getattr(parent, name, None)
            if not isinstance(old, nn.Linear) or old.bias is not None:
                continue
            weight_name = f"{parent_name}.{name}.weight"
            absmax = absmax_of(weight_name, row_absmax(old.weight.detach()))
            new = FP8Linear.from_weight(old.weight, absmax)
            new._forward_hooks = old._forward_hooks
            new._forward_pre_hooks = old._forward_pre_hooks
            new._forward_hooks_with_kwargs = old._forward_hooks_with_kwargs
            new._forward_hooks_always_called = old._forward_hooks_always_called
            setattr(parent, name, new)
    return model


def fp8_layers(model: nn.Module) -> list[FP8Linear]:
    return [module for module in model.modules() if isinstance(module, FP8Linear)]
