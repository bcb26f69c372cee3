"""Run under torchrun by test_fp8_ranks.py: each rank loads its shard of every checkpoint given with
FP8 weights, and also quantizes the whole model and shards it afterwards; it saves both ways'
weights and logits (before and after fusion) to OUT/<index>.rank<rank>.pt."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist

from services.inference.model.checkpoint import load_model
from services.inference.model.fp8 import quantize_projections
from services.inference.model.fusion import fuse_projections
from services.inference.model.parallel import exit_after_work, init_parallel, shard_model
from tests.support.models import PROMPT_TOKENS


def fp8_both_ways(ckpt: Path) -> dict[str, object]:
    ctx = init_parallel("cpu")
    tokens = torch.tensor(PROMPT_TOKENS)
    # Sharded first, each block quantized as it is read (row-parallel absmax over the ranks).
    loaded = load_model(ckpt, ctx=ctx, dtype=torch.float32, max_seq_len=64, fp8_weights=True)
    # Quantized whole, then sharded: the scales split (or not) with their weights.
    whole = load_model(ckpt, ctx=replace(ctx, rank=0, world_size=1), dtype=torch.float32, max_seq_len=64)
    sharded_after = shard_model(quantize_projections(whole), ctx)
    with torch.inference_mode():
        result: dict[str, object] = {
            "world_size": ctx.world_size,
            "weights": {name: t.clone() for name, t in loaded.state_dict().items()},
            "weights_sharded_after": {name: t.clone() for name, t in sharded_after.state_dict().items()},
            "logits": loaded(tokens),
            "logits_sharded_after": sharded_after(tokens),
            "logits_fused": fuse_projections(loaded)(tokens),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("ckpts", type=Path, nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for index, ckpt in enumerate(args.ckpts):
        result = fp8_both_ways(ckpt)
        torch.save(result, args.out / f"{index}.rank{dist.get_rank() if dist.is_initialized() else 0}.pt")
    exit_after_work()


if __name__ == "__main__":
    main()
