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

HEADS_DIR = Path(__file__).resolve().parent / "heads"
DEFAULT_HEAD = HEADS_DIR / "minilm_mlcommons.safetensors"


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


# The linear layers of a BERT encoder that carry low-rank adapters (module-name suffixes).
ADAPTER_TARGETS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)
_ADAPTER_PREFIX = "adapter."


class CategoryHead(nn.Module):
    """An "unsafe" decision and the categories it breaks, on fine-tuned sentence embeddings.

    Output 0 is the unsafe logit; outputs 1.. are category logits, trained on unsafe texts only.
    `probabilities` gives each category p(unsafe) scaled by how close the category comes to the
    most likely one, so the most likely category carries the full p(unsafe): with every category
    enabled the decision is p(unsafe) >= threshold however the categories are split, and a policy
    that disables a category passes a text only when that category is clearly the one broken.
    `unsafe_offset` (a logit shift chosen on validation data at training time) puts the trained
    operating point at a probability of 0.5.
    """

    def __init__(self, dim: int, hidden: int, labels: list[str], unsafe_offset: float = 0.0) -> None:
        super().__init__()
        self.labels = list(labels)
        self.hidden = hidden
        self.unsafe_offset = unsafe_offset
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(hidden, 1 + len(labels))
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.net(embeddings)

    def probabilities(self, embeddings: torch.Tensor) -> torch.Tensor:
        logits = self.net(embeddings)
        unsafe = torch.sigmoid(logits[:, :1] - self.unsafe_offset)
        categories = torch.sigmoid(logits[:, 1:])
        share = categories / categories.max(dim=1, keepdim=True).values.clamp(min=1e-6)
        return unsafe * share

    def save(
        self,
        path: Path,
        adapters: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        meta = {
            "format": "unsafe+categories",
            "labels": json.dumps(self.labels),
            "hidden": str(self.hidden),
            "unsafe_offset": repr(float(self.unsafe_offset)),
            **(extra or {}),
        }
        tensors = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        for name, (a, b) in (adapters or {}).items():
            tensors[f"{_ADAPTER_PREFIX}{name}.a"] = a.contiguous()
            tensors[f"{_ADAPTER_PREFIX}{name}.b"] = b.contiguous()
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata=meta)


Head = SafetyHead | CategoryHead


def load_head(path: Path) -> tuple[Head, dict[str, tuple[torch.Tensor, torch.Tensor]], dict[str, str]]:
    """A head file of either format: (head, encoder adapters as (A, scaled B) by module, metadata)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    if meta.get("format") != "unsafe+categories":
        plain, meta = SafetyHead.load(path)
        return plain, {}, meta
    state = load_file(str(path))
    adapters: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key in [k for k in state if k.startswith(_ADAPTER_PREFIX)]:
        name, factor = key[len(_ADAPTER_PREFIX) :].rsplit(".", 1)
        a, b = adapters.get(name, (torch.empty(0), torch.empty(0)))
        tensor = state.pop(key)
        adapters[name] = (tensor, b) if factor == "a" else (a, tensor)
    dim = state["net.0.weight"].shape[1]
    head = CategoryHead(dim, int(meta["hidden"]), json.loads(meta["labels"]), float(meta["unsafe_offset"]))
    head.load_state_dict(state)
    return head.eval(), adapters, meta
