"""Write a random, seeded Llama-2-shaped checkpoint in Meta's format, one shard file at a time.

    python -m bench.make_checkpoint --shape 13B --shards 2 --out /data/llama-13b-random
    python -m bench.make_checkpoint --shape 70B --shards 8 --out /data/llama-70b-random --device cuda
    python -m bench.make_checkpoint --shape 70B --layers 1 --shards 8 --vocab demo --out .work/70b-1L

writes OUT/params.json and OUT/consolidated.NN.pth (NN = 00 .. shards-1), and with `--vocab demo`
also OUT/tokenizer.model. The weights are random (a benchmark and correctness fixture, not a model).

Memory: no process ever holds the whole model. A weight's values are defined block by block along
its tensor-parallel split dim (parallel.split_dim), each block drawn from its own generator seeded by
(seed, weight name, block index), so a shard's slice is generated directly and a shard file holds
only its 1/shards of every split weight. Peak memory is one shard (70B, 8 shards: ~17 GB in bf16).
With 8 generation blocks (the default granularity) the weights do not depend on --shards: the
1-, 2-, 4- and 8-shard checkpoints of one seed hold the same model, which the resharding tests use.

Vocabulary: `--vocab 32000` (default; the released Llama 2 size) makes the output projection and
embedding as large as the real ones, which matters for speed. No 32000-piece tokenizer can be made
without downloading one, so such checkpoints are driven with token ids (bench/multi_gpu_bench.py).
`--vocab demo` uses the demo tokenizer's 1000 pieces and writes that tokenizer next to the weights,
so the checkpoint runs end to end through Llama.build and the inference service (which refuse a
tokenizer whose size differs from the checkpoint's vocabulary).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from services.inference.demo import CORPUS, DEMO_VOCAB_SIZE, train_tokenizer
from services.inference.model.checkpoint import META_PARAMS, meta_params
from services.inference.model.parallel import check_layout, split_dim
from services.inference.model.transformer import CONFIGS, ModelArgs, Transformer

SHAPES: dict[str, ModelArgs] = {
    **CONFIGS,
    # Demo-sized, for dry runs: GQA with 8 query / 4 kv heads so MP 1, 2 and 4 all work.
    "tiny": ModelArgs(dim=128, n_layers=2, n_heads=8, n_kv_heads=4, multiple_of=64),
}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# Blocks each split weight is generated in; any shard count dividing it gives the same weights.
GENERATION_BLOCKS = 8


@dataclass(frozen=True)
class CheckpointSpec:
    args: ModelArgs
    shards: int
    dtype: torch.dtype
    seed: int = 0
    device: str = "cpu"


def model_args(shape: str, layers: int | None = None, vocab: str = "32000") -> ModelArgs:
    """A named shape with optional layer count and vocabulary ("demo" = the demo tokenizer's size)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}: use one of {', '.join(SHAPES)}")
    args = SHAPES[shape]
    vocab_size = DEMO_VOCAB_SIZE if vocab == "demo" else int(vocab)
    args = replace(args, vocab_size=vocab_size)
    return replace(args, n_layers=layers) if layers else args


def weight_shapes(args: ModelArgs) -> dict[str, tuple[int, ...]]:
    """Every weight's full shape, in Meta naming, from the model built on the meta device."""
    with torch.device("meta"):
        model = Transformer(args)
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def _block_seed(seed: int, name: str, block: int) -> int:
    digest = hashlib.sha256(f"{seed}:{name}:{block}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def generation_blocks(shapes: dict[str, tuple[int, ...]], shards: int) -> int:
    """GENERATION_BLOCKS when it splits every split dim and is a multiple of `shards`, else `shards`."""
    blocks = GENERATION_BLOCKS
    fits = blocks % shards == 0 and all(
        shape[dim] % blocks == 0 for name, shape in shapes.items() if (dim := split_dim(name)) is not None
    )
    return blocks if fits else shards


def shard_tensor(
    name: str, full_shape: tuple[int, ...], shard: int, spec: CheckpointSpec, blocks: int
) -> Tensor:
    """Shard `shard`'s block of weight `name`, generated block by block (never the whole weight)."""
    if name.endswith("norm.weight"):
        return torch.ones(full_shape, dtype=spec.dtype)
    # Same scale as model.init_random_weights: activations stay bounded through many layers.
    fan_in = 1 if name == "tok_embeddings.weight" else full_shape[-1]
    std = 1.0 / math.sqrt(fan_in)
    dim = split_dim(name)
    if dim is None:
        indices, block_shape = [0], full_shape
    else:
        per_shard = blocks // spec.shards
        indices = list(range(shard * per_shard, (shard + 1) * per_shard))
        block_shape = tuple(n // blocks if d == dim else n for d, n in enumerate(full_shape))
    parts = []
    for index in indices:
        generator = torch.Generator(device=spec.device).manual_seed(_block_seed(spec.seed, name, index))
        values = torch.randn(block_shape, generator=generator, device=spec.device, dtype=torch.float32)
        parts.append(values.mul_(std).to(device="cpu", dtype=spec.dtype))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim if dim is not None else 0)


def write_shard(spec: CheckpointSpec, shard: int, out_dir: Path, *, progress: bool = True) -> Path:
    """Write consolidated.<shard>.pth; shards are independent, so ranks may write theirs in parallel."""
    check_layout(spec.args, spec.shards)
    shapes = weight_shapes(spec.args)
    blocks = generation_blocks(shapes, spec.shards)
    state = {
        name: shard_tensor(name, shape, shard, spec, blocks)
        for name, shape in tqdm(
            shapes.items(), desc=f"shard {shard + 1}/{spec.shards}", unit="tensor", disable=not progress
        )
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"consolidated.{shard:02d}.pth"
    # Written under a temporary name so an interrupted run never leaves a truncated shard behind.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    tmp.replace(target)
    return target


def write_params(spec: CheckpointSpec, out_dir: Path) -> None:
    """params.json (written last: its presence marks a complete checkpoint) and, for the demo
    vocabulary, the demo tokenizer."""
    blocks = generation_blocks(weight_shapes(spec.args), spec.shards)
    if spec.args.vocab_size == DEMO_VOCAB_SIZE:
        (out_dir / "tokenizer.model").write_bytes(train_tokenizer(CORPUS))
    params = {
        **meta_params(spec.args),
        "random_weights": True,
        "seed": spec.seed,
        "generation_blocks": blocks,
        # Random streams differ between CPU and CUDA generators: the same seed is the same model
        # only when generated on the same kind of device.
        "generated_on": torch.device(spec.device).type,
    }
    tmp = out_dir / f".{META_PARAMS}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(params, indent=2) + "\n")
    tmp.replace(out_dir / META_PARAMS)


def write_checkpoint(spec: CheckpointSpec, out_dir: Path, *, progress: bool = True) -> Path:
    """Write every shard, then params.json, under out_dir; returns out_dir."""
    for shard in range(spec.shards):
        write_shard(spec, shard, out_dir, progress=progress)
    write_params(spec, out_dir)
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", default="7B", choices=sorted(SHAPES), help="model shape")
    parser.add_argument("--layers", type=int, help="override n_layers (e.g. a 70B-wide model with 2 layers)")
    parser.add_argument("--shards", type=int, default=1, help="consolidated.NN.pth files to write")
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    parser.add_argument(
        "--vocab",
        default="32000",
        help="vocabulary size, or 'demo' for the demo tokenizer's 1000 pieces (also writes tokenizer.model)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--device", default="cpu", help="where to draw the random numbers (cuda is ~50x faster for 70B)"
    )
    parser.add_argument("--out", type=Path, required=True)
    opts = parser.parse_args()
    try:
        args = model_args(opts.shape, opts.layers, opts.vocab)
        check_layout(args, opts.shards)
    except ValueError as error:
        message = str(error).replace("model-parallel size", "--shards")
        parser.error(message.replace(" ranks (torchrun --nproc_per_node)", " shards"))
    spec = CheckpointSpec(args, opts.shards, DTYPES[opts.dtype], opts.seed, opts.device)
    start = time.perf_counter()
    write_checkpoint(spec, opts.out)
    size = sum(f.stat().st_size for f in opts.out.glob("consolidated.*.pth"))
    print(
        f"wrote {opts.out}: {opts.shape} n_layers={args.n_layers} vocab={args.vocab_size} "
        f"shards={opts.shards} {opts.dtype} seed={opts.seed}: {size / 2**30:.2f} GiB in "
        f"{time.perf_counter() - start:.1f} s (random weights)"
    )


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
