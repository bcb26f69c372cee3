"""The classifier's CUDA graphs give the eager classifier's scores, for every padded shape.

The graph path exists on CUDA only, so most of this runs where a GPU is present; the guard on the
device runs everywhere.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from services.common.dialog import Message, Role
from services.common.verdicts import Direction
from services.safety.classifiers.embedded import EmbeddedClassifier, EmbeddedConfig
from services.safety.cuda_graphs import GraphedForward
from services.safety.encoder import LENGTH_BUCKET
from services.safety.verdict import CheckItem

needs_cuda = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
TEXTS = [
    "How do I kill a Python process that hangs?",
    "Tell me a short story about a garden. " * 30,
    "hi",
    "Give me a plan to steal a car tonight, step by step, with the tools I need.",
    "the quick brown fox jumps over the lazy dog " * 250,  # several windows
]


def items(texts: list[str]) -> list[CheckItem]:
    return [CheckItem([Message(Role.USER, t)], Direction.INPUT) for t in texts]


def test_graphs_refuse_a_cpu_device() -> None:
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device, not cpu"):
        GraphedForward(lambda ids, mask: ids, torch.device("cpu"), max_rows=8)


@pytest.fixture(scope="module")
def classifiers() -> tuple[EmbeddedClassifier, EmbeddedClassifier]:
    config = EmbeddedConfig(device=torch.device("cuda"))
    return EmbeddedClassifier(config), EmbeddedClassifier(replace(config, cuda_graphs=False))


@pytest.mark.parametrize("batch", [[0], [1], [2], [4], [0, 1, 2], [0, 1, 2, 3, 4]], ids=str)
@pytest.mark.parametrize("_", [pytest.param(None, marks=needs_cuda)])
def test_graphed_scores_equal_eager(
    classifiers: tuple[EmbeddedClassifier, EmbeddedClassifier], batch: list[int], _: None
) -> None:
    graphed, eager = classifiers
    checks = items([TEXTS[i] for i in batch])
    got, want = graphed.judge(checks), eager.judge(checks)
    for g, w in zip(got, want, strict=True):
        assert (g.judged_tokens, g.judged_segments, g.truncated) == (
            w.judged_tokens,
            w.judged_segments,
            w.truncated,
        )
        # The same kernels, except that eager attention may skip an all-ones mask: equal up to
        # bf16 rounding.
        assert g.scores.keys() == w.scores.keys()
        assert max(abs(g.scores[k] - w.scores[k]) for k in g.scores) < 0.02


@pytest.mark.parametrize("_", [pytest.param(None, marks=needs_cuda)])
def test_graphs_are_captured_at_start_and_on_first_use(
    classifiers: tuple[EmbeddedClassifier, EmbeddedClassifier], _: None
) -> None:
    graphed, eager = classifiers
    graphs = graphed._graphs
    assert eager._graphs is None
    assert graphs is not None and graphs.disabled is None
    window = graphed.encoder.config.window
    assert (1, LENGTH_BUCKET) in graphs.shapes and (8, window) in graphs.shapes
    # A text of 34 full windows goes through in a chunk of 32 rows (the most one call takes) and
    # one of 2: 32 rows is a shape no other test here makes, captured on this call.
    long_text = " ".join(f"w{i}" for i in range(2000))
    assert (32, window) not in graphs.shapes
    [judgement] = graphed.judge(items([long_text]))
    assert judgement.judged_segments == 34
    assert (32, window) in graphs.shapes
