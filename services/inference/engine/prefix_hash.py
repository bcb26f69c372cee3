"""The prefix cache's block identity: a hash chained over block contents.

A block's keys and values depend on its tokens and on every token before it (attention mixes them
in, and its positions follow from the prefix's length), so a block's hash covers its parent's hash
and its own token ids. `salt` covers anything else that changes the keys (the first block chains
from it); this engine serves one model with no adapters, so the scheduler passes none.
BLAKE2b with 16 bytes keeps collisions out of reach (a collision would serve another prompt's keys).
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Sequence

ROOT = b""


def block_hash(parent: bytes, tokens: Sequence[int]) -> bytes:
    digest = hashlib.blake2b(parent, digest_size=16)
    digest.update(array("q", tokens).tobytes())
    return digest.digest()


def extend_hashes(
    hashes: list[bytes],
    tokens: Sequence[int],
    block_size: int,
    salt: bytes = ROOT,
    *,
    blocks: int | None = None,
) -> None:
    """Append to `hashes` (the chain of `tokens`' first full blocks) every further full block's hash,
    up to `blocks` blocks when given (so a caller need not copy a prefix of a long token list)."""
    full = len(tokens) // block_size if blocks is None else min(blocks, len(tokens) // block_size)
    for index in range(len(hashes), full):
        parent = hashes[-1] if hashes else salt
        hashes.append(block_hash(parent, tokens[index * block_size : (index + 1) * block_size]))
