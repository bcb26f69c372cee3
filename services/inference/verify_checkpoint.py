"""`python -m services.inference.verify_checkpoint DIR`: would this server load DIR?

The SDK's `llamagate verify-hf` checks a Hugging Face directory's files (and, with transformers
installed, builds LlamaForCausalLM on the meta device). This is the server's own verdict: it reads
the config the way the server will (rejecting, e.g., rope scaling or biases Llama 2 does not have)
and loads every tensor onto the meta device, each read from disk once and dropped, so it reads the
whole checkpoint but never holds more than one tensor. Works for Meta and Hugging Face layouts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from services.inference.model.checkpoint import load_model, read_model_args
from services.inference.model.parallel import ParallelContext

EXIT_INVALID = 7  # the same code `llamagate verify-hf` uses for a checkpoint it rejects


def check_loads(directory: Path) -> str:
    """Load `directory` onto the meta device; a summary line, or ValueError naming the problem."""
    args = read_model_args(directory)
    meta = ParallelContext(rank=0, world_size=1, local_rank=0, device=torch.device("meta"), backend="none")
    load_model(directory, ctx=meta, dtype=torch.float32, max_seq_len=args.max_seq_len)
    return (
        f"ok: {directory}: the inference server loads it ({args.n_layers} layers, dim {args.dim}, "
        f"{args.n_heads} heads, {args.n_kv_heads or args.n_heads} kv heads, vocab {args.vocab_size})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.inference.verify_checkpoint", description=__doc__
    )
    parser.add_argument(
        "directory", type=Path, help="a Meta (consolidated.NN.pth) or Hugging Face checkpoint"
    )
    args = parser.parse_args(argv)
    try:
        print(check_loads(args.directory))
    except (ValueError, KeyError, FileNotFoundError) as error:
        # The loader reports every problem as a ValueError subclass (CheckpointError, HFCheckpointError).
        print(f"the inference server could not load {args.directory}: {error}", file=sys.stderr)
        return EXIT_INVALID
    return 0


if __name__ == "__main__":
    sys.exit(main())
