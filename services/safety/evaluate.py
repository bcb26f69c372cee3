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
from services.safety.verdict import CheckItem, Direction


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA_DIR / "heldout.jsonl")
    parser.add_argument("--head", type=Path, default=DEFAULT_HEAD)
    parser.add_argument("--policy", type=Path, default=DEFAULT_POLICY)
    args = parser.parse_args()
    torch.manual_seed(0)

    examples = load_jsonl(args.data)
    policy = load_policy(args.policy)
    classifier = EmbeddedClassifier(EmbeddedConfig(head_path=args.head))
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

    per = {c.code: Counts() for c in policy.enabled}
    unsafe_total = blocked = benign_total = false_pos = prompt_total = prompt_false_pos = 0
    by_kind: dict[str, list[int]] = {}
    for ex, verdict in zip(examples, verdicts, strict=True):
        labels = set(map(str, ex["labels"]))  # type: ignore[call-overload]
        flagged = set(verdict.violated)
        for code, counts in per.items():
            counts.tp += code in labels and code in flagged
            counts.fp += code not in labels and code in flagged
            counts.fn += code in labels and code not in flagged
        tally = by_kind.setdefault(str(ex["kind"]), [0, 0])
        tally[0] += 1
        tally[1] += not verdict.safe
        if labels:
            unsafe_total += 1
            blocked += not verdict.safe
        else:
            benign_total += 1
            false_pos += not verdict.safe
            if is_benign_prompt(ex):
                prompt_total += 1
                prompt_false_pos += not verdict.safe

    print(
        f"Held-out split: {len(examples)} examples ({unsafe_total} unsafe, {benign_total} benign), "
        f"policy {policy.name}, classifier {classifier.id} {classifier.version}\n"
    )
    print("| category | precision | recall | F1 | support |")
    print("|---|---|---|---|---|")
    for code, counts in per.items():
        print(counts.row(f"{code} {policy.category(code).name}"))
    print(f"\nUnsafe blocked: {blocked}/{unsafe_total} = {blocked / max(unsafe_total, 1):.1%}")
    print(
        f"Benign prompts flagged (false positives on user input): {prompt_false_pos}/{prompt_total} = "
        f"{prompt_false_pos / max(prompt_total, 1):.1%}"
    )
    print(
        f"All benign flagged (prompts and model output): {false_pos}/{benign_total} = "
        f"{false_pos / max(benign_total, 1):.1%}\n"
    )
    # The trade-off at one uniform threshold for every category: information only (the policy's
    # thresholds and how they were kept: docs/safety.md, "Model selection").
    worst = [max((c.score for c in v.categories), default=0.0) for v in verdicts]
    is_unsafe = [bool(ex["labels"]) for ex in examples]
    print("| uniform threshold | unsafe blocked | benign flagged |")
    print("|---|---|---|")
    for threshold in (0.3, 0.5, 0.7, 0.8, 0.9):
        hit = [w >= threshold for w in worst]
        tpr = sum(h for h, g in zip(hit, is_unsafe, strict=True) if g) / max(unsafe_total, 1)
        fpr = sum(h for h, g in zip(hit, is_unsafe, strict=True) if not g) / max(benign_total, 1)
        print(f"| {threshold:.1f} | {tpr:.1%} | {fpr:.1%} |")
    print()
    print("| kind | examples | flagged unsafe |")
    print("|---|---|---|")
    for kind, (n, flagged_n) in sorted(by_kind.items()):
        print(f"| {kind} | {n} | {flagged_n} ({flagged_n / n:.0%}) |")


if __name__ == "__main__":
    main()
