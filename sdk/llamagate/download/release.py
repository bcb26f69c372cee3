"""The layout of Meta's Llama 2 release: which files exist, in which folder, checked by which checklist.

Facts from the reference download.sh: LICENSE and USE_POLICY.md at the top (no checksums), tokenizer.model
checked by tokenizer_checklist.chk, and per model a folder `llama-2-<size>[-chat]` holding
consolidated.NN.pth shards (one per model-parallel rank), params.json and checklist.chk.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from llamagate.download.errors import UsageError


@dataclass(frozen=True)
class FileGroup:
    """Files in one folder of the release, verified together by one md5 checklist (or none)."""

    folder: str  # relative to the output directory and to the URL's `*`; "" is the top level
    files: tuple[str, ...]
    checklist: str | None

    def path(self, name: str) -> str:
        return f"{self.folder}/{name}" if self.folder else name


# Model name (as the approval e-mail and download.sh spell it) -> (folder, number of shards).
MODELS: dict[str, tuple[str, int]] = {
    "7B": ("llama-2-7b", 1),
    "13B": ("llama-2-13b", 2),
    "70B": ("llama-2-70b", 8),
    "7B-chat": ("llama-2-7b-chat", 1),
    "13B-chat": ("llama-2-13b-chat", 2),
    "70B-chat": ("llama-2-70b-chat", 8),
}

LEGAL = FileGroup(folder="", files=("LICENSE", "USE_POLICY.md"), checklist=None)
TOKENIZER = FileGroup(folder="", files=("tokenizer.model",), checklist="tokenizer_checklist.chk")


def model_group(model: str) -> FileGroup:
    folder, shards = MODELS[model]
    files = (*(f"consolidated.{i:02d}.pth" for i in range(shards)), "params.json")
    return FileGroup(folder=folder, files=files, checklist="checklist.chk")


def parse_models(spec: str) -> list[str]:
    """'7B,13B-chat' -> ['7B', '13B-chat']; '' or 'all' -> every model. Case-insensitive, order kept."""
    if spec.strip().lower() in ("", "all"):
        return list(MODELS)
    by_lower = {name.lower(): name for name in MODELS}
    chosen: list[str] = []
    for raw in spec.replace(" ", ",").split(","):
        if not raw:
            continue
        name = by_lower.get(raw.lower())
        if name is None:
            raise UsageError(
                f"unknown model {raw!r}: choose from {', '.join(MODELS)} (comma-separated), or 'all'"
            )
        if name not in chosen:
            chosen.append(name)
    return chosen


def release_plan(models: Iterable[str]) -> list[FileGroup]:
    """Everything to fetch for these models, in the reference's order."""
    return [LEGAL, TOKENIZER, *(model_group(m) for m in models)]
