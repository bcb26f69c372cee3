"""Evaluate the embedded classifier on the held-out split: `python -m services.safety.evaluate`.

Runs every held-out example through the serving path (classifier + policy thresholds) and prints
the per-category precision/recall/F1 table, the unsafe block rate and the false-positive rates
(benign prompts; all benign texts, model output included), as Markdown (README.md and
docs/safety.md carry a copy). Held-out data is for the final number of a chosen head only: model
selection uses the validation split of train (train_head.py).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch

from services.common.dialog import Message, Role
from services.safety.classifiers.embedded import EmbeddedClassifier, EmbeddedConfig
from services.safety.data.build_dataset import DATA_DIR, OUTPUT_KINDS, load_jsonl
from services.safety.head import DEFAULT_HEAD
from services.safety.moderation import apply_policy
from services.safety.policy import DEFAULT_POLICY, load_policy
from services.safety.train_head import is_benign_prompt
from services.safety.verdict import CheckItem, Direction, Verdict


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def row(self, name: str) -> str:
        p = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        r = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        return f"| {name} | {p:.3f} | {r:.3f} | {f1:.3f} | {self.tp + self.fn} |"


@dataclass
class HeldOutResults:
    """What the classifier + policy did on every held-out example."""

    header: str
    classifier_version: str
    per_category: dict[str, Counts]
    category_names: dict[str, str]
    examples: list[dict[str, object]]
    verdicts: list[Verdict]
    unsafe_total: int = 0
    blocked: int = 0
    benign_total: int = 0
    false_positives: int = 0
    prompt_total: int = 0
    prompt_false_positives: int = 0

    @property
    def blocked_rate(self) -> float:
        return self.blocked / max(self.unsafe_total, 1)

    @property
    def prompt_false_positive_rate(self) -> float:
        return self.prompt_false_positives / max(self.prompt_total, 1)

    def category_table(self) -> list[str]:
        rows = ["| category | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        return rows + [c.row(f"{code} {self.category_names[code]}") for code, c in self.per_category.items()]

    def report(self) -> str:
        """The Markdown that `python -m services.safety.evaluate` prints."""
        lines = [self.header, "", *self.category_table(), ""]
        lines.append(f"Unsafe blocked: {self.blocked}/{self.unsafe_total} = {self.blocked_rate:.1%}")
        lines.append(
            "Benign prompts flagged (false positives on user input): "
            f"{self.prompt_false_positives}/{self.prompt_total} = {self.prompt_false_positive_rate:.1%}"
        )
        lines.append(
            f"All benign flagged (prompts and model output): {self.false_positives}/{self.benign_total} = "
            f"{self.false_positives / max(self.benign_total, 1):.1%}"
        )
        # The trade-off at one uniform threshold for every category: information only (the policy's
        # thresholds and how they were kept: docs/safety.md, "Model selection").
        worst = [max((c.score for c in v.categories), default=0.0) for v in self.verdicts]
        is_unsafe = [bool(ex["labels"]) for ex in self.examples]
        lines += ["", "| uniform threshold | unsafe blocked | benign flagged |", "|---|---|---|"]
        for threshold in (0.3, 0.5, 0.7, 0.8, 0.9):
            hit = [w >= threshold for w in worst]
            tpr = sum(h for h, g in zip(hit, is_unsafe, strict=True) if g) / max(self.unsafe_total, 1)
            fpr = sum(h for h, g in zip(hit, is_unsafe, strict=True) if not g) / max(self.benign_total, 1)
            lines.append(f"| {threshold:.1f} | {tpr:.1%} | {fpr:.1%} |")
        by_kind: dict[str, list[int]] = {}
        for ex, verdict in zip(self.examples, self.verdicts, strict=True):
            tally = by_kind.setdefault(str(ex["kind"]), [0, 0])
            tally[0] += 1
            tally[1] += not verdict.safe
        lines += ["", "| kind | examples | flagged unsafe |", "|---|---|---|"]
        for kind, (n, flagged_n) in sorted(by_kind.items()):
            lines.append(f"| {kind} | {n} | {flagged_n} ({flagged_n / n:.0%}) |")
        return "\n".join(lines)


def evaluate(data: Path, head: Path, policy_path: Path) -> HeldOutResults:
    """Judge every example of `data` through the serving path (classifier, then the policy)."""
    torch.manual_seed(0)
    examples = load_jsonl(data)
    policy = load_policy(policy_path)
    classifier = EmbeddedClassifier(EmbeddedConfig(head_path=head))
    items = []
    for ex in examples:
        text = str(ex["text"])
        if str(ex["kind"]) in OUTPUT_KINDS:
            context = Message(Role.USER, "Please answer my question.")
            items.append(CheckItem([context, Message(Role.ASSISTANT, text)], Direction.OUTPUT))
        else:
            items.append(CheckItem([Message(Role.USER, text)], Direction.INPUT))
    verdicts = []
    for start in range(0, len(items), 32):
        batch = items[start : start + 32]
        judged = classifier.judge(batch)
        verdicts += [
            apply_policy(policy, classifier, j, it.direction) for j, it in zip(judged, batch, strict=True)
        ]

    results = HeldOutResults(
        header=(
            f"Held-out split: {len(examples)} examples ("
            f"{sum(bool(ex['labels']) for ex in examples)} unsafe, "
            f"{sum(not ex['labels'] for ex in examples)} benign), "
            f"policy {policy.name}, classifier {classifier.id} {classifier.version}"
        ),
        classifier_version=classifier.version,
        per_category={c.code: Counts() for c in policy.enabled},
        category_names={c.code: c.name for c in policy.enabled},
        examples=examples,
        verdicts=verdicts,
    )
    for ex, verdict in zip(examples, verdicts, strict=True):
        labels = set(map(str, ex["labels"]))  # type: ignore[call-overload]
        flagged = set(verdict.violated)
        for code, counts in results.per_category.items():
            counts.tp += code in labels and code in flagged
            counts.fp += code not in labels and code in flagged
            counts.fn += code in labels and code not in flagged
        if labels:
            results.unsafe_total += 1
            results.blocked += not verdict.safe
        else:
            results.benign_total += 1
            results.false_positives += not verdict.safe
            if is_benign_prompt(ex):
                results.prompt_total += 1
                results.prompt_false_positives += not verdict.safe
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA_DIR / "heldout.jsonl")
    parser.add_argument("--head", type=Path, default=DEFAULT_HEAD)
    parser.add_argument("--policy", type=Path, default=DEFAULT_POLICY)
    args = parser.parse_args()
    print(evaluate(args.data, args.head, args.policy).report())


if __name__ == "__main__":
    main()
