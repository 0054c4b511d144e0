"""The paged KV cache's bookkeeping: fixed-size blocks, reference counts and a prefix cache keyed by content.

A sequence owns a block table (block ids in order). A block that is full of tokens gets a content key (its
tokens and the key of the block before it), so the same prefix, whichever request brings it, maps to the same
blocks: the n samples of a GRPO group share their prompt's blocks, and the next turn of a conversation finds
the blocks of the turns before it. Only full blocks are shared, and a full block is never written again, so
sharing needs no copy on write: the first block where two sequences diverge is private to each (the < block
size tokens of a shared partial block are recomputed rather than copied).

Blocks nobody references keep their content and key until memory is needed (least recently released first):
a conversation paused for a tool call finds its cache on return unless it was evicted meanwhile, and then it
is recomputed. Block 0 is reserved as scratch for padded rows and is never handed out.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from dataclasses import dataclass, field

NULL_BLOCK = 0


class OutOfBlocks(Exception):
    """Raised when an allocation cannot be met even after evicting every cached block."""


# A full block's content address: a 16-byte BLAKE2 digest of its tokens and of the digest of the block before it
# (so equal keys mean equal prefixes, not just equal blocks).
BlockKey = bytes


@dataclass
class BlockPool:
    """Allocator over `num_blocks` blocks of `block_size` tokens, with the prefix cache."""

    num_blocks: int
    block_size: int
    refs: list[int] = field(init=False)
    keys: list[BlockKey | None] = field(init=False)
    _free: list[int] = field(init=False)
    _cached: dict[BlockKey, int] = field(init=False, default_factory=dict)
    _evictable: OrderedDict[int, None] = field(init=False, default_factory=OrderedDict)

    def __post_init__(self) -> None:
        if self.num_blocks < 2:
            raise ValueError(f"the KV cache needs at least 2 blocks (one is scratch), got {self.num_blocks}")
        if self.block_size < 1:
            raise ValueError(f"block_size must be positive, got {self.block_size}")
        self.refs = [0] * self.num_blocks
        self.keys = [None] * self.num_blocks
        self._free = list(range(self.num_blocks - 1, NULL_BLOCK, -1))  # pop() hands out low ids first

    @property
    def available(self) -> int:
        """Blocks an allocation can get now: free ones plus cached ones nobody references."""
        return len(self._free) + len(self._evictable)

    @property
    def cached_blocks(self) -> int:
        return len(self._cached)

    def allocate(self, count: int) -> list[int]:
        if count > self.available:
            raise OutOfBlocks(f"need {count} blocks, {self.available} available")
        out = []
        for _ in range(count):
            if self._free:
                block = self._free.pop()
            else:
                block, _ = self._evictable.popitem(last=False)
                self._forget(block)
            self.refs[block] = 1
            out.append(block)
        return out

    def release(self, blocks: list[int]) -> None:
        """Drop one reference to each block; unreferenced blocks stay cached (if keyed) until evicted."""
        for block in reversed(blocks):  # a sequence's tail is evicted before its head, which others may share
            self.refs[block] -= 1
            if self.refs[block] < 0:
                raise RuntimeError(f"block {block} released more often than it was taken")
            if self.refs[block] == 0:
                if self.keys[block] is not None:
                    self._evictable[block] = None
                else:
                    self._free.append(block)

    def match(self, keys: list[BlockKey]) -> list[int]:
        """Take a reference to the cached blocks of the longest prefix of `keys` that is cached."""
        found = []
        for key in keys:
            block = self._cached.get(key)
            if block is None:
                break
            if self.refs[block] == 0:
                del self._evictable[block]
            self.refs[block] += 1
            found.append(block)
        return found

    def register(self, block: int, key: BlockKey) -> None:
        """Record that `block` (held by the caller) now holds the full block `key`; a duplicate stays private."""
        if self.keys[block] is not None or key in self._cached:
            return
        self.keys[block] = key
        self._cached[key] = block

    def clear_cache(self) -> None:
        """Forget every cached prefix (after a weight update the cached keys and values are stale)."""
        for block in list(self._evictable):
            self._forget(block)
            self._free.append(block)
        self._evictable.clear()
        for block, key in enumerate(self.keys):
            if key is not None:
                self._forget(block)

    def _forget(self, block: int) -> None:
        key = self.keys[block]
        if key is not None:
            self.keys[block] = None
            if self._cached.get(key) == block:
                del self._cached[key]


def block_keys(tokens: list[int], block_size: int, *, start: int = 0, parent: BlockKey | None = None) -> list[BlockKey]:
    """Keys of the full blocks of `tokens`, from full block index `start` on (`parent`: the key before it)."""
    keys = []
    for b in range(start, len(tokens) // block_size):
        digest = hashlib.blake2b(parent or b"", digest_size=16)
        digest.update(array("q", tokens[b * block_size : (b + 1) * block_size]).tobytes())
        parent = digest.digest()
        keys.append(parent)
    return keys
