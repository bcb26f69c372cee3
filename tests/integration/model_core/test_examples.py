"""The reference's example commands, run under torchrun on the demo model."""

from __future__ import annotations

import pytest

from services.inference.demo import DemoPaths

from .test_tensor_parallel import torchrun

pytestmark = pytest.mark.slow


def test_chat_example_on_two_ranks(demo: DemoPaths) -> None:
    result = torchrun(
        2,
        "services.inference.examples.example_chat_completion",
        "--ckpt_dir",
        str(demo.ckpt_dir),
        "--tokenizer_path",
        str(demo.tokenizer),
        "--max_gen_len",
        "8",
        "--device",
        "cpu",
    )
    # Rank 0 alone prints: one reply per reference dialog.
    assert result.stdout.count("> Assistant: ") == 5
    assert "System: Always answer with Haiku" in result.stdout


def test_text_example_on_one_rank(demo: DemoPaths) -> None:
    result = torchrun(
        1,
        "services.inference.examples.example_text_completion",
        "--ckpt_dir",
        str(demo.ckpt_dir),
        "--tokenizer_path",
        str(demo.tokenizer),
        "--max_gen_len",
        "8",
        "--temperature",
        "0",
    )
    assert result.stdout.count("\n> ") == 4
    assert "I believe the meaning of life is" in result.stdout


def test_example_refuses_a_model_parallel_size_that_does_not_divide_the_heads(demo: DemoPaths) -> None:
    result = torchrun(
        3,
        "services.inference.examples.example_text_completion",
        "--ckpt_dir",
        str(demo.ckpt_dir),
        "--tokenizer_path",
        str(demo.tokenizer),
        "--device",
        "cpu",
        expect_ok=False,
    )
    assert result.returncode != 0
    assert "model-parallel size 3 does not divide n_heads 4" in result.stderr
    assert "this model runs on [1, 2] ranks" in result.stderr
