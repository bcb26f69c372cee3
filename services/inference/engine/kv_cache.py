"""The paged KV cache: fixed-size blocks in one tensor per layer (their free list is blocks.py),
and the `AttentionCache` the model calls during one engine step.

The cache holds keys and values in the model's dtype, or with `kv_cache_dtype` "fp8" in float8 e4m3
without scales: each value rounded to 3 mantissa bits, beyond +-448 saturated (model/fp8.py's
saturate_to_fp8). Writes convert, attention converts what it reads back to the queries' dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# blocks_for stays importable from here (bench/inference_bench.py imports it).
from services.inference.engine.blocks import blocks_for as blocks_for
from services.inference.kernels import kv_write, paged_attention, paged_prefill
from services.inference.model.fp8 import FP8_DTYPE
from services.inference.model.transformer import apply_rotary


def cache_dtype(kv_cache_dtype: str, model_dtype: torch.dtype) -> torch.dtype:
    """What the cache stores keys and values in, for EngineConfig.kv_cache_dtype."""
    return FP8_DTYPE if kv_cache_dtype == "fp8" else model_dtype


def bytes_per_block(n_layers: int, kv_heads: int, head_dim: int, block_size: int, dtype: torch.dtype) -> int:
    """Bytes of keys + values one block holds across all layers (of this rank's heads)."""
    element = torch.empty((), dtype=dtype).element_size()
    return 2 * n_layers * block_size * kv_heads * head_dim * element


class KVStorage:
    """keys/values of every layer: [n_layers, num_blocks, block_size, kv_heads, head_dim] each, in
    the cache's dtype (`cache_dtype`)."""

    def __init__(
        self,
        *,
        n_layers: int,
        num_blocks: int,
        block_size: int,
        kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        shape = (n_layers, num_blocks, block_size, kv_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.block_size = block_size
        self.num_blocks = num_blocks


@dataclass
class StepCache:
    """The `AttentionCache` of one forward: where the new tokens' k/v go and what each row attends.

    tokens are [b, t]; `slots` [b*t] are flat cache slots (block * block_size + offset) of each new
    token; `block_tables` [b, max_blocks] and `context_lens` [b] (tokens cached after this step)
    describe each row's whole sequence; `positions` [b, t] are the new tokens' positions.
    `fresh` means every row starts at position 0, so plain causal attention over the new
    tokens is exact (right padding only adds rows nobody reads); other prefill chunks attend over
    the paged cache in place (paged_prefill.py). `fused_rotary` (decode steps on
    CUDA) has one kernel rotate q/k and store k/v (kv_write.py).
    """

    storage: KVStorage
    slots: Tensor
    block_tables: Tensor
    context_lens: Tensor
    positions: Tensor
    fresh: bool
    fused_rotary: bool = False
    # Decode attention's products on CUDA cores rather than tensor cores (EngineConfig.decode_attention).
    cuda_core_attention: bool = False

    def attend(self, layer_id: int, q: Tensor, k: Tensor, v: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        storage = self.storage
        t = q.shape[1]
        if self.fused_rotary and t == 1:
            # One kernel per layer rotates q/k and stores k/v (instead of four launches).
            q = kv_write.rotary_write_kv(
                q[:, 0], k[:, 0], v[:, 0], cos[:, 0], sin[:, 0], storage.k, storage.v, layer_id, self.slots
            )
            return self._decode(layer_id, q)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        paged_attention.write_kv(storage.k, storage.v, layer_id, self.slots, k, v)
        if t == 1:
            return self._decode(layer_id, q[:, 0])
        if self.fresh:
            # The exact new keys/values, not the cache's copy: with an fp8 cache a prompt's first
            # chunk attends at full precision, later chunks and decode steps over rounded values.
            return F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=True
            ).transpose(1, 2)
        # A chunk continuing a cached prefix reads the prefix where it lies (paged_prefill.py).
        return paged_prefill.prefill(
            q, storage.k, storage.v, layer_id, self.block_tables, self.context_lens, self.positions
        )

    def _decode(self, layer_id: int, q: Tensor) -> Tensor:
        """One query token a row, q [b, h, d], over the paged cache -> [b, 1, h, d]."""
        out = paged_attention.decode(
            q,
            self.storage.k,
            self.storage.v,
            layer_id,
            self.block_tables,
            self.context_lens,
            self.cuda_core_attention,
        )
        return out.unsqueeze(1)


def plan_num_blocks(
    *,
    explicit: int | None,
    block_bytes: int,
    device: torch.device,
    gpu_memory_utilization: float,
    cpu_budget_bytes: int,
    reserve_bytes: int,
) -> int:
    """How many KV blocks to allocate: explicit, else what fits the memory budget.

    On CUDA the budget is `gpu_memory_utilization` of the card minus what is already in use (the
    weights) minus `reserve_bytes` for activations and CUDA graphs; on CPU it is `cpu_budget_bytes`.
    """
    if explicit is not None:
        return explicit
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        budget = int(total * gpu_memory_utilization) - (total - free) - reserve_bytes
    else:
        budget = cpu_budget_bytes
    blocks = budget // block_bytes
    if blocks < 2:
        raise RuntimeError(
            f"no memory left for the KV cache ({budget / 2**30:.2f} GiB budget, {block_bytes} bytes per block): "
            "raise --gpu-memory-utilization, use more GPUs (MP), or set --num-kv-blocks"
        )
    return int(blocks)
