"""Tensor parallelism over torchrun ranks, applied to an already-built `Transformer`.

The split follows Megatron / the reference's fairscale layers: wq, wk, wv, w1, w3 are column-parallel
(each rank keeps a block of output rows, i.e. whole heads), wo and w2 row-parallel (the matching block
of input columns), so each attention and each MLP block needs exactly one all-reduce, of its output.
The embedding is split along the model dim and the output projection along the vocabulary, each
followed by an all-gather, as the reference's ParallelEmbedding / ColumnParallelLinear(gather_output).

Why weight slicing + forward hooks with functional collectives (gpt-fast style) rather than
torch.distributed.tensor.parallel (DTensor): decode runs one token through ~10 ops per layer, and
DTensor's per-op sharding propagation costs tens of microseconds of CPU time each, which at batch 1
is most of the step time. Plain tensors plus `_functional_collectives.all_reduce` run at eager
speed, trace cleanly under torch.compile, and leave the model file unaware that it is parallel.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from typing import Any, NoReturn

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
from torch import Tensor, nn

from services.inference.model.transformer import ModelArgs, Transformer, TransformerBlock

# Weight name (without "layers.N." and ".weight") -> the dim split across ranks. Unlisted: replicated.
SPLIT_DIMS: dict[str, int] = {
    "attention.wq": 0,
    "attention.wk": 0,
    "attention.wv": 0,
    "feed_forward.w1": 0,
    "feed_forward.w3": 0,
    "output": 0,
    "attention.wo": 1,
    "feed_forward.w2": 1,
    "tok_embeddings": 1,
}
_LAYER_PREFIX = re.compile(r"^layers\.\d+\.")


@dataclass(frozen=True)
class ParallelContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_parallel(device: str | None = None) -> ParallelContext:
    """Join the torchrun job (NCCL on CUDA, gloo on CPU); a plain `python` run is rank 0 of 1.

    device: None/"auto" (CUDA when available), "cuda" or "cpu". torchrun's RANK / WORLD_SIZE /
    LOCAL_RANK are the launcher's contract with every rank, so they are read here and only here.
    """
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    kind = device or "auto"
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but no CUDA device is visible")
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices are visible: "
                "start torchrun with --nproc_per_node <= the number of GPUs"
            )
        torch_device = torch.device("cuda", local_rank)
        torch.cuda.set_device(torch_device)
        backend = "nccl"
    elif kind == "cpu":
        torch_device, backend = torch.device("cpu"), "gloo"
    else:
        raise ValueError(f"unknown device {device!r}: use auto, cuda or cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world_size,
            device_id=torch_device if backend == "nccl" else None,
        )
    return ParallelContext(rank, world_size, local_rank, torch_device, backend)


def split_dim(param_name: str) -> int | None:
    """The dim along which `param_name` (e.g. "layers.3.attention.wq.weight") is split, or None."""
    name = _LAYER_PREFIX.sub("", param_name)
    if name.endswith(".scale"):
        # FP8 per-output-channel scales (fp8.py) follow their weight's rows: split with a
        # column-parallel weight; whole beside a row-parallel one, whose every row is on each rank.
        return 0 if SPLIT_DIMS.get(name.removesuffix(".scale")) == 0 else None
    return SPLIT_DIMS.get(name.removesuffix(".weight"))


def whole_row_absmax(name: str, absmax: Tensor, world_size: int) -> Tensor:
    """Per-output-channel absmax of weight `name` over whole rows, from this rank's block's.

    A row-parallel weight's rows are split across the ranks, so its absmax is the max over every
    rank's block (an all-reduce, while loading): every rank then quantizes with the scales MP 1
    uses, and its fp8 block equals MP 1's. Other weights hold whole rows already.
    """
    if world_size > 1 and split_dim(name) == 1:
        dist.all_reduce(absmax, op=dist.ReduceOp.MAX)
    return absmax


def check_layout(args: ModelArgs, world_size: int) -> None:
    """Refuse a model-parallel size that does not split every sharded dimension evenly."""
    sizes = {
        "n_heads": args.n_heads,
        "n_kv_heads": args.kv_heads,
        "dim": args.dim,
        "ffn hidden dim": args.hidden_dim,
        "vocab_size": args.vocab_size,
    }
    bad = [f"{name} {size}" for name, size in sizes.items() if size % world_size]
    if world_size < 1 or bad:
        usable = [n for n in range(1, args.kv_heads + 1) if all(s % n == 0 for s in sizes.values())]
        raise ValueError(
            f"model-parallel size {world_size} does not divide {', '.join(bad) or 'the model'}; "
            f"this model runs on {usable} ranks (torchrun --nproc_per_node)"
        )


def local_kv_heads(args: ModelArgs, world_size: int) -> int:
    check_layout(args, world_size)
    return args.kv_heads // world_size


def local_shard(tensor: Tensor, dim: int | None, rank: int, world_size: int) -> Tensor:
    """This rank's contiguous block of `tensor` along `dim` (the whole tensor when dim is None)."""
    if dim is None or world_size == 1:
        return tensor
    size = tensor.shape[dim] // world_size
    return tensor.narrow(dim, rank * size, size)


