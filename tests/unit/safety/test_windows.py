"""The truncation policy: the most recent tokens are judged, in full windows; nothing silently."""

from services.safety.classifiers.base import recent_windows


def test_short_text_is_one_window_not_truncated() -> None:
    w = recent_windows(list(range(10)), window=254, max_windows=4)
    assert w.windows == [list(range(10))] and w.judged_tokens == 10 and not w.truncated


def test_long_text_is_covered_by_windows_ending_at_the_most_recent_token() -> None:
    w = recent_windows(list(range(25)), window=10, max_windows=4)
    assert w.windows[-1] == list(range(15, 25))
    assert w.windows[0] == list(range(10))  # the short remnant is widened into a full window
    assert sorted({t for win in w.windows for t in win}) == list(range(25))
    assert not w.truncated


def test_text_beyond_the_budget_is_dropped_from_the_oldest_end_and_reported() -> None:
    w = recent_windows(list(range(100)), window=10, max_windows=3)
    assert w.truncated and w.judged_tokens == 30
    assert w.windows[-1][-1] == 99 and w.windows[0][0] == 70
