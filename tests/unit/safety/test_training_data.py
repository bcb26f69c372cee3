"""The data set and the model-selection protocol: the committed files are what the builder writes,
train-only text cannot leak held-out fillers, the validation split is seeded, stratified by kind and
grouped, and thresholds are chosen to the false-positive target on the data they are given."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from training.safety.data import build_dataset
from training.safety.data.build_dataset import DATA_DIR, load_jsonl
from training.safety.train_head import (
    FOLDS,
    LABELS,
    TARGET_FALSE_POSITIVES,
    _train_fillers,
    choose_thresholds,
    flag,
    grouped_folds,
    rates,
    split_validation,
)


@pytest.fixture(scope="module")
def train() -> list[dict]:
    return load_jsonl(DATA_DIR / "train.jsonl")


def test_committed_splits_are_what_the_builder_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.argv", ["build_dataset", "--out-dir", str(tmp_path)])
    build_dataset.main()  # also runs check_disjoint and check_train_only
    for name in ("train.jsonl", "heldout.jsonl"):
        assert (tmp_path / name).read_bytes() == (DATA_DIR / name).read_bytes(), name


def test_train_only_text_with_a_heldout_filler_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from training.safety.data import hard_cases

    heldout_filler = build_dataset.BENIGN.heldout.fillers[0]
    monkeypatch.setattr(hard_cases, "EDGY_PROMPTS", (f"How do I {heldout_filler}?",))
    with pytest.raises(ValueError, match="held-out fillers"):
        build_dataset.check_train_only()


def test_folds_are_seeded_stratified_and_grouped(train: list[dict]) -> None:
    fold_of = grouped_folds(train)
    assert fold_of == grouped_folds(train)
    assert set(fold_of) == set(range(FOLDS))
    kinds = Counter(str(e["kind"]) for e in train)
    for fold in range(FOLDS):
        in_fold = Counter(str(e["kind"]) for e, f in zip(train, fold_of, strict=True) if f == fold)
        for kind, n in kinds.items():
            if n >= 50:  # kinds large enough to split evenly: each fold holds about a fifth
                assert abs(in_fold[kind] / n - 1 / FOLDS) < 0.05, (fold, kind)
    train_idx, val_idx = split_validation(train)
    assert sorted(train_idx + val_idx) == list(range(len(train)))
    # No filler asked one way in train and another way in validation.
    fillers = _train_fillers()

    def group(i: int) -> str:
        text = str(train[i]["text"]).lower()
        return next((f for f in fillers if f in text), text)

    assert not {group(i) for i in val_idx} & {group(i) for i in train_idx}


def test_chosen_thresholds_meet_the_false_positive_target() -> None:
    generator = torch.Generator().manual_seed(0)
    examples: list[dict] = [{"labels": ["O1"], "kind": "direct"}] * 100
    examples += [{"labels": [], "kind": "benign"}] * 200
    probs = torch.rand((300, len(LABELS)), generator=generator) * 0.6
    probs[:100, 0] += 0.35  # unsafe O1 scores high on O1, overlapping the benign ones' noise
    thresholds = choose_thresholds(examples, probs)
    result = rates(examples, flag(probs, thresholds))
    assert result["fp_prompts"] <= TARGET_FALSE_POSITIVES
    assert result["blocked"] >= rates(examples, flag(probs, [0.95] * len(LABELS)))["blocked"]
    assert thresholds[0] < max(thresholds[1:])  # the informative category is the one let lower