def shard_model(model: Transformer, ctx: ParallelContext) -> Transformer:
    """Keep this rank's block of every split weight and add the collectives. Works on a model on the
    meta device too (only shapes change), which is how checkpoint.load_model builds a rank's shard,
    and on FP8 projections (their scales split as `split_dim` says)."""
    if ctx.world_size == 1:
        return model
    check_layout(model.args, ctx.world_size)
    for name, param in list(model.named_parameters()):
        dim = split_dim(name)
        if dim is None:
            continue
        module_name, _, attribute = name.rpartition(".")
        module = model.get_submodule(module_name)
        # clone(): a view would keep the whole unsharded weight alive.
        local = local_shard(param.detach(), dim, ctx.rank, ctx.world_size).clone()
        setattr(module, attribute, nn.Parameter(local, requires_grad=False))
        if isinstance(module, nn.Linear):
            module.out_features, module.in_features = local.shape
        elif isinstance(module, nn.Embedding):
            module.embedding_dim = local.shape[1]
    group = dist.group.WORLD
    for layer in model.layers:
        assert isinstance(layer, TransformerBlock)
        layer.attention.register_forward_hook(_AllReduce(group))
        layer.feed_forward.register_forward_hook(_AllReduce(group))
    model.tok_embeddings.register_forward_hook(_GatherLastDim(group))
    model.output.register_forward_hook(_GatherLastDim(group))
    return model


def all_reduce_group(module: nn.Module) -> Any | None:
    """The group `module`'s output is summed over by tensor parallelism's hook, or None (MP 1)."""
    for hook in module._forward_hooks.values():
        if isinstance(hook, _AllReduce):
            return hook.group
    return None


class _AllReduce:
    """Forward hook: sum a row-parallel block's partial outputs over the ranks."""

    def __init__(self, group: Any) -> None:
        self.group = group

    def __call__(self, module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        return funcol.all_reduce(output, "sum", self.group)


class _GatherLastDim:
    """Forward hook: concatenate the ranks' slices of the last dim (embedding dims, vocab logits)."""

    def __init__(self, group: Any) -> None:
        self.group = group
        self.world_size = dist.get_world_size(group)

    def __call__(self, module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        # Gathered along dim 0 (the collective's native layout), then the ranks' blocks side by side.
        stacked = funcol.all_gather_single(output.contiguous(), 0, self.group)
        return torch.cat(stacked.chunk(self.world_size, dim=0), dim=-1)


def exit_after_work() -> NoReturn:
    """Wait for every rank to get here, then exit 0 without tearing anything down.

    For a rank process whose work is done and written (never from a `finally`, so a failing rank
    still raises). With two gloo ranks, about one exit in twelve through interpreter finalization
    aborted in libtorch's static destructors ("terminate called without an active exception", no
    Python frame left) after all the work was done, and torchrun counted the rank as failed.
    `os._exit` runs no C++ destructor, and leaving the process group needs none: the barrier keeps
    a rank that is done from closing its sockets under one that is still in its last collective.
    """
    if dist.is_initialized():
        dist.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
