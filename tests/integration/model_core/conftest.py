"""The demo tokenizer/model, shared with the unit tests' fixtures."""

from tests.unit.model_core.conftest import demo, tokenizer

__all__ = ["demo", "tokenizer"]
