"""Token windows of a long text: all of it is judged, in full windows that overlap; nothing is dropped."""

from itertools import pairwise

from services.safety.segments import plan_rows, token_windows


def ids(text: str) -> list[int]:
    return [int(word) for word in text.split()]


def numbers(count: int) -> str:
    return " ".join(str(i) for i in range(count))  # one "sentence" of `count` tokens


def test_short_text_is_one_row_not_truncated() -> None:
    plan = plan_rows(numbers(10), ids, window=254)
    assert [row.tokens for row in plan.rows] == [tuple(range(10))] and plan.judged_tokens == 10
    assert token_windows(10, 254) == []


def test_long_text_is_covered_by_full_windows_from_the_first_token_to_the_last() -> None:
    plan = plan_rows(numbers(25), ids, window=10)
    rows = sorted(row.tokens for row in plan.rows)
    assert rows[0] == tuple(range(10)) and rows[-1] == tuple(range(15, 25))
    assert all(len(row) == 10 for row in rows)
    assert sorted({t for row in rows for t in row}) == list(range(25))
    assert plan.judged_tokens == 25


def test_text_beyond_what_was_once_the_budget_is_judged_whole() -> None:
    # 100 tokens in windows of 10: ten times the window, all of it read.
    spans = token_windows(100, 10)
    assert spans[0] == (0, 10) and spans[-1] == (90, 100)
    assert all(end - start == 10 for start, end in spans)
    # Neighbours overlap by at least a quarter of the window (2 of 10 tokens here).
    assert all(next_start <= end - 2 for (_, end), (next_start, _) in pairwise(spans))
    plan = plan_rows(numbers(100), ids, window=10)
    assert plan.judged_tokens == 100
    assert sorted({t for row in plan.rows for t in row.tokens}) == list(range(100))
