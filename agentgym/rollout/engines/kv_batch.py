"""A running decode batch: left-padded sequences sharing one KV cache, that requests can join and leave.

Rows are left-padded so every sequence's newest token sits in the last column; the attention mask marks the
padding, and explicit position ids keep each sequence's positions independent of its padding. Joining pads the
shorter side on the left; leaving selects rows and drops columns that became padding in every row.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache


def cache_kwarg(model: torch.nn.Module) -> str:
    """transformers 5 calls the cache argument `cache`; 4.x calls it `past_key_values`."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def new_cache(model: torch.nn.Module) -> DynamicCache:
    try:
        return DynamicCache(config=model.config)
    except TypeError:  # transformers 4.x without the config argument
        return DynamicCache()


def _kv_pairs(cache: Any) -> list[tuple[Any, str, str]]:
    """(holder, key attribute, value attribute) per layer, for the 5.x layered and the 4.x list layouts."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        for layer in layers:
            if getattr(layer, "is_sliding", False):
                raise ValueError("sliding-window attention layers are not supported by the batched KV cache")
        return [(layer, "keys", "values") for layer in layers]
    return [(_ListSlot(cache.key_cache, cache.value_cache, i), "k", "v") for i in range(len(cache.key_cache))]


class _ListSlot:
    def __init__(self, keys: list, values: list, index: int):
        self._keys, self._values, self._index = keys, values, index

    @property
    def k(self) -> torch.Tensor:
        return self._keys[self._index]

    @k.setter
    def k(self, value: torch.Tensor) -> None:
        self._keys[self._index] = value

    @property
    def v(self) -> torch.Tensor:
        return self._values[self._index]

    @v.setter
    def v(self, value: torch.Tensor) -> None:
        self._values[self._index] = value


def _map_kv(cache: Any, fn) -> None:
    for holder, k, v in _kv_pairs(cache):
        setattr(holder, k, fn(getattr(holder, k)))
        setattr(holder, v, fn(getattr(holder, v)))


@dataclass
class KVBatch:
    """State of the sequences being decoded together. `rows[i]` is the caller's handle for row i."""

    rows: list[Any]
    cache: Any
    mask: torch.Tensor  # [B, L] 1 = real token, 0 = left padding; covers everything in the cache
    positions: torch.Tensor  # [B] position id of each row's next input token (= its real length)
    last_tokens: torch.Tensor  # [B] each row's newest token, the next decode input

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])

    def left_pad(self, width: int) -> None:
        extra = width - self.width
        if extra <= 0:
            return
        self.mask = F.pad(self.mask, (extra, 0))
        _map_kv(self.cache, lambda t: F.pad(t, (0, 0, extra, 0)))

    def merge(self, other: KVBatch) -> None:
        """Append `other`'s rows (its cache is consumed)."""
        width = max(self.width, other.width)
        self.left_pad(width)
        other.left_pad(width)
        for (mine, k, v), (theirs, _, _) in zip(_kv_pairs(self.cache), _kv_pairs(other.cache), strict=True):
            setattr(mine, k, torch.cat([getattr(mine, k), getattr(theirs, k)], dim=0))
            setattr(mine, v, torch.cat([getattr(mine, v), getattr(theirs, v)], dim=0))
        self.rows.extend(other.rows)
        self.mask = torch.cat([self.mask, other.mask], dim=0)
        self.positions = torch.cat([self.positions, other.positions], dim=0)
        self.last_tokens = torch.cat([self.last_tokens, other.last_tokens], dim=0)

    def keep(self, indices: list[int]) -> None:
        """Keep only these rows, then drop leading columns that are padding in every remaining row."""
        if len(indices) == len(self.rows):
            return
        index = torch.tensor(indices, dtype=torch.long, device=self.mask.device)
        self.rows = [self.rows[i] for i in indices]
        self.mask = self.mask.index_select(0, index)
        self.positions = self.positions.index_select(0, index)
        self.last_tokens = self.last_tokens.index_select(0, index)
        _map_kv(self.cache, lambda t: t.index_select(0, index))
        if not indices:
            return
        used = self.mask.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else self.width
        if start > 0:
            self.mask = self.mask[:, start:]
            _map_kv(self.cache, lambda t: t[:, :, start:, :])
