"""Any AutoModelForSequenceClassification checkpoint, with a label -> category map from config.

The map (YAML/JSON: {model label: category code or null}) says which of the model's labels feed
which policy category; labels mapped to null (e.g. "benign") are ignored. Multi-label checkpoints
(problem_type multi_label_classification) get a sigmoid per label, others a softmax.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from services.safety.classifiers.base import ROWS_PER_CALL, Classifier, judge_in_rows
from services.safety.device import CPU
from services.safety.head import file_version
from services.safety.policy import PolicyError
from services.safety.verdict import CheckItem, Judgement


@dataclass(frozen=True)
class SequenceConfig:
    model_dir: Path
    label_map: Mapping[str, str | None]
    # A judged text is scored as rows (segments.py), this many per model call at most.
    rows_per_call: int = ROWS_PER_CALL
    device: torch.device = CPU
    dtype: torch.dtype | None = None  # None: the checkpoint's saved dtype


def load_label_map(path: Path) -> dict[str, str | None]:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise PolicyError(f"cannot read label map {path}: {error}") from None
    if not isinstance(raw, dict) or not all(isinstance(v, str | None) for v in raw.values()):
        raise PolicyError(f"{path}: expected a mapping of model label -> category code (or null)")
    return {str(k): v for k, v in raw.items()}


class SequenceClassifier(Classifier):
    id = "sequence"

    def __init__(self, config: SequenceConfig) -> None:
        self.config = config
        self.tokenizer = AutoTokenizer.from_pretrained(config.model_dir, local_files_only=True)
        dtype: dict[str, Any] = {"dtype": config.dtype} if config.dtype else {}
        self.model = (
            AutoModelForSequenceClassification.from_pretrained(
                config.model_dir, local_files_only=True, **dtype
            )
            .eval()
            .to(config.device)
        )
        id2label = {int(i): str(label) for i, label in self.model.config.id2label.items()}
        unknown = set(config.label_map) - set(id2label.values())
        if unknown:
            raise PolicyError(
                f"label map names {sorted(unknown)}, which the checkpoint does not have "
                f"(its labels: {sorted(id2label.values())})"
            )
        # (output index, category code) for every mapped label.
        self.outputs = [
            (i, config.label_map[label]) for i, label in id2label.items() if config.label_map.get(label)
        ]
        self.multi_label = self.model.config.problem_type == "multi_label_classification"
        # Category code -> the outputs that feed it (a category is as violated as its worst label).
        self.codes = sorted({code for _, code in self.outputs if code})
        self._feeds = [[i for i, c in self.outputs if c == code] for code in self.codes]
        # The checkpoint's own special tokens around a text ([CLS] ... [SEP] for BERT), read off
        # an empty encoding so any tokenizer family works.
        empty = list(self.tokenizer("")["input_ids"])
        self.prefix, self.suffix = empty[:1], empty[1:]
        max_len = int(getattr(self.model.config, "max_position_embeddings", 512))
        self.content_window = min(max_len, self.tokenizer.model_max_length) - len(empty)
        weights = sorted(config.model_dir.glob("*.safetensors"))
        self.version = file_version(weights[0]) if weights else "unknown"

    def labels(self) -> frozenset[str]:
        return frozenset(self.codes)

    def judge(self, items: Sequence[CheckItem]) -> list[Judgement]:
        """Each text as the rows of segments.py, like the embedded classifier; max per category."""
        return judge_in_rows(
            items,
            self._token_ids,
            self.content_window,
            self._score_rows,
            self.codes,
            self.config.rows_per_call,
        )

    def _token_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @torch.inference_mode()
    def _score_rows(self, rows: Sequence[Sequence[int]]) -> list[tuple[float, ...]]:
        wrapped = [[*self.prefix, *row, *self.suffix] for row in rows]
        batch = self.tokenizer.pad({"input_ids": wrapped}, return_tensors="pt").to(self.config.device)
        logits = self.model(**batch).logits.float().cpu()
        probs = (torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)).tolist()
        return [tuple(max(row[i] for i in feeds) for feeds in self._feeds) for row in probs]
