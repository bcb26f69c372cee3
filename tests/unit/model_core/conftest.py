"""Fixtures: the demo tokenizer (trained in a second or two) and the demo model (trained once per
session, only for the tests that run it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.inference.demo import CORPUS, DemoPaths, train_tokenizer, write_demo
from services.inference.model.tokenizer import Tokenizer


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoPaths:
    return write_demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    # The demo's tokenizer without its model: training the model would take the unit tier ~10 s.
    path: Path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.model"
    path.write_bytes(train_tokenizer(CORPUS))
    return Tokenizer(path)
