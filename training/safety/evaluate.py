"""Evaluate the embedded classifier on the held-out split: `python -m training.safety.evaluate`.

Runs every held-out example through the serving path (classifier + policy thresholds) and prints
the per-category precision/recall/F1 table, the unsafe block rate and the false-positive rates
(benign prompts; all benign texts, model output included), as Markdown (README.md and
docs/safety.md carry a copy). Held-out data is for the final number of a chosen head only: model
selection uses the validation split of train (train_head.py).
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from services.common.dialog import Message, Role
from services.common.verdicts import Direction, Verdict
from services.safety.classifiers.embedded import EmbeddedClassifier, EmbeddedConfig
from services.safety.head import DEFAULT_HEAD
from services.safety.moderation import apply_policy
from services.safety.policy import POLICIES_DIR, load_policy
from services.safety.verdict import CheckItem
from training.safety.data.build_dataset import DATA_DIR, OUTPUT_KINDS, load_jsonl
from training.safety.train_head import per_kind, tallies

# The held-out split is labelled with Llama Guard 1's O-codes; the O-coded policy reads them from
# the S-codes the default head scores (policies/llama_guard.yaml, `labels:`).
HELDOUT_POLICY = POLICIES_DIR / "llama_guard.yaml"


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


@dataclass(frozen=True)
class HeldOutResults:
    """What the classifier + policy did on every held-out example."""

    policy_name: str
    classifier_id: str
    classifier_version: str
    category_names: dict[str, str]  # the policy's enabled categories, code -> name
    examples: list[dict[str, object]]
    verdicts: list[Verdict]

    @functools.cached_property
    def flagged(self) -> list[bool]:
        return [not v.safe for v in self.verdicts]

    @functools.cached_property
    def _tallies(self) -> dict[str, tuple[int, int]]:
        return tallies(self.examples, self.flagged)

    def tally(self, name: str) -> tuple[int, int]:
        """(flagged, total) of "blocked", "fp_prompts" or "fp_benign" (train_head.tallies)."""
        return self._tallies[name]

    def rate(self, name: str) -> float:
        flagged, total = self.tally(name)
        return flagged / max(total, 1)

    def category_table(self) -> list[str]:
        rows = ["| category | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        for code, name in self.category_names.items():
            counts = Counts()
            for ex, verdict in zip(self.examples, self.verdicts, strict=True):
                labelled, violated = code in map(str, ex["labels"]), code in verdict.violated  # type: ignore[call-overload]
                counts.tp += labelled and violated
                counts.fp += violated and not labelled
                counts.fn += labelled and not violated
            rows.append(counts.row(f"{code} {name}"))
        return rows

    def report(self) -> str:
        """The Markdown that `python -m training.safety.evaluate` prints."""
        (blocked, unsafe), (prompt_fp, prompts), (benign_fp, benign) = (
            self.tally(name) for name in ("blocked", "fp_prompts", "fp_benign")
        )
        lines = [
            f"Held-out split: {len(self.examples)} examples ({unsafe} unsafe, {benign} benign), "
            f"policy {self.policy_name}, classifier {self.classifier_id} {self.classifier_version}",
            "",
            *self.category_table(),
            "",
            f"Unsafe blocked: {blocked}/{unsafe} = {self.rate('blocked'):.1%}",
            "Benign prompts flagged (false positives on user input): "
            f"{prompt_fp}/{prompts} = {self.rate('fp_prompts'):.1%}",
            f"All benign flagged (prompts and model output): {benign_fp}/{benign} = {self.rate('fp_benign'):.1%}",
        ]
        # The trade-off at one uniform threshold for every category: information only (the policy's
        # thresholds and how they were kept: docs/safety.md, "Model selection").
        worst = [max((c.score for c in v.categories), default=0.0) for v in self.verdicts]
        is_unsafe = [bool(ex["labels"]) for ex in self.examples]
        lines += ["", "| uniform threshold | unsafe blocked | benign flagged |", "|---|---|---|"]
        for threshold in (0.3, 0.5, 0.7, 0.8, 0.9):
            hit = [w >= threshold for w in worst]
            tpr = sum(h for h, g in zip(hit, is_unsafe, strict=True) if g) / max(unsafe, 1)
            fpr = sum(h for h, g in zip(hit, is_unsafe, strict=True) if not g) / max(benign, 1)
            lines.append(f"| {threshold:.1f} | {tpr:.1%} | {fpr:.1%} |")
        lines += ["", "| kind | examples | flagged unsafe |", "|---|---|---|"]
        for kind, (n, flagged_n) in per_kind(self.examples, self.flagged).items():
            lines.append(f"| {kind} | {n} | {flagged_n} ({flagged_n / n:.0%}) |")
        return "\n".join(lines)


def evaluate(data: Path, head: Path, policy_path: Path) -> HeldOutResults:
    """Judge every example of `data` through the serving path (classifier, then the policy)."""
    torch.manual_seed(0)
    examples = load_jsonl(data)
    policy = load_policy(policy_path)
    # The precision the head was trained in, on every CPU: serving falls back to fp32 where the CPU
    # lacks bf16 instructions, which moves a score near a threshold, and the published table
    # must not depend on the machine that printed it.
    classifier = EmbeddedClassifier(EmbeddedConfig(head_path=head, fp32_without_bf16=False))
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
    return HeldOutResults(
        policy.name,
        classifier.id,
        classifier.version,
        {c.code: c.name for c in policy.enabled},
        examples,
        verdicts,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA_DIR / "heldout.jsonl")
    parser.add_argument("--head", type=Path, default=DEFAULT_HEAD)
    parser.add_argument("--policy", type=Path, default=HELDOUT_POLICY)
    args = parser.parse_args()
    print(evaluate(args.data, args.head, args.policy).report())


if __name__ == "__main__":
    main()
