"""Loading Llama checkpoints onto tensor-parallel ranks, resharding at load time.

Two formats are read:
- Meta: `params.json` + `consolidated.NN.pth`, one file per model-parallel shard (7B: 1, 13B: 2,
  70B: 8). Each shard holds a contiguous block of every split weight (see parallel.SPLIT_DIMS);
  norms are replicated in every shard.
- Hugging Face: `config.json` + `*.safetensors` with LlamaForCausalLM names (hf_format.py).

Any checkpoint loads on any model-parallel size that divides the heads: a rank's block of a weight
is cut from the one or few source shards that overlap it (concatenated along the split dim), read
through mmap so only the bytes of that block are touched. The model is built on the meta device and
sharded before loading, so no rank ever materialises more than its own weights. With FP8 weights
each projection is quantized on the device as it is read, so a rank peaks at its FP8 shard plus
one weight at the checkpoint's precision.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor
from tqdm import tqdm

from services.inference.model import hf_format
from services.inference.model.fp8 import (
    FP8Linear,
    check_fp8_device,
    quantize,
    quantize_projections,
    row_absmax,
)
from services.inference.model.parallel import (
    ParallelContext,
    check_layout,
    local_shard,
    shard_model,
    split_dim,
    whole_row_absmax,
)
from services.inference.model.transformer import ModelArgs, Transformer

META_PARAMS = "params.json"
META_SHARD_GLOB = "consolidated.*.pth"
# Keys of Meta checkpoints that are not weights of the model (rotary frequencies, recomputed).
META_IGNORED_KEYS = frozenset({"rope.freqs"})


class CheckpointError(ValueError):
    """The checkpoint is missing, malformed, or cannot be split over this many ranks."""


class WeightSource(Protocol):
    def read(self, name: str, dim: int | None, rank: int, world_size: int) -> Tensor:
        """This rank's block of weight `name` (model naming) along `dim`, on the CPU."""
        ...

    def names(self) -> set[str]:
        """Every weight the checkpoint provides, in model naming."""
        ...


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs that have it (fp16 on older ones), fp32 on CPU where half precision is slow."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def checkpoint_format(ckpt_dir: Path) -> str:
    if (ckpt_dir / META_PARAMS).is_file():
        return "meta"
    if (ckpt_dir / hf_format.HF_CONFIG).is_file():
        return "hf"
    raise CheckpointError(
        f"{ckpt_dir} is not a Llama checkpoint: expected {META_PARAMS} + {META_SHARD_GLOB} (Meta format) "
        f"or {hf_format.HF_CONFIG} + *.safetensors (Hugging Face format)"
    )


def read_model_args(ckpt_dir: Path) -> ModelArgs:
    """The model shape from params.json or config.json (vocab_size -1 is read off the embedding)."""
    ckpt_dir = Path(ckpt_dir)
    if checkpoint_format(ckpt_dir) == "hf":
        return hf_format.read_model_args(ckpt_dir)
    params = json.loads((ckpt_dir / META_PARAMS).read_text())
    args = ModelArgs.from_params(params)
    if args.vocab_size <= 0:
        shards = _meta_shard_files(ckpt_dir)
        embedding = torch.load(shards[0], map_location="cpu", mmap=True, weights_only=True)[
            "tok_embeddings.weight"
        ]
        args = replace(args, vocab_size=embedding.shape[0])
    return args


def load_model(
    ckpt_dir: Path,
    *,
    ctx: ParallelContext,
    dtype: torch.dtype,
    max_seq_len: int,
    vocab_size: int | None = None,
    fp8_weights: bool = False,
) -> Transformer:
    """This rank's shard of the model in `dtype` on ctx.device, in eval mode, ready to run.

    fp8_weights: the layers' projections are quantized to FP8 (fp8.py) as each is read, from the
    checkpoint's own values, with whole-row scales for row-parallel blocks; the rest is in `dtype`.
    """
    ckpt_dir = Path(ckpt_dir)
    args = replace(read_model_args(ckpt_dir), max_seq_len=max_seq_len)
    if vocab_size is not None and vocab_size != args.vocab_size:
        raise CheckpointError(
            f"the tokenizer has {vocab_size} tokens but the checkpoint in {ckpt_dir} has a vocabulary of "
            f"{args.vocab_size}: pass the tokenizer.model that belongs to this checkpoint"
        )
    try:
        check_layout(args, ctx.world_size)
    except ValueError as error:
        raise CheckpointError(f"cannot load {ckpt_dir}: {error}") from None
    if fp8_weights:
        check_fp8_device(ctx.device)
    with torch.device("meta"):
        model = Transformer(args)
    full_shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    shard_model(model, ctx)
    if fp8_weights:
        quantize_projections(model)  # on meta: the structure, filled below
    with ExitStack() as stack:
        if checkpoint_format(ckpt_dir) == "hf":
            source: WeightSource = hf_format.HFWeights(ckpt_dir, args, full_shapes, stack)
        else:
            source = MetaWeights(ckpt_dir, full_shapes)
        _check_names(ckpt_dir, source.names(), set(full_shapes))
        state: dict[str, Tensor] = {}
        # Every rank walks the weights in the same order: row-parallel FP8 scales take a collective.
        params = [(name, p) for name, p in model.named_parameters() if name in full_shapes]
        for name, param in tqdm(
            params, desc=f"loading {ckpt_dir.name}", unit="tensor", disable=not ctx.is_main, leave=False
        ):
            tensor = source.read(name, split_dim(name), ctx.rank, ctx.world_size)
            if tuple(tensor.shape) != tuple(param.shape):
                raise CheckpointError(
                    f"{ckpt_dir}: {name} block has shape {tuple(tensor.shape)} for rank {ctx.rank} of "
                    f"{ctx.world_size}, expected {tuple(param.shape)} from the model's config"
                )
            module_name = name.removesuffix(".weight")
            if isinstance(model.get_submodule(module_name), FP8Linear):
                # Quantized from the checkpoint's values (not from a `dtype` copy) on the device.
                block = tensor.to(device=ctx.device)
                absmax = whole_row_absmax(name, row_absmax(block), ctx.world_size)
                state[name], state[f"{module_name}.scale"] = quantize(block, absmax)
                del block
            else:
                state[name] = tensor.to(device=ctx.device, dtype=dtype)
    model.load_state_dict(state, strict=True, assign=True)
    model.build_rope(ctx.device)
    return model.eval().requires_grad_(False)


