"""Train the embedded classifier's head: `python -m training.safety.train_head`.

Embeds the training split once with the MiniLM encoder, then fits the small head on the cached
embeddings: seconds on a CPU, and seeded, so the shipped head is reproducible.

Model selection never looks at the held-out split. The training split is cut into five seeded
folds (`grouped_folds`: stratified by kind, grouped by filler so that one request's rephrasings
never sit on both sides of a cut). `--select` fits every candidate of `GRID` without fold 0 and
prints its numbers on fold 0 (the validation split). A plain run cross-validates the chosen
configuration (the defaults below) over all five folds and prints its out-of-fold numbers at
the policy's 0.5 and at per-category thresholds that hold 5% false positives on the benign
prompts (information: the default policy keeps 0.5, docs/safety.md says why), then fits the
shipped head on the whole training split. `python -m training.safety.evaluate` reads the
held-out split, for the chosen head.
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from services.safety.encoder import EncoderConfig, SentenceEncoder, minilm_dir
from services.safety.head import DEFAULT_HEAD, SafetyHead
from training.safety.data import hard_cases
from training.safety.data.build_dataset import (
    BENIGN,
    BENIGN_ROLEPLAY_FILLERS,
    BENIGN_TOPICS,
    DATA_DIR,
    OUTPUT_KINDS,
    UNSAFE,
    load_jsonl,
)

LABELS = ["O1", "O2", "O3", "O4", "O5", "O6"]
# Cross-validation folds of the training split (each one a validation split of ~20%).
FOLDS = 5
log = logging.getLogger("train_head")


@dataclass(frozen=True)
class FitConfig:
    hidden: int = 256
    epochs: int = 400
    lr: float = 3e-3
    weight_decay: float = 1e-2
    # Targets pulled from {0, 1} towards 0.5 by this much: softer scores near the boundary.
    label_smoothing: float = 0.0
    # Gaussian noise added to the (unit-length) embeddings at every step: a text is a point, a
    # rephrasing of it a nearby one, so the head should not draw its boundary through the gap.
    input_noise: float = 0.08
    # Positives weighted by (negatives / positives) ** this per label: 0 plain, 1 balanced.
    positive_weight: float = 0.5
    seed: int = 0


# Candidates `--select` compares on validation. The defaults above were chosen on a validation
# split of an earlier version of the data; docs/safety.md has this grid on the final data.
GRID = [
    FitConfig(hidden=64, input_noise=0.0),
    FitConfig(hidden=128, input_noise=0.03),
    FitConfig(hidden=128, input_noise=0.03, positive_weight=1.0),
    FitConfig(hidden=256, input_noise=0.05),
    FitConfig(hidden=256, input_noise=0.08),
    FitConfig(hidden=256, input_noise=0.12),
    FitConfig(hidden=512, input_noise=0.08),
]
# The policy's target: at most this share of benign prompts flagged, on validation.
TARGET_FALSE_POSITIVES = 0.05
THRESHOLD_STEPS = [round(0.3 + 0.05 * i, 2) for i in range(14)]  # 0.3 .. 0.95


def targets(examples: Sequence[dict], labels: list[str]) -> torch.Tensor:
    y = torch.zeros((len(examples), len(labels)))
    for i, ex in enumerate(examples):
        for label in ex["labels"]:
            y[i, labels.index(label)] = 1.0
    return y


def fit(x: torch.Tensor, y: torch.Tensor, config: FitConfig) -> SafetyHead:
    torch.manual_seed(config.seed)
    head = SafetyHead(x.shape[1], config.hidden, LABELS)
    opt = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # Positives are rare per label; weight them so each label's classes count about equally.
    pos = y.sum(0).clamp(min=1.0)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=((len(y) - pos) / pos) ** config.positive_weight)
    soft = y * (1 - config.label_smoothing) + 0.5 * config.label_smoothing
    head.train()
    for _ in range(config.epochs):
        opt.zero_grad()
        noisy = x + config.input_noise * torch.randn_like(x) if config.input_noise else x
        loss = loss_fn(head(noisy), soft)
        loss.backward()
        opt.step()
    log.info("final training loss %.4f", loss.item())
    return head.eval()


def _train_fillers() -> list[str]:
    sides = [s for sides in UNSAFE.values() for s in sides] + [BENIGN, BENIGN_TOPICS, BENIGN_ROLEPLAY_FILLERS]
    fillers = [f for side in sides for f in side.train.fillers]
    fillers += hard_cases.fillers()
    return sorted({f.lower() for f in fillers}, key=len, reverse=True)


def grouped_folds(examples: Sequence[dict], folds: int = FOLDS, seed: int = 0) -> list[int]:
    """The cross-validation fold of each example. Texts are grouped by the longest training filler
    they contain (a text with none is its own group); whole groups go, in a seeded order, to the
    fold where they keep every kind's share most even: stratified by kind, and no request is asked
    one way in one fold and another way in the next."""
    fillers = _train_fillers()
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        text = str(ex["text"]).lower()
        key = next((f for f in fillers if f in text), text)
        groups.setdefault(key, []).append(i)
    totals = Counter(str(ex["kind"]) for ex in examples)
    taken = [Counter[str]() for _ in range(folds)]
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    fold_of = [0] * len(examples)
    for key in order:
        kinds = Counter(str(examples[i]["kind"]) for i in groups[key])
        fold = min(
            range(folds), key=lambda f: (sum((taken[f][k] + n) / totals[k] for k, n in kinds.items()), f)
        )
        taken[fold].update(kinds)
        for i in groups[key]:
            fold_of[i] = fold
    return fold_of


def split_validation(examples: Sequence[dict], fold: int = 0) -> tuple[list[int], list[int]]:
    """(train indices, validation indices): one fold of `grouped_folds` is the validation split."""
    fold_of = grouped_folds(examples)
    return [i for i, f in enumerate(fold_of) if f != fold], [i for i, f in enumerate(fold_of) if f == fold]


def out_of_fold(x: torch.Tensor, y: torch.Tensor, fold_of: list[int], config: FitConfig) -> torch.Tensor:
    """Validation scores for every training example: each fold scored by a head fitted without it."""
    probs = torch.zeros_like(y)
    for fold in range(max(fold_of) + 1):
        held = torch.tensor([f == fold for f in fold_of])
        probs[held] = predict(fit(x[~held], y[~held], config), x[held])
    return probs


def is_benign_prompt(example: dict) -> bool:
    return not example["labels"] and str(example["kind"]) not in OUTPUT_KINDS


def tallies(examples: Sequence[dict], flagged: Sequence[bool]) -> dict[str, tuple[int, int]]:
    """(flagged, total) of the unsafe texts ("blocked"), of the benign prompts ("fp_prompts") and
    of all benign texts, model output included ("fp_benign")."""
    groups = {
        "blocked": [bool(ex["labels"]) for ex in examples],
        "fp_prompts": [is_benign_prompt(ex) for ex in examples],
        "fp_benign": [not ex["labels"] for ex in examples],
    }
    return {
        name: (sum(f for f, p in zip(flagged, pick, strict=True) if p), sum(pick))
        for name, pick in groups.items()
    }


def rates(examples: Sequence[dict], flagged: Sequence[bool]) -> dict[str, float]:
    """The shares of `tallies`: unsafe blocked, false positives on benign prompts and on all benign."""
    return {name: hit / max(total, 1) for name, (hit, total) in tallies(examples, flagged).items()}


def per_kind(examples: Sequence[dict], flagged: Sequence[bool]) -> dict[str, tuple[int, int]]:
    """kind -> (examples, flagged), in the order of the kinds' names."""
    counts: dict[str, tuple[int, int]] = {}
    for ex, f in zip(examples, flagged, strict=True):
        n, hit = counts.get(str(ex["kind"]), (0, 0))
        counts[str(ex["kind"])] = (n + 1, hit + f)
    return dict(sorted(counts.items()))


