"""The pipeline's reply events as OpenAI objects: chat.completion(.chunk) and text_completion.

Only `Text` events carry reply text, and the pipeline emits one only after its check and its audit
record: every chunk built here is text that may leave. A safety stop becomes
`finish_reason: "content_filter"` with the verdict in the choice's `safety` extension field
(direction, violated categories, classifier), and for chat the refusal in `message.refusal` /
`delta.refusal`, the field OpenAI uses for a refused reply.

Log probabilities: the model service returns the sampled token's id and log probability, not its
text, so a chat logprob entry names the token as "token_id:<id>" (the convention of other
OpenAI-compatible servers for untokenised output) and `top_logprobs` is empty.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

from services.common.verdicts import Verdict
from services.gateway.backends import FinishReason
from services.gateway.pipeline import Accepted, Done, ReplyEvent, SafetyNotice, Text

_FINISH = {
    FinishReason.STOP: "stop",
    FinishReason.LENGTH: "length",
    FinishReason.SAFETY: "content_filter",
    FinishReason.CANCELLED: "cancelled",
}


class Kind(enum.Enum):
    CHAT = "chat"
    COMPLETION = "completion"


def safety_field(verdict: Verdict, refusal: str) -> dict[str, Any]:
    return {
        "direction": str(verdict.direction),
        "categories": [
            {"code": c.code, "name": c.name, "score": c.score} for c in verdict.categories if c.violated
        ],
        "classifier_id": verdict.classifier_id,
        "refusal": refusal,
    }


def usage(done: Done) -> dict[str, Any]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
        # The prompt tokens the inference service's prefix cache served (0 when none or off).
        "prompt_tokens_details": {"cached_tokens": done.cached_prompt_tokens},
    }


@dataclass
class OpenAIReply:
    """Turns one reply's events into OpenAI chunks as they come, and into the whole object at the end."""

    kind: Kind
    model: str
    logprobs: bool
    stream: bool
    request_id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)
    stop: SafetyNotice | None = None
    done: Done | None = None

    @property
    def id(self) -> str:
        prefix = "chatcmpl-" if self.kind is Kind.CHAT else "cmpl-"
        return prefix + self.request_id

    def chunks(self, event: ReplyEvent) -> list[dict[str, Any]]:
        """Record `event`; return the stream chunks it makes (none for a safe verdict)."""
        match event:
            case Accepted(request_id):
                self.request_id = request_id
                # The role comes first, as OpenAI streams do; it says nothing of the reply's text.
                return [self._chunk({"role": "assistant", "content": ""})] if self.kind is Kind.CHAT else []
            case Text():
                self.text += event.text
                self.token_ids += event.token_ids
                self.token_logprobs += event.logprobs
                return [self._chunk({"content": event.text}, text=event.text, event=event)]
            case SafetyNotice(verdict) if not verdict.safe:
                self.stop = event
                return []
            case SafetyNotice():
                return []
            case Done():
                self.done = event
                delta = {"refusal": self.stop.refusal} if self.stop is not None else {}
                return [self._chunk(delta, finish=event)]
        return []

    def usage_chunk(self) -> dict[str, Any]:
        assert self.done is not None
        return {**self._envelope(), "choices": [], "usage": usage(self.done)}

    def whole(self) -> dict[str, Any]:
        """The non-streaming response, once Done has been seen."""
        assert self.done is not None
        choice: dict[str, Any] = {"index": 0, "finish_reason": _FINISH[self.done.finish_reason]}
        if self.kind is Kind.CHAT:
            choice["message"] = {
                "role": "assistant",
                "content": self.text,
                "refusal": self.stop.refusal if self.stop is not None else None,
            }
            choice["logprobs"] = (
                {"content": self._chat_logprobs(self.token_ids, self.token_logprobs)}
                if self.logprobs
                else None
            )
        else:
            choice["text"] = self.text
            choice["logprobs"] = (
                self._completion_logprobs(self.token_ids, self.token_logprobs) if self.logprobs else None
            )
        if self.stop is not None:
            choice["safety"] = safety_field(self.stop.verdict, self.stop.refusal)
        return {**self._envelope(), "choices": [choice], "usage": usage(self.done)}

    def _envelope(self) -> dict[str, Any]:
        if self.kind is Kind.COMPLETION:
            kind = "text_completion"
        else:
            kind = "chat.completion.chunk" if self.stream else "chat.completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def _chunk(
        self, delta: dict[str, Any], text: str = "", event: Text | None = None, finish: Done | None = None
    ) -> dict[str, Any]:
        choice: dict[str, Any] = {
            "index": 0,
            "finish_reason": _FINISH[finish.finish_reason] if finish else None,
        }
        ids, lps = (event.token_ids, event.logprobs) if event is not None else ([], [])
        if self.kind is Kind.CHAT:
            choice["delta"] = delta
            choice["logprobs"] = (
                {"content": self._chat_logprobs(ids, lps)} if self.logprobs and event else None
            )
        else:
            choice["text"] = text
            choice["logprobs"] = self._completion_logprobs(ids, lps) if self.logprobs and event else None
        if finish is not None and self.stop is not None:
            choice["safety"] = safety_field(self.stop.verdict, self.stop.refusal)
        return {**self._envelope(), "choices": [choice]}

    @staticmethod
    def _chat_logprobs(ids: list[int], logprobs: list[float]) -> list[dict[str, Any]]:
        return [
            {"token": f"token_id:{i}", "logprob": lp, "bytes": None, "top_logprobs": []}
            for i, lp in zip(ids, logprobs, strict=False)
        ]

    @staticmethod
    def _completion_logprobs(ids: list[int], logprobs: list[float]) -> dict[str, Any]:
        return {
            "tokens": [f"token_id:{i}" for i in ids],
            "token_logprobs": logprobs[: len(ids)],
            "top_logprobs": None,
            "text_offset": None,
        }
