"""Run under torchrun (TRITON_INTERPRET=1, gloo, CPU) by test_decode_block_shards.py: each rank loads
its shard, fuses its projections, and runs one decode token through every layer twice, through the
fused decode block (kernels/decode_block.py: the rank sums its block's output itself, rank 0 adds
the residual) and through TransformerBlock's forward (parallel.py's all-reduce hooks). Both results
go to OUT/rank<rank>.pt."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from services.inference.kernels.decode_block import FusedDecodeBlock, use_fused_decode_block
from services.inference.model.checkpoint import load_model
from services.inference.model.fusion import fuse_projections
from services.inference.model.parallel import ParallelContext, exit_after_work, init_parallel
from services.inference.model.transformer import ModelArgs, TransformerBlock, apply_rotary


class EarlierTokens:
    """An AttentionCache holding five earlier tokens per layer (seeded: the same on every world
    size, each rank holding its own kv heads); the new token attends to them and to itself."""

    def __init__(self, args: ModelArgs, ctx: ParallelContext, length: int = 5) -> None:
        generator = torch.Generator().manual_seed(9)
        shape = (args.n_layers, 1, length, args.kv_heads, args.head_dim)
        local = args.kv_heads // ctx.world_size
        heads = slice(ctx.rank * local, (ctx.rank + 1) * local)
        self.k = torch.randn(shape, generator=generator)[..., heads, :]
        self.v = torch.randn(shape, generator=generator)[..., heads, :]

    def attend(self, layer_id: int, q: Tensor, k: Tensor, v: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        keys = torch.cat([self.k[layer_id], k], dim=1).transpose(1, 2)
        values = torch.cat([self.v[layer_id], v], dim=1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), keys, values, enable_gqa=True)
        return out.transpose(1, 2)


def block_outputs(ckpt: Path) -> dict[str, object]:
    ctx = init_parallel("cpu")
    model = load_model(ckpt, ctx=ctx, dtype=torch.float32, max_seq_len=64)
    fuse_projections(model)
    fused_blocks = use_fused_decode_block(model)
    x = torch.randn(1, 1, model.args.dim, generator=torch.Generator().manual_seed(5))
    positions = torch.tensor([[5]])
    cos, sin = model.rope_cos[positions], model.rope_sin[positions]
    cache = EarlierTokens(model.args, ctx)
    fused, unfused = [], []
    with torch.inference_mode():
        for layer in model.layers:
            assert isinstance(layer, FusedDecodeBlock)
            fused.append(layer.fused_forward(x, cos, sin, cache))
            unfused.append(TransformerBlock.forward(layer, x, cos, sin, cache))
    return {
        "fused": torch.stack(fused),
        "unfused": torch.stack(unfused),
        "fused_blocks": fused_blocks,
        "world_size": ctx.world_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("ckpt", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = block_outputs(args.ckpt)
    torch.save(result, args.out / f"rank{dist.get_rank() if dist.is_initialized() else 0}.pt")
    exit_after_work()


if __name__ == "__main__":
    main()
