"""One sequence through a paged KV cache step by step, as the engine's steps attend over it: the
prompt as one fresh prefill step, then one decode step per token. For comparing what a cache's
dtype does to the logits (tests, bench/fp8_bench.py), not for serving: no batching, no graphs."""

from __future__ import annotations

import torch

from services.inference.engine.kv_cache import KVStorage, StepCache, cache_dtype
from services.inference.model.transformer import Transformer

BLOCK_SIZE = 4


def decode_through_cache(
    model: Transformer,
    prompt: list[int],
    n: int,
    kv_cache_dtype: str,
    forced: list[int] | None = None,
) -> tuple[list[int], torch.Tensor]:
    """-> the n greedy tokens after `prompt` and the logits each was taken from ([n, vocab]), over a
    cache of `kv_cache_dtype` (EngineConfig's) on the model's device; `forced` feeds these n tokens
    instead (teacher forcing), so two caches can be compared at the same positions."""
    device = model.output.weight.device
    blocks = -(-(len(prompt) + n) // BLOCK_SIZE)
    storage = KVStorage(
        n_layers=model.args.n_layers,
        num_blocks=blocks + 1,  # block 0 stays reserved, as the allocator keeps it
        block_size=BLOCK_SIZE,
        kv_heads=model.args.kv_heads,
        head_dim=model.args.head_dim,
        dtype=cache_dtype(kv_cache_dtype, model.output.weight.dtype),
        device=device,
    )
    table = torch.arange(1, blocks + 1, dtype=torch.int32, device=device)[None]
    tokens, logits = list(prompt), []
    with torch.inference_mode():
        for step in range(n):
            start = 0 if step == 0 else len(tokens) - 1
            positions = torch.arange(start, len(tokens), device=device)[None]
            cache = StepCache(
                storage,
                slots=(table[0, positions[0] // BLOCK_SIZE] * BLOCK_SIZE + positions[0] % BLOCK_SIZE).long(),
                block_tables=table,
                context_lens=torch.tensor([len(tokens)], dtype=torch.int32, device=device),
                positions=positions,
                fresh=step == 0,
            )
            last = model(torch.tensor([tokens[start:]], device=device), positions, cache)[0, -1]
            logits.append(last)
            tokens.append(int(last.argmax()) if forced is None else forced[step])
    return tokens[len(prompt) :], torch.stack(logits)
