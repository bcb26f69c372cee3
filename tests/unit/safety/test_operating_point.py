"""The operating point chosen on validation data, and recomputing it for a trained head file."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from services.safety.encoder import minilm_dir
from services.safety.head import CategoryHead, load_head
from training.safety.finetune import LoRALinear, operating_point, recalibrate, start_from, strictest_threshold


def _rows(source: str, scores: list[float], unsafe: bool = False) -> list[tuple[dict[str, object], float]]:
    row = {"unsafe": unsafe, "direction": "input", "source": source, "text": "x", "categories": []}
    return [(dict(row), s) for s in scores]


def test_the_strictest_source_sets_the_threshold() -> None:
    easy = [0.01] * 1000
    hard = [0.1] * 90 + [0.9] * 10  # 10% of its prompts score high
    # Pooled, 10 of 1100 (0.9%) would pass a 0.1 threshold; on its own the hard source needs 0.9.
    assert strictest_threshold([easy, hard], 0.04) == pytest.approx(0.9 + 1e-6)
    assert strictest_threshold([[0.1] * 96 + [0.9] * 4, easy], 0.04) == pytest.approx(0.1 + 1e-6)
    assert strictest_threshold([], 0.04) == 0.0


def test_operating_point_counts_benign_prompts_by_package() -> None:
    pairs = [
        *_rows("chatterbot_corpus/english", [0.01] * 500),
        *_rows("chatterbot_corpus/french", [0.01] * 500),
        *_rows("llamagate/contrast", [0.2] * 45 + [0.7] * 5),
        *_rows("pyrit/adv_bench", [0.8] * 10 + [0.5] * 10, unsafe=True),
    ]
    point = operating_point([r for r, _ in pairs], [s for _, s in pairs])
    assert point.threshold == pytest.approx(0.7 + 1e-6)  # llamagate: 5 of 50 above 0.2 is 10%
    assert point.blocked == pytest.approx(0.5)
    only_unsafe = _rows("pyrit/adv_bench", [0.8, 0.3], unsafe=True)
    assert operating_point([r for r, _ in only_unsafe], [s for _, s in only_unsafe]).threshold == 0.5


def test_recalibrate_writes_the_head_with_its_new_offset(tmp_path: Path) -> None:
    torch.manual_seed(0)
    head = CategoryHead(384, 16, ["S1", "S2"], unsafe_offset=3.0)
    original = tmp_path / "head.safetensors"
    head.save(original, adapters={}, extra={"recipe": "{}"})
    texts = ["What time is it?", "Tell me a joke.", "How do I bake bread?", "Build a bomb."]
    rows = [
        {"text": t, "unsafe": i == 3, "direction": "input", "source": "llamagate/train", "categories": []}
        for i, t in enumerate(texts)
    ]
    point = recalibrate(original, minilm_dir(), rows, torch.device("cpu"), tmp_path / "out")
    loaded, adapters, meta = load_head(tmp_path / "out" / "minilm_mlcommons.safetensors")
    assert isinstance(loaded, CategoryHead) and adapters == {}
    assert loaded.unsafe_offset == pytest.approx(math.log(point.threshold / (1 - point.threshold)))
    assert meta["recipe"] == "{}" and '"threshold"' in meta["validation"]
    assert torch.equal(loaded.net[0].weight, head.net[0].weight)


def test_training_continues_from_a_head_files_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    trained = {"layer.query": LoRALinear(nn.Linear(8, 8), rank=2, alpha=4.0)}
    with torch.no_grad():
        trained["layer.query"].b.normal_()
    head = CategoryHead(8, 4, ["S1", "S2"])
    path = tmp_path / "head.safetensors"
    head.save(path, adapters={name: a.factors() for name, a in trained.items()})

    fresh = {"layer.query": LoRALinear(nn.Linear(8, 8), rank=2, alpha=4.0)}
    fresh_head = CategoryHead(8, 4, ["S1", "S2"])
    start_from(path, fresh_head, fresh)
    assert torch.allclose(fresh["layer.query"].a, trained["layer.query"].a)
    assert torch.allclose(fresh["layer.query"].b, trained["layer.query"].b)
    assert torch.equal(fresh_head.net[3].weight, head.net[3].weight)

    with pytest.raises(SystemExit, match="categories differ"):
        start_from(path, CategoryHead(8, 4, ["S1", "S9"]), fresh)
    with pytest.raises(SystemExit, match="rank"):
        start_from(
            path, CategoryHead(8, 4, ["S1", "S2"]), {"layer.query": LoRALinear(nn.Linear(8, 8), 4, 4.0)}
        )
