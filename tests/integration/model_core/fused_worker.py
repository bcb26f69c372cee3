"""Run under torchrun by test_fused_shards.py: each rank loads its shard of every checkpoint given,
computes logits before and after `fuse_projections`, and saves them to OUT/<index>.rank<rank>.pt."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.distributed as dist

from services.inference.model.checkpoint import load_model
from services.inference.model.fusion import fuse_projections
from services.inference.model.parallel import exit_after_work, init_parallel
from tests.support.models import PROMPT_TOKENS


def logits_before_and_after(ckpt: Path) -> dict[str, object]:
    ctx = init_parallel("cpu")
    model = load_model(ckpt, ctx=ctx, dtype=torch.float32, max_seq_len=64)
    tokens = torch.tensor(PROMPT_TOKENS)
    with torch.inference_mode():
        unfused = model(tokens)
        names_before = sorted(name for name, _ in model.named_parameters())
        elements_before = sum(p.numel() for p in model.parameters())
        fuse_projections(model)
        fused = model(tokens)
    return {
        "unfused": unfused,
        "fused": fused,
        "names_before": names_before,
        "names_after": sorted(name for name, _ in model.named_parameters()),
        "elements_before": elements_before,
        "elements_after": sum(p.numel() for p in model.parameters()),
        "world_size": ctx.world_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("ckpts", type=Path, nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for index, ckpt in enumerate(args.ckpts):
        result = logits_before_and_after(ckpt)
        torch.save(result, args.out / f"{index}.rank{dist.get_rank() if dist.is_initialized() else 0}.pt")
    exit_after_work()


if __name__ == "__main__":
    main()
