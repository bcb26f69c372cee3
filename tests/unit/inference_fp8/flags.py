"""What the FP8 flag tests share: the service's flags parsed as `python -m services.inference` would,
and a GPU of a chosen compute capability in place of whatever torch sees."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from services.inference.config import InferenceConfig, parse_config


def parse(tmp_path: Path, *extra: str) -> InferenceConfig:
    return parse_config(["--ckpt-dir", str(tmp_path), "--tokenizer-path", str(tmp_path / "t.model"), *extra])


def pretend_gpu(monkeypatch: pytest.MonkeyPatch, name: str, capability: tuple[int, int]) -> None:
    """One visible GPU, `name` of `capability`, for the checks that read them."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: name)
