"""Tiny random Llama models and their checkpoints, for the model and engine tests of every tier."""

from __future__ import annotations

from pathlib import Path

import torch

from services.inference.model.checkpoint import meta_params, save_meta_checkpoint
from services.inference.model.hf_format import save_hf_checkpoint
from services.inference.model.parallel import ParallelContext
from services.inference.model.transformer import ModelArgs, Transformer, init_random_weights

CPU_MP1 = ParallelContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend="gloo")
# Two prompts of a 256-token vocabulary (tiny_args), for comparing logits of one model in two forms.
PROMPT_TOKENS = [
    [1, 5, 200, 41, 99, 17, 64, 2, 77, 150, 3, 250],
    [1, 180, 12, 13, 14, 15, 16, 90, 42, 7, 9, 11],
]


# Parameter names (below "layers.N.") of the fused and of the separate projections.
FUSED_NAMES = {"attention.wqkv.weight", "feed_forward.w13.weight"}
SEPARATE_NAMES = {f"attention.{w}.weight" for w in ("wq", "wk", "wv")} | {
    f"feed_forward.{w}.weight" for w in ("w1", "w3")
}


def layer_names(names: list[str]) -> set[str]:
    return {name.split(".", 2)[2] for name in names if name.startswith("layers.")}


def tiny_args(**overrides: object) -> ModelArgs:
    base: dict[str, object] = dict(
        dim=64, n_layers=2, n_heads=8, n_kv_heads=4, vocab_size=256, multiple_of=32, max_seq_len=64
    )
    base.update(overrides)
    return ModelArgs(**base)  # type: ignore[arg-type]


def random_model(args: ModelArgs, seed: int = 0) -> Transformer:
    model = Transformer(args)
    init_random_weights(model, seed)
    return model.eval().requires_grad_(False)


def full_state(model: Transformer) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def assert_same_weights(a: Transformer, b: Transformer) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name


def meta_and_hf_checkpoints(root: Path, seed: int) -> list[Path]:
    """One tiny random model (8 query heads, 4 kv heads: GQA) saved as root/meta and root/hf."""
    args = tiny_args()
    state = full_state(random_model(args, seed=seed))
    save_meta_checkpoint(state, meta_params(args), root / "meta", num_shards=1)
    save_hf_checkpoint(state, args, root / "hf")
    return [root / "meta", root / "hf"]