def flag(probs: torch.Tensor, thresholds: Sequence[float]) -> list[bool]:
    return (probs >= torch.tensor(thresholds)).any(dim=1).tolist()


def predict(head: SafetyHead, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.sigmoid(head(x))


def choose_thresholds(examples: Sequence[dict], probs: torch.Tensor) -> list[float]:
    """Per-category thresholds (validation only): the most unsafe blocked with at most
    TARGET_FALSE_POSITIVES of benign prompts flagged. Coordinate ascent from the best uniform
    threshold; ties go to the higher threshold (fewer false positives elsewhere)."""

    def score(thresholds: list[float]) -> tuple[bool, float, float]:
        r = rates(examples, flag(probs, thresholds))
        return r["fp_prompts"] <= TARGET_FALSE_POSITIVES, r["blocked"], -r["fp_benign"]

    best = max(([t] * probs.shape[1] for t in THRESHOLD_STEPS), key=lambda ts: (score(ts), ts[0]))
    for _ in range(3):
        for label in range(len(best)):
            candidates = [[*best[:label], t, *best[label + 1 :]] for t in THRESHOLD_STEPS]
            ranked = [(score(ts), ts[label], ts) for ts in candidates]
            best = max(ranked, key=lambda r: (r[0], r[1]))[2]
    return best


def report(examples: Sequence[dict], flagged: Sequence[bool]) -> str:
    r = rates(examples, flagged)
    kinds = ", ".join(f"{k} {f}/{n}" for k, (n, f) in per_kind(examples, flagged).items())
    return (
        f"unsafe blocked {r['blocked']:.1%}, benign prompts flagged {r['fp_prompts']:.1%}, "
        f"all benign flagged {r['fp_benign']:.1%}\n  flagged per kind: {kinds}"
    )


def embed(examples: Sequence[dict], precision: str, cache: Path | None) -> torch.Tensor:
    """Embeddings of the examples' texts; `cache` (experiments, e.g. under /tmp) keeps them by text
    across runs so a changed data set only embeds its new texts."""
    texts = [str(e["text"]) for e in examples]
    stored: dict[str, torch.Tensor] = torch.load(cache) if cache and cache.exists() else {}
    todo = sorted(set(texts) - set(stored))
    if todo:
        encoder = SentenceEncoder(EncoderConfig(minilm_dir(), precision=precision))
        start = time.perf_counter()
        stored.update(zip(todo, encoder.embed_texts(todo), strict=True))
        log.info("embedded %d texts in %.1fs", len(todo), time.perf_counter() - start)
        if cache:
            torch.save(stored, cache)
    return torch.stack([stored[t] for t in texts])


def select(examples: list[dict], x: torch.Tensor, train_idx: list[int], val_idx: list[int]) -> None:
    """Fit every GRID candidate on train minus validation; print its validation numbers."""
    val = [examples[i] for i in val_idx]
    y = targets(examples, LABELS)
    print(
        "| config | unsafe blocked @0.5 | FP benign prompts @0.5 | FP all benign @0.5 | blocked, chosen thresholds |"
    )
    print("|---|---|---|---|---|")
    for config in GRID:
        probs = predict(fit(x[train_idx], y[train_idx], config), x[val_idx])
        r = rates(val, flag(probs, [0.5] * len(LABELS)))
        tuned = rates(val, flag(probs, choose_thresholds(val, probs)))
        print(
            f"| {config} | {r['blocked']:.1%} | {r['fp_prompts']:.1%} | {r['fp_benign']:.1%} "
            f"| {tuned['blocked']:.1%} at {tuned['fp_prompts']:.1%} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, default=DATA_DIR / "train.jsonl")
    parser.add_argument("--out", type=Path, default=DEFAULT_HEAD)
    defaults = FitConfig()
    parser.add_argument("--hidden", type=int, default=defaults.hidden)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--label-smoothing", type=float, default=defaults.label_smoothing)
    parser.add_argument("--input-noise", type=float, default=defaults.input_noise)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--precision", choices=["bf16", "int8", "fp32"], default="bf16")
    parser.add_argument(
        "--cache", type=Path, help="embedding cache file (experiments; keep it out of the repo)"
    )
    parser.add_argument("--select", action="store_true", help="compare GRID on validation; write nothing")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    examples = load_jsonl(args.train)
    x = embed(examples, args.precision, args.cache)
    if args.select:
        train_idx, val_idx = split_validation(examples)
        log.info("validation: fold 0, %d of %d training examples", len(val_idx), len(examples))
        select(examples, x, train_idx, val_idx)
        return
    config = FitConfig(
        args.hidden,
        args.epochs,
        label_smoothing=args.label_smoothing,
        input_noise=args.input_noise,
        seed=args.seed,
    )
    y = targets(examples, LABELS)
    probs = out_of_fold(x, y, grouped_folds(examples), config)
    print(
        f"cross-validation ({FOLDS} grouped folds), thresholds 0.5: {report(examples, flag(probs, [0.5] * len(LABELS)))}"
    )
    thresholds = choose_thresholds(examples, probs)
    named = ", ".join(f"{c} {t}" for c, t in zip(LABELS, thresholds, strict=True))
    print(
        f"cross-validation, thresholds for 5% FP on benign prompts ({named}): {report(examples, flag(probs, thresholds))}"
    )
    # The shipped head learns from every training example; the numbers above are for the same
    # recipe fitted on four fifths of them.
    head = fit(x, y, config)
    head.save(args.out, {"encoder": "all-MiniLM-L6-v2", "precision": args.precision})
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
