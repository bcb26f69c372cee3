"""Sampling parameters as the gateway sees them: each field set or not (a turn's set fields override
the chat's), validated before any backend is called with the rules the inference service applies
(services/common/sampling.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from llamagate.v1 import types_pb2
from services.common.sampling import validate_sampling


@dataclass(frozen=True)
class SamplingParams:
    temperature: float | None = None
    top_p: float | None = None
    max_gen_len: int | None = None
    seed: int | None = None
    logprobs: bool = False
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False

    @classmethod
    def from_pb(cls, pb: types_pb2.SamplingParams) -> SamplingParams:
        return cls(
            temperature=pb.temperature if pb.HasField("temperature") else None,
            top_p=pb.top_p if pb.HasField("top_p") else None,
            max_gen_len=pb.max_gen_len if pb.HasField("max_gen_len") else None,
            seed=pb.seed if pb.HasField("seed") else None,
            logprobs=pb.logprobs,
            stop=tuple(pb.stop),
            ignore_eos=pb.ignore_eos,
        )

    def to_pb(self) -> types_pb2.SamplingParams:
        pb = types_pb2.SamplingParams(
            logprobs=self.logprobs, stop=list(self.stop), ignore_eos=self.ignore_eos
        )
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
        """A ChatTurn's sampling: its set fields win; logprobs, stop and ignore_eos (no presence) come from it."""
        return SamplingParams(
            temperature=override.temperature if override.temperature is not None else self.temperature,
            top_p=override.top_p if override.top_p is not None else self.top_p,
            max_gen_len=override.max_gen_len if override.max_gen_len is not None else self.max_gen_len,
            seed=override.seed if override.seed is not None else self.seed,
            logprobs=override.logprobs,
            stop=override.stop,
            ignore_eos=override.ignore_eos,
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
