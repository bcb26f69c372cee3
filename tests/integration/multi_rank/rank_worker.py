"""One rank of a multi-rank correctness run (under torchrun, or plain python for MP 1).

Loads a checkpoint as generation.Llama.build does (load_model with resharding and tensor-parallel
hooks, then the eager generator on a contiguous KV cache), computes full-sequence logits for fixed token rows and
greedy generations for fixed prompts, and saves them with the load time to OUT/rank<R>.pt.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.distributed as dist

from services.common.sampling import SamplingParams
from services.inference.model.checkpoint import load_model
from services.inference.model.generation import Llama
from services.inference.model.parallel import exit_after_work, init_parallel
from services.inference.model.tokenizer import Tokenizer

# Token ids below 1000 so any vocabulary (the demo tokenizer's included) accepts them.
LOGIT_ROWS = [[1, 5, 300, 41, 999, 17, 64, 2], [1, 800, 12, 13, 14, 15, 16, 900]]
PROMPTS = [[1, 300, 41, 999], [1, 12, 13, 14, 15, 16, 900], [1, 450, 7]]


def run(
    ckpt: Path,
    tokenizer_path: Path,
    max_gen_len: int,
    dtype: torch.dtype,
    prompts: list[list[int]] = PROMPTS,
) -> dict[str, object]:
    # Llama.build's steps, with the checkpoint load timed on its own (not the rendezvous).
    ctx = init_parallel("cpu")
    tokenizer = Tokenizer(tokenizer_path)
    start = time.perf_counter()
    model = load_model(ckpt, ctx=ctx, dtype=dtype, max_seq_len=64, vocab_size=tokenizer.n_words)
    load_s = time.perf_counter() - start
    llama = Llama(model, tokenizer, ctx, max_batch_size=len(prompts))
    with torch.inference_mode():
        logits = llama.model(torch.tensor(LOGIT_ROWS))
    start = time.perf_counter()
    greedy, _ = llama.generate(prompts, SamplingParams(temperature=0.0, max_gen_len=max_gen_len))
    generate_s = time.perf_counter() - start
    return {
        "world_size": ctx.world_size,
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
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--prompts", type=json.loads, default=PROMPTS, help="JSON list of token id lists")
    args = parser.parse_args()
    result = run(args.ckpt, args.tokenizer, args.max_gen_len, getattr(torch, args.dtype), args.prompts)
    rank = dist.get_rank() if dist.is_initialized() else 0
    torch.save(result, args.out / f"rank{rank}.pt")
    exit_after_work()


if __name__ == "__main__":
    main()