def _check_names(ckpt_dir: Path, provided: set[str], expected: set[str]) -> None:
    missing, extra = sorted(expected - provided), sorted(provided - expected)
    if missing or extra:
        raise CheckpointError(
            f"{ckpt_dir} does not match its config: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}"
        )


def _meta_shard_files(ckpt_dir: Path) -> list[Path]:
    files = sorted(ckpt_dir.glob(META_SHARD_GLOB))
    if not files:
        raise CheckpointError(f"{ckpt_dir} has {META_PARAMS} but no {META_SHARD_GLOB} files")
    expected = [ckpt_dir / f"consolidated.{i:02d}.pth" for i in range(len(files))]
    if files != expected:
        raise CheckpointError(f"{ckpt_dir}: shard files must be consolidated.00.pth ... consolidated.NN.pth")
    return files


class MetaWeights:
    """Weights of consolidated.NN.pth shards, memory-mapped, cut into any rank's block."""

    def __init__(self, ckpt_dir: Path, full_shapes: Mapping[str, tuple[int, ...]]) -> None:
        self.ckpt_dir = ckpt_dir
        self.files = _meta_shard_files(ckpt_dir)
        self.shards = [torch.load(f, map_location="cpu", mmap=True, weights_only=True) for f in self.files]
        self.full_shapes = full_shapes

    def names(self) -> set[str]:
        names = set(self.shards[0]) - META_IGNORED_KEYS
        for file, shard in zip(self.files[1:], self.shards[1:], strict=True):
            if set(shard) - META_IGNORED_KEYS != names:
                raise CheckpointError(f"{file.name} holds different weights than {self.files[0].name}")
        return names

    def read(self, name: str, dim: int | None, rank: int, world_size: int) -> Tensor:
        parts = [shard[name] for shard in self.shards]
        full = self.full_shapes[name]
        count = len(parts)
        expected = full if dim is None else tuple(n // count if d == dim else n for d, n in enumerate(full))
        for file, part in zip(self.files, parts, strict=True):
            if tuple(part.shape) != expected or (dim is not None and full[dim] % count):
                raise CheckpointError(
                    f"{file}: {name} has shape {tuple(part.shape)}, but {count} shard(s) of the model in "
                    f"{META_PARAMS} (full shape {full}) need {expected}: the shard count or params.json "
                    "does not match the weights"
                )
        if dim is None:
            return parts[0]
        size, local = full[dim] // count, full[dim] // world_size
        start, stop = rank * local, (rank + 1) * local
        pieces = []
        for i, part in enumerate(parts):
            lo, hi = max(start, i * size), min(stop, (i + 1) * size)
            if lo < hi:
                pieces.append(part.narrow(dim, lo - i * size, hi - lo))
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim)


def save_meta_checkpoint(
    state: Mapping[str, Tensor], params: Mapping[str, object], out_dir: Path, num_shards: int = 1
) -> None:
    """Write full (unsharded) weights in Meta's layout, split into `num_shards` consolidated files."""
    for name, tensor in state.items():
        dim = split_dim(name)
        if dim is not None and tensor.shape[dim] % num_shards:
            raise CheckpointError(
                f"cannot split {name} (shape {tuple(tensor.shape)}) into {num_shards} shards"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    for i in range(num_shards):
        shard = {name: local_shard(t, split_dim(name), i, num_shards).clone() for name, t in state.items()}
        torch.save(shard, out_dir / f"consolidated.{i:02d}.pth")
    (out_dir / META_PARAMS).write_text(json.dumps(dict(params), indent=2) + "\n")


def meta_params(args: ModelArgs) -> dict[str, object]:
    """params.json contents for `args` (the fields Meta's files carry, plus an explicit FFN width)."""
    params: dict[str, object] = {
        "dim": args.dim,
        "n_layers": args.n_layers,
        "n_heads": args.n_heads,
        "n_kv_heads": args.kv_heads,
        "vocab_size": args.vocab_size,
        "multiple_of": args.multiple_of,
        "ffn_dim_multiplier": args.ffn_dim_multiplier,
        "norm_eps": args.norm_eps,
        "rope_theta": args.rope_theta,
    }
    if args.ffn_hidden_dim is not None:
        params["ffn_hidden_dim"] = args.ffn_hidden_dim
    return params
