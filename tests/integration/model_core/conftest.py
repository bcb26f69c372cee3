"""Fixtures: the demo model and its tokenizer, built once per session."""

from __future__ import annotations

import pytest

from services.inference.demo import DemoPaths, write_demo
from services.inference.model.tokenizer import Tokenizer


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoPaths:
    return write_demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def tokenizer(demo: DemoPaths) -> Tokenizer:
    return Tokenizer(demo.tokenizer)
