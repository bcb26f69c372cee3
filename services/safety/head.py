"""The embedded classifier's head: a small multi-label MLP on sentence embeddings.

One sigmoid per category, so a text can violate several categories at once and each category
has its own threshold in the policy. Saved as safetensors with its labels and shape in the
file's metadata, so the file alone says what it predicts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

DEFAULT_HEAD = Path(__file__).resolve().parent / "heads" / "minilm_o1_o6.safetensors"


class SafetyHead(nn.Module):
    def __init__(self, dim: int, hidden: int, labels: list[str]) -> None:
        super().__init__()
        self.labels = list(labels)
        self.hidden = hidden
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(hidden, len(labels))
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Logits, one per label."""
        return self.net(embeddings)

    def save(self, path: Path, extra: dict[str, str] | None = None) -> None:
        meta = {"labels": json.dumps(self.labels), "hidden": str(self.hidden), **(extra or {})}
        tensors = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata=meta)

    @classmethod
    def load(cls, path: Path) -> tuple[SafetyHead, dict[str, str]]:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        if "labels" not in meta or "hidden" not in meta:
            raise ValueError(f"{path}: not a safety head (metadata lacks labels/hidden)")
        state = load_file(str(path))
        dim = state["net.0.weight"].shape[1]
        head = cls(dim, int(meta["hidden"]), json.loads(meta["labels"]))
        head.load_state_dict(state)
        return head.eval(), meta


def file_version(path: Path) -> str:
    """Short content hash: the classifier_version a verdict reports."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
