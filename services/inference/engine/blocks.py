"""KV cache blocks as the scheduler sees them: ids handed out from a free list (no tensors here).

Block 0 is never handed out: padded rows of a batch write their keys/values there, so padding
needs no branch inside the (graph-captured) step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

PAD_SLOT = 0  # first slot of the reserved block 0


class OutOfBlocks(Exception):
    """Not enough free KV blocks for an allocation (the scheduler preempts or refuses)."""


class BlockAllocator:
    """Free list of KV block ids. Owned by the scheduler thread; not thread-safe on purpose."""

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 2:
            raise ValueError(f"the KV cache needs at least 2 blocks (one is reserved), got {num_blocks}")
        self.num_blocks = num_blocks
        self._free: deque[int] = deque(range(1, num_blocks))

    @property
    def usable_blocks(self) -> int:
        return self.num_blocks - 1

    @property
    def num_free(self) -> int:
        return len(self._free)

    def allocate(self, n: int) -> list[int]:
        if n > len(self._free):
            raise OutOfBlocks(f"asked for {n} KV blocks, {len(self._free)} free")
        return [self._free.popleft() for _ in range(n)]

    def free(self, blocks: Sequence[int]) -> None:
        self._free.extend(blocks)


def blocks_for(tokens: int, block_size: int) -> int:
    return (tokens + block_size - 1) // block_size
