"""One rank of a multi-rank correctness run (under torchrun, or plain python for MP 1).

Loads a checkpoint through generation.Llama.build (the eager baseline: load_model with resharding,
tensor-parallel hooks, contiguous KV cache), computes full-sequence logits for fixed token rows and
greedy generations for fixed prompts, and saves them with the load time to OUT/rank<R>.pt.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.distributed as dist

from services.inference.generation import Llama
from services.inference.sampling import SamplingParams

# Token ids below 1000 so any vocabulary (the demo tokenizer's included) accepts them.
LOGIT_ROWS = [[1, 5, 300, 41, 999, 17, 64, 2], [1, 800, 12, 13, 14, 15, 16, 900]]
PROMPTS = [[1, 300, 41, 999], [1, 12, 13, 14, 15, 16, 900], [1, 450, 7]]


def run(ckpt: Path, tokenizer: Path, max_gen_len: int) -> dict[str, object]:
    start = time.perf_counter()
    llama = Llama.build(ckpt, tokenizer, max_seq_len=64, max_batch_size=len(PROMPTS), device="cpu")
    load_s = time.perf_counter() - start
    with torch.inference_mode():
        logits = llama.model(torch.tensor(LOGIT_ROWS))
    start = time.perf_counter()
    greedy, _ = llama.generate(PROMPTS, SamplingParams(temperature=0.0, max_gen_len=max_gen_len))
    generate_s = time.perf_counter() - start
    return {
        "world_size": llama.ctx.world_size,
        "logits": logits,
        "greedy": greedy,
        "load_s": load_s,
        "generate_s": generate_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-gen-len", type=int, default=8)
    args = parser.parse_args()
    result = run(args.ckpt, args.tokenizer, args.max_gen_len)
    rank = dist.get_rank() if dist.is_initialized() else 0
    torch.save(result, args.out / f"rank{rank}.pt")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
