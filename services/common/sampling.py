"""Sampling parameters of a generation and the rules they obey, shared by the gateway (which checks
them before calling any backend) and the inference service. Torch-free on purpose.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from services.common.errors import FieldViolation, InvalidRequest

MAX_STOP_STRINGS = 8
MAX_STOP_BYTES = 256
# What the inference service samples with when a request leaves them unset (the reference's defaults).
DEFAULT_TEMPERATURE = 0.6
DEFAULT_TOP_P = 0.9


@dataclass(frozen=True)
class SamplingParams:
    """How one request is sampled, every value resolved (as the inference engine runs it)."""

    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    max_gen_len: int | None = None
    seed: int | None = None
    logprobs: bool = False
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False

    def validate(self, field: str = "sampling") -> None:
        """Raise InvalidRequest naming the field and its allowed range."""
        validate_sampling(
            field,
            temperature=self.temperature,
            top_p=self.top_p,
            max_gen_len=self.max_gen_len,
            seed=self.seed,
            stop=self.stop,
        )


def validate_sampling(
    field: str,
    *,
    temperature: float | None,
    top_p: float | None,
    max_gen_len: int | None,
    seed: int | None,
    stop: Sequence[str],
) -> None:
    """The sampling rules, in one place. None means unset (the service's default applies) and passes.

    Raises InvalidRequest naming the first bad field (e.g. "start.sampling.top_p") and its range.
    """
    if temperature is not None and not (math.isfinite(temperature) and temperature >= 0):
        _reject(f"{field}.temperature", f"must be a finite number >= 0 (0 = greedy), got {temperature}")
    if top_p is not None and not (math.isfinite(top_p) and 0 < top_p <= 1):
        _reject(f"{field}.top_p", f"must be in (0, 1], got {top_p}")
    if max_gen_len is not None and max_gen_len <= 0:
        _reject(f"{field}.max_gen_len", f"must be >= 1 when set, got {max_gen_len}")
    if seed is not None and not 0 <= seed < 2**64:
        _reject(f"{field}.seed", f"must be in [0, 2^64), got {seed}")
    if len(stop) > MAX_STOP_STRINGS:
        _reject(f"{field}.stop", f"at most {MAX_STOP_STRINGS} stop strings, got {len(stop)}")
    for i, text in enumerate(stop):
        size = len(text.encode("utf-8"))
        if not 0 < size <= MAX_STOP_BYTES:
            _reject(f"{field}.stop[{i}]", f"must be 1 to {MAX_STOP_BYTES} bytes of UTF-8, got {size}")


def _reject(field: str, description: str) -> None:
    raise InvalidRequest(f"{field} {description}", [FieldViolation(field, description)])


def seed_as_int64(seed: int) -> int:
    """A uint64 seed (as on the wire) reinterpreted as the int64 the sampler takes."""
    return seed - 2**64 if seed >= 2**63 else seed
