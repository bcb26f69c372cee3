"""What the engine is asked (a tokenized request) and what it answers (events), in domain terms.

The servicer turns protobuf into a `GenerationRequest` and events back into protobuf; the engine
and scheduler never see gRPC.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from services.common.errors import LlamagateError
from services.common.sampling import SamplingParams


class FinishReason(enum.Enum):
    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    prompt_ids: tuple[int, ...]
    params: SamplingParams
    # The per-request seed as `sample` takes it (int64); fixed at submission so a preempted and
    # recomputed sequence draws the same tokens again.
    seed: int
    # Return the prompt tokens first (with their logprobs when params.logprobs).
    echo: bool = False


@dataclass(frozen=True)
class Started:
    request_id: str
    prompt_tokens: int


@dataclass(frozen=True)
class Delta:
    token_ids: tuple[int, ...]
    text: str
    logprobs: tuple[float, ...] = ()
    echo: bool = False


@dataclass(frozen=True)
class Done:
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    # Prompt tokens whose keys/values came from the prefix cache instead of being computed.
    cached_prompt_tokens: int = 0


@dataclass(frozen=True)
class Failed:
    error: LlamagateError


Event = Started | Delta | Done | Failed
# Called on the engine thread; the servicer's sink hands the event to its event loop.
EventSink = Callable[[Event], None]
