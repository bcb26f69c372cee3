"""The one packer: a `StepPlan`'s rows -> the tensors a step runs on.

All integer inputs of a step travel as one [rows, columns] int64 matrix (one host-to-device copy):
per row its t tokens, t positions and t cache slots, then its context length, sample index, seed,
sampler step and batch slot, then its block table. Temperature and top-p travel as a [rows, 2] fp32
matrix. Eager steps slice views out of these; captured decode steps copy them into their static
buffers, which use the same layout with t = 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from services.inference.engine.blocks import PAD_SLOT
from services.inference.engine.step_plan import StepPlan, StepRow

_FIXED = 5  # context length, sample index, seed, step, batch slot


@dataclass(frozen=True)
class Layout:
    """Column positions of the packed integer matrix for t tokens per row."""

    t: int

    @property
    def tokens(self) -> slice:
        return slice(0, self.t)

    @property
    def positions(self) -> slice:
        return slice(self.t, 2 * self.t)

    @property
    def slots(self) -> slice:
        return slice(2 * self.t, 3 * self.t)

    @property
    def context_len(self) -> int:
        return 3 * self.t

    @property
    def sample_index(self) -> int:
        return 3 * self.t + 1

    @property
    def seed(self) -> int:
        return 3 * self.t + 2

    @property
    def step(self) -> int:
        return 3 * self.t + 3

    @property
    def batch_slot(self) -> int:
        return 3 * self.t + 4

    @property
    def table(self) -> int:
        """First block table column; the table runs to the last column."""
        return 3 * self.t + _FIXED


def _int_row(row: StepRow, t: int, table_width: int) -> list[int]:
    pad = t - len(row.tokens)
    # Padding repeats the last position (a harmless query) and writes to the reserved block.
    return [
        *row.tokens,
        *[0] * pad,
        *row.positions,
        *[row.positions[-1]] * pad,
        *row.slots,
        *[PAD_SLOT] * pad,
        row.context_len,
        row.sample_index,
        row.seed,
        row.step,
        row.batch_slot,
        *row.block_table,
        *[0] * (table_width - len(row.block_table)),
    ]


def pack(
    plan: StepPlan,
    *,
    pin: bool,
    pad_rows_to: int = 0,
    pad_batch_slot: int = 0,
    pad_tokens_to: int = 0,
    table_width: int = 0,
) -> tuple[Layout, Tensor, Tensor]:
    """(layout, ints [rows, columns] int64, floats [rows, 2] fp32) on the host; `pin` puts them in
    pinned memory, so the copy to a CUDA device can be asynchronous.

    Only the table columns this step uses are packed (a row reads no block past its length), unless
    `table_width` asks for more. `pad_rows_to` appends rows that read token 0 at position 0, write
    the reserved block, sample greedily and store their token in `pad_batch_slot` (the padding of a
    captured batch size). `pad_tokens_to` pads every row to that many tokens (the padding of a
    captured chunk length), the way rows shorter than the longest are padded.
    """
    layout = Layout(max(pad_tokens_to, *(len(row.tokens) for row in plan.rows)))
    table_width = max(table_width, *(len(row.block_table) for row in plan.rows))
    if not plan.decode:
        # A table of one column would be a size-1 dimension, which a compiled prefill specializes
        # on (and compiles again for); an extra column of the reserved block is never read.
        table_width = max(table_width, 2)
    ints = [_int_row(row, layout.t, table_width) for row in plan.rows]
    floats = [[row.temperature, row.top_p] for row in plan.rows]
    pad_row = StepRow(
        tokens=[0] * layout.t,
        positions=[0] * layout.t,
        slots=[PAD_SLOT] * layout.t,
        block_table=[],
        context_len=1,
        sample_index=0,
        temperature=0.0,
        top_p=1.0,
        seed=0,
        step=0,
        batch_slot=pad_batch_slot,
        samples=False,
    )
    missing = max(pad_rows_to - len(plan.rows), 0)
    ints += [_int_row(pad_row, layout.t, table_width)] * missing
    floats += [[0.0, 1.0]] * missing
    ints_host = torch.tensor(ints, dtype=torch.long)
    floats_host = torch.tensor(floats, dtype=torch.float32)
    if pin:
        # Pinned staging from PyTorch's host allocator: it is not reused before the copy has run.
        ints_host, floats_host = ints_host.pin_memory(), floats_host.pin_memory()
    return layout, ints_host, floats_host
