"""``KVCache``: the keys and values a decoder has seen, per layer, for incremental decoding and for
continuations that share a context (in-context scoring)."""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of the positions seen so far, per layer, for incremental decoding.

    ``key_mask`` remembers which cached positions are real tokens (False = padding), so a
    padded prompt keeps masking its padding while new tokens are appended. With a ``capacity``
    (the most positions it will hold) each layer's keys and values live in buffers allocated once
    and filled in place; without one they grow by concatenation (a copy of the cache per step).
    """

    def __init__(self, n_layer: int, capacity: int | None = None) -> None:
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer
        self.key_mask: torch.Tensor | None = None
        self.capacity = capacity
        self.filled = [0] * n_layer  # positions held per layer (with a capacity)

    @property
    def length(self) -> int:
        if self.keys[0] is None:
            return 0
        return self.filled[0] if self.capacity is not None else self.keys[0].size(2)

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.capacity is None:
            if self.keys[layer] is not None:
                k = torch.cat([self.keys[layer], k], dim=2)
                v = torch.cat([self.values[layer], v], dim=2)
            self.keys[layer], self.values[layer] = k, v
            return k, v
        if self.keys[layer] is None:
            shape = (k.size(0), k.size(1), self.capacity, k.size(3))
            self.keys[layer], self.values[layer] = k.new_empty(shape), v.new_empty(shape)
        start, end = self.filled[layer], self.filled[layer] + k.size(2)
        if end > self.capacity:
            raise ValueError(f"KVCache: {end} positions exceed its capacity of {self.capacity}")
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        self.filled[layer] = end
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def select(self, rows: torch.Tensor) -> None:
        """Keep only the batch rows ``rows`` (in that order), in place: finished rows leave a decode."""
        kept = self.take(rows)
        self.keys, self.values, self.key_mask = kept.keys, kept.values, kept.key_mask

    def take(self, rows: torch.Tensor, room: int | None = None) -> KVCache:
        """A new cache of the batch rows ``rows`` in that order, a row as often as it is named (one
        context's cache for each of its continuations). ``room``: its buffers hold this many
        positions more, filled in place (no copy of the cache per call), else it keeps this one's
        capacity."""
        if room is None:
            out = KVCache(len(self.keys), self.capacity)
            out.keys = [k.index_select(0, rows) for k in self.keys]
            out.values = [v.index_select(0, rows) for v in self.values]
            out.filled = list(self.filled)
        else:
            length = self.length
            out = KVCache(len(self.keys), length + room)
            for held, taken in ((self.keys, out.keys), (self.values, out.values)):
                for layer, t in enumerate(held):
                    taken[layer] = t.new_empty((rows.numel(), t.size(1), out.capacity, t.size(3)))
                    torch.index_select(t[:, :, :length], 0, rows, out=taken[layer][:, :, :length])
            out.filled = [length] * len(self.keys)
        if self.key_mask is not None:
            out.key_mask = self.key_mask.index_select(0, rows)
        return out
