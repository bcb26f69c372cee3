"""The building blocks of the data set: template pools, split into separately written sides."""

from __future__ import annotations

import itertools
from dataclasses import dataclass


@dataclass(frozen=True)
class Pool:
    """Templates with one `{x}` slot, and the fillers that go in it."""

    templates: tuple[str, ...]
    fillers: tuple[str, ...]

    def render(self) -> list[str]:
        return [t.format(x=f) for t, f in itertools.product(self.templates, self.fillers)]


@dataclass(frozen=True)
class Side:
    train: Pool
    heldout: Pool
