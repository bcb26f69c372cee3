"""The OpenAI request bodies the HTTP edge accepts, validated into the gateway's own types.

pydantic checks the shapes and ranges (a failure names the parameter, as OpenAI's `param`); what
the gRPC path checks (dialog roles, special tags, sampling rules) is applied by the same functions
afterwards, so the two transports refuse the same requests. Parameters the model cannot honour
(n > 1, tools, top alternatives of logprobs, suffix) are refused with a 400 that says so rather
than ignored; fields OpenAI clients send with neutral values (penalties of 0, n=1, user) pass.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.common.dialog import (
    Message,
    Role,
    check_prompt,
    check_user_messages_not_empty,
    validate_chat_dialog,
)
from services.common.errors import FieldViolation, InvalidRequest
from services.common.sampling import MAX_STOP_BYTES, MAX_STOP_STRINGS
from services.gateway.sampling import SamplingParams


class _Body(BaseModel):
    # Unknown fields are ignored, as OpenAI-compatible servers do: clients add their own.
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Body):
    include_usage: bool = False


class _Sampled(_Body):
    """What both endpoints share: the model, streaming and the sampling parameters."""

    model: str = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    top_p: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)
    max_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = Field(default=None, ge=0, lt=2**64)
    stop: str | list[str] | None = None
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # Extension (as other OpenAI-compatible servers name it): generate up to max_tokens past EOS.
    ignore_eos: bool = False

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only n=1 is served: send one request per choice")
        return value

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, value: float) -> float:
        if value != 0:
            raise ValueError("penalties are not supported by this model service: leave them at 0")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _no_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value:
            raise ValueError("logit_bias is not supported by this model service")
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings")
        if any(not 0 < len(s.encode()) <= MAX_STOP_BYTES for s in stops):
            raise ValueError(f"each stop string must be 1 to {MAX_STOP_BYTES} bytes of UTF-8")
        return value

    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def sampling(self, max_tokens: int | None, logprobs: bool) -> SamplingParams:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        sampling = SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            max_gen_len=max_tokens,
            seed=self.seed,
            logprobs=logprobs,
            stop=stop,
            ignore_eos=self.ignore_eos,
        )
        # The gRPC path's rules, so both transports refuse the same values.
        sampling.validate("sampling")
        return sampling


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    # "developer" is the newer name OpenAI clients use for the system message.
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatCompletionRequest(_Sampled):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None

    @field_validator("top_logprobs")
    @classmethod
    def _no_alternatives(cls, value: int | None) -> int | None:
        if value:
            raise ValueError(
                "top alternatives are not available: logprobs=true returns each sampled token's log probability"
            )
        return value

    @field_validator("tools", "functions")
    @classmethod
    def _no_tools(cls, value: list[Any] | None) -> list[Any] | None:
        if value:
            raise ValueError("tool and function calling are not supported by this model")
        return value

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type", "text") != "text":
            raise ValueError("only the text response format is supported")
        return value

    def dialog(self) -> tuple[Message, ...]:
        """The messages as the model's dialog, checked by the rules ChatStart obeys."""
        dialog = tuple(
            Message(Role.SYSTEM if m.role == "developer" else Role(m.role), m.text()) for m in self.messages
        )
        validate_chat_dialog(dialog, "messages")
        # The same rule for empty input as ChatStart: an empty user message is a 400 naming it.
        check_user_messages_not_empty(dialog, "messages")
        return dialog

    def chat_sampling(self) -> SamplingParams:
        return self.sampling(self.max_completion_tokens or self.max_tokens, self.logprobs)


class CompletionRequest(_Sampled):
    prompt: str | list[str]
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=5)
    suffix: str | None = None
    best_of: int | None = None

    @field_validator("logprobs")
    @classmethod
    def _sampled_only(cls, value: int | None) -> int | None:
        if value:
            raise ValueError(
                "top alternatives are not available: logprobs=0 returns each sampled token's log probability"
            )
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value:
            raise ValueError("suffix (insertion) is not supported by this model")
        return value

    @field_validator("best_of")
    @classmethod
    def _one_of(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise ValueError("only best_of=1 is served")
        return value

    def text_prompt(self) -> str:
        """The prompt to continue, checked by the rules Complete obeys."""
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise InvalidRequest(
                    "prompt: send one prompt per request (a list of one string at most)",
                    [FieldViolation("prompt", "more than one prompt")],
                )
            prompt = self.prompt[0]
        else:
            prompt = self.prompt
        check_prompt(prompt)
        return prompt

    def completion_sampling(self) -> SamplingParams:
        return self.sampling(self.max_tokens, self.logprobs is not None)
