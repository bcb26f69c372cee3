"""One engine step as the scheduler plans it: a row per sequence, in plain Python (no torch).

Rank 0 broadcasts the plan so every rank runs the same forward (ranks.py); each rank's runner turns
it into tensors with `step_inputs.pack`, the one place that knows the tensor layout.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepRow:
    """What one sequence feeds the model in a step, and how its next token is drawn."""

    # The new tokens. A decode token of -1 is still in flight: the runner reads it from its device
    # buffer at `batch_slot`, where every step stores each row's sampled token.
    tokens: list[int]
    positions: list[int]
    # Flat KV cache slots (block * block_size + offset) the new tokens' keys/values go to.
    slots: list[int]
    block_table: list[int]
    # Tokens cached once this step has run.
    context_len: int
    # Which of the new tokens' logits the row samples from.
    sample_index: int
    temperature: float
    top_p: float
    seed: int
    # Tokens generated before the one sampled here: the sampler's counter.
    step: int
    batch_slot: int
    # Whether the sampled token is a real next token (false mid-prefill).
    samples: bool
    # Echo rows: the prompt tokens the new tokens' positions predict (to score the prompt).
    echo_targets: list[int] | None = None


@dataclass(frozen=True)
class StepPlan:
    """Rows of one step: all decode (one token each) or all prefill chunks.

    `fresh` means every row starts at position 0, so plain causal attention over the new tokens
    is exact.
    """

    decode: bool
    fresh: bool
    rows: list[StepRow]

    @property
    def greedy(self) -> bool:
        return all(row.temperature == 0 for row in self.rows)
