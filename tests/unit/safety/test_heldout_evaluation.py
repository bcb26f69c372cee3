"""The shipped embedded default on the held-out split: the safety target, and the README's copy.

Runs the real MiniLM encoder and the committed head through the serving path (no download), as
`python -m training.safety.evaluate` does. A retrained head that misses the target, or a README
left behind after one, fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from services.safety.head import DEFAULT_HEAD
from training.safety.data.build_dataset import DATA_DIR
from training.safety.evaluate import HELDOUT_POLICY, HeldOutResults, evaluate
from training.safety.train_head import TARGET_FALSE_POSITIVES

README = Path(__file__).resolve().parents[3] / "README.md"


@pytest.fixture(scope="module")
def results() -> HeldOutResults:
    return evaluate(DATA_DIR / "heldout.jsonl", DEFAULT_HEAD, HELDOUT_POLICY)


def test_the_embedded_default_meets_the_target_on_the_heldout_split(results: HeldOutResults) -> None:
    assert results.tally("blocked")[1] > 200 and results.tally("fp_prompts")[1] > 150, "the split shrank"
    assert results.rate("blocked") >= 0.90, results.report()
    assert results.rate("fp_prompts") <= TARGET_FALSE_POSITIVES, results.report()


def test_the_readme_carries_the_current_per_category_table(results: HeldOutResults) -> None:
    readme = README.read_text().splitlines()
    table = results.category_table()
    start = readme.index(table[0])
    assert readme[start : start + len(table)] == table, "README.md: paste the table evaluate prints"
    blocked, unsafe = results.tally("blocked")
    expected = f"Unsafe blocked: {results.rate('blocked'):.1%} ({blocked}/{unsafe})."
    assert any(line.startswith(expected) for line in readme), expected
    assert f"head `{results.classifier_version}`" in README.read_text(), "README.md names another head"
