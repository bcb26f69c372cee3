"""Run under torchrun by test_tensor_parallel.py: each rank loads every checkpoint given, computes
logits and greedy / sampled generations, and saves what it saw to OUT/<index>.rank<rank>.pt."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.distributed as dist

from services.common.sampling import SamplingParams
from services.inference.model.generation import Llama
from services.inference.model.parallel import exit_after_work

TOKENS = [[1, 5, 300, 41, 999, 17, 64, 2, 77, 500, 3, 250], [1, 800, 12, 13, 14, 15, 16, 900, 420, 42, 7, 9]]
PROMPTS = [[1, 300, 41, 999], [1, 12, 13, 14, 15, 16, 900]]


def run(ckpt: Path, tokenizer: Path) -> dict[str, object]:
    llama = Llama.build(ckpt, tokenizer, max_seq_len=64, max_batch_size=2, device="cpu")
    with torch.inference_mode():
        logits = llama.model(torch.tensor(TOKENS))
    greedy, _ = llama.generate(PROMPTS, SamplingParams(temperature=0.0, max_gen_len=10))
    sampled, _ = llama.generate(
        PROMPTS, SamplingParams(temperature=1.0, top_p=0.9, max_gen_len=10), seeds=[3, 4]
    )
    return {"logits": logits, "greedy": greedy, "sampled": sampled, "world_size": llama.ctx.world_size}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("ckpts", type=Path, nargs="+")
    args = parser.parse_args()
    for index, ckpt in enumerate(args.ckpts):
        result = run(ckpt, args.tokenizer)
        torch.save(result, args.out / f"{index}.rank{dist.get_rank() if dist.is_initialized() else 0}.pt")
    exit_after_work()


if __name__ == "__main__":
    main()
