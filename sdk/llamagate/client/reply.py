"""How one reply adds up from its events, and the view of a reply (its machine, events, results) both
clients share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from llamagate.client.types import (
    Accepted,
    Done,
    FinishReason,
    ReplyEvent,
    SafetyCheck,
    SafetyRefusal,
    SafetyVerdict,
    TextChunk,
    Usage,
)

if TYPE_CHECKING:
    from llamagate.client.reply_machine import ReplyMachine

MachineT = TypeVar("MachineT", bound="ReplyMachine[Any]")
EventsT = TypeVar("EventsT")


@dataclass
class ReplyState:
    """Everything one reply has delivered so far, assembled from its events."""

    request_id: str = ""
    chunks: list[TextChunk] = field(default_factory=list)
    verdicts: list[SafetyVerdict] = field(default_factory=list)
    refusal: SafetyRefusal | None = None
    done: Done | None = None

    def apply(self, event: ReplyEvent) -> None:
        if isinstance(event, Accepted):
            self.request_id = event.request_id
        elif isinstance(event, TextChunk):
            self.chunks.append(event)
        elif isinstance(event, SafetyCheck):
            self.verdicts.append(event.verdict)
            if event.refusal is not None and self.refusal is None:
                self.refusal = event.refusal
        elif isinstance(event, Done):
            self.done = event
            self.request_id = event.request_id or self.request_id

    @property
    def text(self) -> str:
        """The reply's text (a Complete's echoed prompt excluded)."""
        return "".join(c.text for c in self.chunks if not c.echo)

    @property
    def echo_text(self) -> str:
        return "".join(c.text for c in self.chunks if c.echo)

    @property
    def streamed_text(self) -> bool:
        """True once any text reached the caller; from then on the reply must not be retried."""
        return any(c.text for c in self.chunks)

    def finish_locally(self, reason: FinishReason) -> Done:
        """End a reply the server will not end (e.g. a Complete call this client cancelled)."""
        done = Done(finish_reason=reason, usage=Usage(), request_id=self.request_id)
        self.done = done
        return done


class ReplyResult(Generic[MachineT, EventsT]):
    """A reply's machine (reply_machine.py), the events a client's transport gets by driving it, and
    the read-only results.

    Subclasses drive the machine in `_run` (a generator or an async one) and say how to get a
    finished `ReplyState`: wait for it, or refuse until it is.
    """

    def __init__(self, machine: MachineT) -> None:
        self._machine = machine
        self._events = self._run()

    @property
    def done(self) -> bool:
        return self._machine.state.done is not None

    def _run(self) -> EventsT:
        raise NotImplementedError

    def _finished(self) -> ReplyState:
        raise NotImplementedError

    @property
    def text(self) -> str:
        """The whole reply text (empty when the input was refused)."""
        return self._finished().text

    @property
    def finish_reason(self) -> FinishReason:
        done = self._finished().done
        assert done is not None
        return done.finish_reason

    @property
    def refusal(self) -> SafetyRefusal | None:
        """Set when the safety filter refused the input or stopped the output."""
        return self._finished().refusal

    @property
    def verdicts(self) -> tuple[SafetyVerdict, ...]:
        """Every safety verdict the server reported for this reply."""
        return tuple(self._finished().verdicts)

    @property
    def usage(self) -> Usage:
        done = self._finished().done
        assert done is not None
        return done.usage

    @property
    def request_id(self) -> str:
        """The reply's id in the gateway's audit log and traces."""
        return self._finished().request_id

    @property
    def chunks(self) -> tuple[TextChunk, ...]:
        """Every text chunk with its token ids (and logprobs when asked for)."""
        return tuple(self._finished().chunks)
