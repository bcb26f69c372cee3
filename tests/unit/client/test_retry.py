"""RetryPolicy: which failures are retried and how long the SDK waits first."""

from __future__ import annotations

import random

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llamagate.client import NO_RETRY, RetryPolicy
from llamagate.client.errors import error_from_status

UNAVAILABLE = error_from_status(grpc.StatusCode.UNAVAILABLE, "gateway restarting", None)
INVALID = error_from_status(grpc.StatusCode.INVALID_ARGUMENT, "bad", None)
LIMITED = error_from_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "full", None)


def test_unavailable_before_any_text_is_retried_until_attempts_run_out() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.should_retry(UNAVAILABLE, 1, streamed_text=False)
    assert policy.should_retry(UNAVAILABLE, 2, streamed_text=False)
    assert not policy.should_retry(UNAVAILABLE, 3, streamed_text=False)


def test_a_reply_that_streamed_text_is_never_retried() -> None:
    assert not RetryPolicy(max_attempts=10).should_retry(UNAVAILABLE, 1, streamed_text=True)


def test_only_retryable_codes_are_retried() -> None:
    policy = RetryPolicy()
    assert not policy.should_retry(INVALID, 1, streamed_text=False)
    assert not policy.should_retry(LIMITED, 1, streamed_text=False)
    opted_in = RetryPolicy(retryable_codes=frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED}))
    assert opted_in.should_retry(LIMITED, 1, streamed_text=False)
    assert not NO_RETRY.should_retry(UNAVAILABLE, 1, streamed_text=False)


@given(attempt=st.integers(1, 30), seed=st.integers(0, 2**32))
def test_backoff_is_jittered_below_an_exponential_ceiling(attempt: int, seed: int) -> None:
    policy = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=3.0, multiplier=2.0)
    wait = policy.backoff_s(attempt, random.Random(seed))
    assert 0.0 <= wait <= min(3.0, 0.1 * 2 ** (attempt - 1))


def test_backoff_grows_on_average() -> None:
    policy = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=100.0)
    rng = random.Random(7)
    means = [sum(policy.backoff_s(n, rng) for _ in range(400)) / 400 for n in (1, 3, 5)]
    assert means[0] < means[1] < means[2]
    assert means[2] == pytest.approx(0.1 * 2**4 / 2, rel=0.15)


def test_server_retry_info_is_a_lower_bound() -> None:
    policy = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=0.2)
    assert policy.backoff_s(1, random.Random(1), retry_after=1.5) == 1.5


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(max_attempts=0),
        dict(initial_backoff_s=-1),
        dict(initial_backoff_s=2, max_backoff_s=1),
        dict(multiplier=0.5),
    ],
)
def test_nonsense_policies_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)
