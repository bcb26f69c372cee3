"""Shared fixtures: the demo tokenizer/model (built once per session) and tiny random models."""

from __future__ import annotations

import pytest
import torch

from services.inference.demo import DemoPaths, write_demo
from services.inference.model.parallel import ParallelContext
from services.inference.model.tokenizer import Tokenizer
from services.inference.model.transformer import ModelArgs, Transformer, init_random_weights

CPU_MP1 = ParallelContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend="gloo")


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoPaths:
    return write_demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def tokenizer(demo: DemoPaths) -> Tokenizer:
    return Tokenizer(demo.tokenizer)


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


def tiny_args(**overrides: object) -> ModelArgs:
    base: dict[str, object] = dict(
        dim=64, n_layers=2, n_heads=8, n_kv_heads=4, vocab_size=256, multiple_of=32, max_seq_len=64
    )
    base.update(overrides)
    return ModelArgs(**base)  # type: ignore[arg-type]
