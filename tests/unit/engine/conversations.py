"""Multi-turn chats driven through a scheduler and runner with steps overlapped like the engine's:
each turn's prompt is the previous prompt + its reply + a new message, as the chat format makes it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from services.common.sampling import SamplingParams
from services.inference.engine.request import GenerationRequest
from services.inference.engine.runner import PendingStep
from services.inference.engine.scheduler import ScheduledStep, Scheduler, Sequence
from services.inference.engine.step_plan import StepPlan
from services.inference.model.transformer import Transformer


@dataclass
class Chat:
    """One conversation: its new messages (token ids), and each finished turn's sequence."""

    messages: list[list[int]]
    max_gen_len: int
    # Engine step at which the first turn arrives.
    start_step: int = 0
    turns: list[Sequence] = field(default_factory=list)

    def next_prompt(self) -> list[int] | None:
        if len(self.turns) == len(self.messages):
            return None
        history = list(self.turns[-1].tokens) if self.turns else []
        return history + self.messages[len(self.turns)]


def run_chats(
    scheduler: Scheduler,
    launch: Callable[[StepPlan], PendingStep] | None,
    chats: list[Chat],
    max_steps: int = 5000,
) -> None:
    """Every chat's turns to the end, each turn submitted once the previous reply is complete.

    `launch` (a runner's, or one that broadcasts the plan first) runs each step; None plays every
    step with token 5 (scheduling only). Step N+1 is planned and launched
    before step N's tokens are applied, as the engine does.
    """
    live: dict[Sequence, Chat] = {}

    def submit(chat: Chat) -> None:
        prompt = chat.next_prompt()
        if prompt is None:
            return
        params = SamplingParams(temperature=0, max_gen_len=chat.max_gen_len)
        request = GenerationRequest(f"{id(chat)}-{len(chat.turns)}", tuple(prompt), params, seed=0)
        live[scheduler.add(request)] = chat

    in_flight: tuple[ScheduledStep, PendingStep | None] | None = None
    for index in range(max_steps):
        for chat in chats:
            if chat.start_step == index:
                submit(chat)
        step = scheduler.schedule()
        launched = None
        if step is not None:
            launched = (step, None if launch is None else launch(step.plan))
        if in_flight is not None:
            done, pending = in_flight
            rows = len(done.plan.rows)
            if pending is None:
                tokens, logprobs, echo = [5] * rows, [0.0] * rows, {}
            else:
                result = pending.result()
                tokens, logprobs, echo = result.tokens, result.logprobs, result.echo_logprobs
            for update in scheduler.apply(done, tokens, logprobs, echo):
                if update.token is not None and scheduler.finish_reason(update.sequence):
                    scheduler.release(update.sequence)
                    chat = live.pop(update.sequence)
                    chat.turns.append(update.sequence)
                    submit(chat)
        in_flight = launched
        if in_flight is None and not scheduler.has_work() and all(c.start_step <= index for c in chats):
            break
    assert not scheduler.has_work() and not live


def greedy_reference(model: Transformer, prompt: list[int], n: int) -> list[int]:
    """`prompt` and its `n` greedy tokens, each recomputed over the whole sequence."""
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            tokens.append(int(model(torch.tensor([tokens]))[0, -1].argmax()))
    return tokens
