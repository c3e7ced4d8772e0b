"""The pre-training stream: which window each global sample position reads.

**One corpus** (``StreamSampler``): ``N`` windows; position ``p`` reads window ``perm_e[p % N]`` with
``e = p // N`` and ``perm_e`` a permutation seeded by ``(seed, e)``, so each window is read once per
data epoch. Under DDP rank ``r`` of ``W`` takes positions ``begin + r, begin + r + W, ...``; a
resumed sampler starts at the position the checkpoint recorded.

**Several corpora** (``MixtureSampler``, a task of format ``mixture``). The weights are dealt into ``PATTERN_LENGTH`` slots (largest remainders, at least one
slot per source), shuffled once with the run's seed. Stream position ``p`` reads source
``pattern[p % L]``; its ``q``-th position of that source, where ``q`` counts the earlier slots of
the same source, goes through the source's own stream: window ``perm_{s,e}[q % N_s]`` with
``e = q // N_s`` and ``perm`` seeded by ``(seed, s, e)``, so each source's windows are each read once
per its own data epoch, a small source simply cycling faster. Every position maps to its window in
O(1), so resuming at a position and DDP's partition of positions (``StreamSampler``) hold as for
one corpus, and the weights hold exactly in every ``L`` positions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler


class StreamSampler(Sampler[int]):
    """Window indices along the endless train stream, one Lightning epoch at a time.

    Lightning epoch ``k`` covers global positions ``[start + k*length, start + (k+1)*length)``; this
    rank takes every ``world_size``-th of them, and a resumed sampler skips those before ``resume``.
    ``len()`` is the whole epoch even when resuming, because Lightning restores its batch counter
    and ends the epoch when that counter reaches ``len()``.
    """

    def __init__(
        self,
        num_windows: int,
        seed: int,
        start: int,
        length: int,
        resume: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.num_windows, self.seed, self.start, self.length = num_windows, seed, start, length
        self.resume = start if resume is None else resume
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._perm_epoch, self._perm = -1, np.zeros(0, dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch

    @property
    def epoch_start(self) -> int:
        return self.start + self.epoch * self.length

    def window(self, position: int) -> int:
        """The window read at global stream ``position``."""
        data_epoch, offset = divmod(position, self.num_windows)
        if data_epoch != self._perm_epoch:
            self._perm = np.random.default_rng((self.seed, data_epoch)).permutation(self.num_windows)
            self._perm_epoch = data_epoch
        return int(self._perm[offset])

    def __len__(self) -> int:
        return self.length // self.world_size

    def __iter__(self) -> Iterator[int]:
        begin = self.epoch_start
        # The same skip on every rank, so all ranks yield equally many batches (DDP hangs otherwise).
        skip = max(0, -(-(self.resume - begin) // self.world_size))
        for j in range(skip, len(self)):
            yield self.window(begin + j * self.world_size + self.rank)


PATTERN_LENGTH = 1000  # weights hold to 0.1% of the positions


def mixture_pattern(weights: Sequence[float], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source of each slot, its rank among the slots of that source, slots per source)."""
    shares = np.asarray(weights, dtype=np.float64) / sum(weights)
    counts = np.maximum(1, np.floor(shares * PATTERN_LENGTH)).astype(np.int64)
    while counts.sum() < PATTERN_LENGTH:  # the largest remainders get the slots left
        counts[np.argmax(shares * PATTERN_LENGTH - counts)] += 1
    while counts.sum() > PATTERN_LENGTH:  # only when many sources were raised to one slot
        counts[np.argmax(counts - shares * PATTERN_LENGTH)] -= 1
    slots = np.random.default_rng((seed, len(weights))).permutation(np.repeat(np.arange(len(weights)), counts))
    ranks = np.zeros(PATTERN_LENGTH, dtype=np.int64)
    for source in range(len(weights)):
        where = slots == source
        ranks[where] = np.arange(int(where.sum()))
    return slots, ranks, counts


class MixtureSampler(StreamSampler):
    """``StreamSampler`` over the concatenated windows of several sources (``num_windows[s]`` each),
    position ``p`` mapped to a window as the module doc says."""

    def __init__(self, num_windows: Sequence[int], weights: Sequence[float], seed: int, **stream: Any) -> None:
        """``stream``: ``StreamSampler``'s ``start``, ``length``, ``resume``, ``rank`` and ``world_size``."""
        super().__init__(sum(num_windows), seed, **stream)
        self.source_windows = list(num_windows)
        self.offsets = np.concatenate([[0], np.cumsum(num_windows)[:-1]]).astype(np.int64)
        self.slots, self.ranks, self.counts = mixture_pattern(weights, seed)
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def source_position(self, position: int) -> tuple[int, int]:
        """(source, its own stream position) read at global ``position``."""
        block, slot = divmod(position, PATTERN_LENGTH)
        source = int(self.slots[slot])
        return source, block * int(self.counts[source]) + int(self.ranks[slot])

    def window(self, position: int) -> int:
        source, q = self.source_position(position)
        data_epoch, offset = divmod(q, self.source_windows[source])
        key = (source, data_epoch)
        if key not in self._perms:
            if len(self._perms) > 4 * len(self.source_windows):  # keep the current epochs only
                self._perms.clear()
            rng = np.random.default_rng((self.seed, source, data_epoch))
            self._perms[key] = rng.permutation(self.source_windows[source])
        return int(self.offsets[source] + self._perms[key][offset])
