"""Sampling parameters as the gateway sees them: validated before any backend is called.

The rules are the inference service's (services/inference/sampling.py, SamplingParams.validate),
restated here because importing that module pulls in torch, which the gateway does not need.
`tests/unit/gateway/test_sampling.py` checks both agree when the inference module is importable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llamagate.v1 import types_pb2
from services.common.errors import FieldViolation, InvalidRequest

MAX_STOP_STRINGS = 8
MAX_STOP_BYTES = 256


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
        def bad(name: str, description: str) -> InvalidRequest:
            return InvalidRequest(
                f"{field}.{name} {description}", [FieldViolation(f"{field}.{name}", description)]
            )

        if self.temperature is not None and (not math.isfinite(self.temperature) or self.temperature < 0):
            raise bad("temperature", f"is {self.temperature}: must be >= 0 (0 = greedy)")
        if self.top_p is not None and (not math.isfinite(self.top_p) or not 0 < self.top_p <= 1):
            raise bad("top_p", f"is {self.top_p}: must be in (0, 1]")
        if self.max_gen_len is not None and self.max_gen_len <= 0:
            raise bad("max_gen_len", f"is {self.max_gen_len}: must be >= 1 (or unset for as many as fit)")
        if len(self.stop) > MAX_STOP_STRINGS:
            raise bad("stop", f"has {len(self.stop)} strings: at most {MAX_STOP_STRINGS} are allowed")
        for i, s in enumerate(self.stop):
            if not s:
                raise bad(f"stop[{i}]", "is empty: stop strings must not be empty")
            if len(s.encode()) > MAX_STOP_BYTES:
                raise bad(
                    f"stop[{i}]", f"is {len(s.encode())} bytes: at most {MAX_STOP_BYTES} bytes are allowed"
                )
