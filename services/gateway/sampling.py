"""Sampling parameters as the gateway sees them: each field set or not (a turn's set fields override
the chat's, field by field), validated before any backend is called with the rules the inference service applies
(services/common/sampling.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from llamagate.v1 import types_pb2
from services.common.sampling import validate_sampling

_T = TypeVar("_T")


@dataclass(frozen=True)
class SamplingParams:
    temperature: float | None = None
    top_p: float | None = None
    max_gen_len: int | None = None
    seed: int | None = None
    logprobs: bool | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool | None = None

    @classmethod
    def from_pb(cls, pb: types_pb2.SamplingParams) -> SamplingParams:
        return cls(
            temperature=pb.temperature if pb.HasField("temperature") else None,
            top_p=pb.top_p if pb.HasField("top_p") else None,
            max_gen_len=pb.max_gen_len if pb.HasField("max_gen_len") else None,
            seed=pb.seed if pb.HasField("seed") else None,
            logprobs=pb.logprobs if pb.HasField("logprobs") else None,
            stop=tuple(pb.stop),
            ignore_eos=pb.ignore_eos if pb.HasField("ignore_eos") else None,
        )

    def to_pb(self) -> types_pb2.SamplingParams:
        pb = types_pb2.SamplingParams(stop=list(self.stop))
        if self.logprobs is not None:
            pb.logprobs = self.logprobs
        if self.ignore_eos is not None:
            pb.ignore_eos = self.ignore_eos
        if self.temperature is not None:
            pb.temperature = self.temperature
        if self.top_p is not None:
            pb.top_p = self.top_p
        if self.max_gen_len is not None:
            pb.max_gen_len = self.max_gen_len
        if self.seed is not None:
            pb.seed = self.seed
        return pb

    def overridden_by(self, override: SamplingParams) -> SamplingParams:
        """A ChatTurn's sampling over the ChatStart's, field by field: each field the turn sets wins,
        every other keeps the start's value. `stop` has no presence on the wire: an empty list reads
        as unset (a turn cannot clear the start's stop strings, only replace them)."""
        return SamplingParams(
            temperature=_first_set(override.temperature, self.temperature),
            top_p=_first_set(override.top_p, self.top_p),
            max_gen_len=_first_set(override.max_gen_len, self.max_gen_len),
            seed=_first_set(override.seed, self.seed),
            logprobs=_first_set(override.logprobs, self.logprobs),
            stop=override.stop or self.stop,
            ignore_eos=_first_set(override.ignore_eos, self.ignore_eos),
        )

    def validate(self, field: str = "sampling") -> None:
        """Raise InvalidRequest naming the field; unset fields pass (the service's defaults apply)."""
        validate_sampling(
            field,
            temperature=self.temperature,
            top_p=self.top_p,
            max_gen_len=self.max_gen_len,
            seed=self.seed,
            stop=self.stop,
        )


def _first_set(value: _T | None, fallback: _T | None) -> _T | None:
    return value if value is not None else fallback
