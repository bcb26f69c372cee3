"""`python -m services.inference.verify_checkpoint`: the server's own verdict on a checkpoint directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from services.inference.verify_checkpoint import EXIT_INVALID, main


def tiny_config(**overrides: object) -> LlamaConfig:
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=96,
        max_position_embeddings=128,
    )
    for name, value in overrides.items():
        setattr(config, name, value)
    return config


def test_a_llama2_checkpoint_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_config()).save_pretrained(tmp_path)

    assert main([str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith(
        f"ok: {tmp_path}: the inference server loads it (2 layers, dim 64"
    )


def test_a_model_the_server_cannot_serve_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    LlamaForCausalLM(tiny_config(attention_bias=True)).save_pretrained(tmp_path)

    assert main([str(tmp_path)]) == EXIT_INVALID
    assert "biases in attention/MLP are not part of Llama 2" in capsys.readouterr().err


def test_a_directory_without_a_checkpoint_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path)]) == EXIT_INVALID
    assert f"could not load {tmp_path}" in capsys.readouterr().err
