"""KV cache blocks as the scheduler sees them: ids, reference counts and the prefix cache (no tensors).

Block 0 is never handed out: padded rows of a batch write their keys/values there, so padding
needs no branch inside the (graph-captured) step.

A full block can be *cached*: registered under the hash of its tokens and of everything before it
(prefix_hash.py), so a later sequence with the same prefix takes the block instead of recomputing
it. Blocks are reference-counted. A cached block nobody references stays in the cache but counts as
free: it is evicted (least recently released first) only when an allocation finds no never-cached
block left, so caching never lowers how many sequences fit.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence

PAD_SLOT = 0  # first slot of the reserved block 0


class OutOfBlocks(Exception):
    """Not enough free KV blocks for an allocation (the scheduler preempts or refuses)."""


class BlockAllocator:
    """KV block ids with reference counts and the prefix cache's index. Owned by the scheduler
    thread; not thread-safe on purpose."""

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 2:
            raise ValueError(f"the KV cache needs at least 2 blocks (one is reserved), got {num_blocks}")
        self.num_blocks = num_blocks
        # Free blocks holding nothing anyone can look up.
        self._free: deque[int] = deque(range(1, num_blocks))
        # Cached blocks nobody references, least recently released first: the eviction order.
        self._evictable: OrderedDict[int, None] = OrderedDict()
        self._refs: dict[int, int] = {}
        self._by_hash: dict[bytes, int] = {}
        self._hash_of: dict[int, bytes] = {}
        self.evictions = 0

    @property
    def usable_blocks(self) -> int:
        return self.num_blocks - 1

    @property
    def num_free(self) -> int:
        """Blocks an allocation may take: never-cached ones plus unreferenced cached ones."""
        return len(self._free) + len(self._evictable)

    @property
    def num_cached(self) -> int:
        """Blocks registered in the prefix cache (referenced or not)."""
        return len(self._hash_of)

    def allocate(self, n: int) -> list[int]:
        if n > self.num_free:
            raise OutOfBlocks(f"asked for {n} KV blocks, {self.num_free} free")
        blocks = [self._take() for _ in range(n)]
        for block in blocks:
            self._refs[block] = 1
        return blocks

    def _take(self) -> int:
        if self._free:
            return self._free.popleft()
        block, _ = self._evictable.popitem(last=False)
        del self._by_hash[self._hash_of.pop(block)]
        self.evictions += 1
        return block

    def free(self, blocks: Sequence[int]) -> None:
        """Drop one reference to each block. Callers pass a sequence's table tail first, so the
        end of a shared prefix is evicted before its start (which more prompts share)."""
        for block in blocks:
            refs = self._refs[block] - 1
            if refs > 0:
                self._refs[block] = refs
                continue
            del self._refs[block]
            if block in self._hash_of:
                self._evictable[block] = None
            else:
                self._free.append(block)

    # -- the prefix cache ------------------------------------------------------------------

    def lookup(self, hashes: Sequence[bytes]) -> list[int]:
        """The cached blocks of the longest prefix of `hashes` (a chain, first block first)."""
        blocks = []
        for block_hash in hashes:
            block = self._by_hash.get(block_hash)
            if block is None:
                break
            blocks.append(block)
        return blocks

    def referenced(self, block: int) -> bool:
        return block in self._refs

    def acquire(self, blocks: Sequence[int]) -> None:
        """Take a reference to cached blocks found by `lookup` (an unreferenced one stops being
        evictable)."""
        for block in blocks:
            self._evictable.pop(block, None)
            self._refs[block] = self._refs.get(block, 0) + 1

    def register(self, block: int, block_hash: bytes) -> None:
        """Cache a referenced, full block under `block_hash`. When another block already holds
        that prefix (two identical prompts computed at once), the first one stays the cached one."""
        if block_hash in self._by_hash or block in self._hash_of:
            return
        self._by_hash[block_hash] = block
        self._hash_of[block] = block_hash


def blocks_for(tokens: int, block_size: int) -> int:
    return (tokens + block_size - 1) // block_size
