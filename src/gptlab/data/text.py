"""Pre-training data: an ``lm`` task's token shards (``gptlab.data.token_cache``) -> (x, y) windows.

**Train stream.** Each train shard is cut into non-overlapping windows of ``block_size + 1`` tokens
at stride ``block_size`` (``x = w[:-1]``, ``y = w[1:]``), ``N`` windows in all. The stream is endless: global
sample position ``p`` reads window ``perm_e[p % N]`` with ``e = p // N`` and ``perm_e`` a permutation
seeded by ``(seed, e)``, so each window is seen once per data epoch. Under DDP rank ``r`` of ``W``
takes positions ``begin + r, begin + r + W, ...``. A fit reads ``length`` positions from
``start_sample`` as one Lightning epoch; the datamodule's ``state_dict`` records how far training
got, so a resumed fit continues the stream exactly where the checkpoint was taken.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from gptlab.bounds import NON_NEGATIVE, POSITIVE, SEED, check_arguments
from gptlab.data.contract import TaskDataModule
from gptlab.data.token_cache import DEFAULT_SHARD_TOKENS, TokenShards, token_shards

log = logging.getLogger(__name__)


class TokenWindows(Dataset):
    """The windows of a split's shards as ``(x, y)``: window ``j`` of a shard is its tokens
    ``[j*B, j*B + B + 1)`` for ``B = block_size`` (a window never spans two shards), numbered shard
    after shard."""

    def __init__(self, split: TokenShards, block_size: int, limit: int | None = None) -> None:
        self.block_size, self.reader = block_size, split.reader()
        per_shard = [max(0, (shard.tokens - 1) // block_size) for shard in split.shards]
        self.ends = np.cumsum(per_shard, dtype=np.int64)  # windows before the end of each shard
        count = int(self.ends[-1]) if len(self.ends) else 0
        self.count = count if limit is None else min(count, limit)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < self.count:
            raise IndexError(f"window {i} out of range [0, {self.count})")
        shard = int(np.searchsorted(self.ends, i, side="right"))
        start = (i - (int(self.ends[shard - 1]) if shard else 0)) * self.block_size
        tokens = self.reader.read(shard, start, start + self.block_size + 1)
        window = torch.from_numpy(tokens.astype(np.int64))
        return window[:-1], window[1:]


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


class TextDataModule(TaskDataModule):
    """Pre-training batches ``(x, y)``, LongTensors of shape ``(batch_size, block_size)``, of an ``lm`` task.

    ``train_dataloader()`` reads ``[start_sample, start_sample + length)`` of the stream (see the
    module doc) as one Lightning epoch, where ``length = trainer.max_steps * accumulate_grad_batches
    * batch_size * world_size`` when ``max_steps > 0``, else one pass over the ``N`` windows per
    Lightning epoch (epoch ``k`` reading the following ``length`` positions). A resumed fit
    continues from the position stored by ``state_dict()``; ``stream_position()`` is the global
    position of the next sample training will consume.

    The trainer must run with ``use_distributed_sampler=False``: the sampler shards by rank itself.
    Its one eval split is ``validation`` (the held-out tokens); ``skipped_lines`` holds source
    split -> blank lines skipped in its files.
    """

    NATURE = "pretrain"

    def __init__(
        self,
        task: Mapping[str, Any],
        block_size: Annotated[int, POSITIVE],
        batch_size: Annotated[int, POSITIVE],
        cache_dir: str,
        seed: Annotated[int, SEED] = 1234,
        num_proc: Annotated[int, POSITIVE] = 2,
        num_workers: Annotated[int, NON_NEGATIVE] = 0,
        val_windows: Annotated[int | None, POSITIVE] = None,
        start_sample: Annotated[int, NON_NEGATIVE] = 0,
        shard_tokens: Annotated[int, POSITIVE] = DEFAULT_SHARD_TOKENS,
        verify_cache: bool = False,
    ) -> None:
        check_arguments(TextDataModule.__init__, locals())
        super().__init__(task)
        self.block_size, self.batch_size = block_size, batch_size
        self.cache_dir = Path(cache_dir)
        self.seed, self.num_proc, self.num_workers, self.val_windows = seed, num_proc, num_workers, val_windows
        self.start_sample = self._resume_sample = start_sample
        self.shard_tokens, self.verify_cache = shard_tokens, verify_cache
        self._splits: dict[str, TokenShards] = {}  # "train"/"val" -> its shards
        self._train_sampler: StreamSampler | None = None

    @property
    def eval_splits(self) -> list[str]:
        return ["validation"]

    # -- data preparation

    def prepare_data(self) -> None:
        """Tokenize into the cache (Lightning runs this once per node before ``setup``)."""
        self._token_shards()

    def setup(self, stage: str | None = None) -> None:
        if self._splits:
            return
        splits, self.skipped_lines = self._token_shards()
        for split, shards in splits.items():
            if shards.tokens < self.block_size + 1:
                held_out = "" if split == "train" or self.spec.has_split("validation") else (
                    f" (val_fraction={self.spec.val_fraction} of the documents, by a hash of each: raise it or "
                    "name a validation split in task.files)"
                )
                raise ValueError(
                    f"task {self.spec.name!r}: the {split} split has {shards.tokens} tokens, fewer than "
                    f"block_size + 1 = {self.block_size + 1}{held_out}"
                )
            if len(TokenWindows(shards, self.block_size)) == 0:
                raise ValueError(
                    f"task {self.spec.name!r}: no shard of the {split} split holds block_size + 1 = "
                    f"{self.block_size + 1} tokens; raise shard_tokens (now {self.shard_tokens})"
                )
        self._splits = splits

    def _token_shards(self) -> tuple[dict[str, TokenShards], dict[str, int]]:
        return token_shards(self.spec, self.cache_dir, self.num_proc, self.shard_tokens, self.verify_cache)

    def _split(self, name: str) -> TokenShards:
        if not self._splits:
            raise RuntimeError("TextDataModule: call setup() (or let the Trainer call it) first")
        return self._splits[name]

    @property
    def num_train_tokens(self) -> int:
        """Tokens in the train split (all of them, before cutting windows)."""
        return self._split("train").tokens

    @property
    def num_val_tokens(self) -> int:
        """Tokens in the val split (all of them, whatever ``val_windows`` keeps)."""
        return self._split("val").tokens

    @property
    def tokens_per_batch(self) -> int:
        """Tokens in one batch summed over ranks (times ``accumulate_grad_batches`` per optimizer step)."""
        return self.batch_size * self.block_size * self.rank_world()[1]

    # -- the stream

    def _stream_length(self, num_windows: int, world_size: int) -> int:
        trainer = self.trainer
        if trainer is not None and trainer.max_steps > 0:
            return trainer.max_steps * trainer.accumulate_grad_batches * self.batch_size * world_size
        return num_windows

    def stream_position(self) -> int:
        """Global stream position of the next train sample not yet consumed by an optimizer step."""
        sampler, trainer = self._train_sampler, self.trainer
        if sampler is None or trainer is None:
            return self._resume_sample
        # Lightning's count of batches trained in this epoch; it is restored on resume, like our sampler.
        batches = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return sampler.epoch_start + batches * self.batch_size * sampler.world_size

    def train_dataloader(self) -> DataLoader:
        windows = TokenWindows(self._split("train"), self.block_size)
        rank, world_size = self.rank_world()
        self._train_sampler = StreamSampler(
            num_windows=len(windows),
            seed=self.seed,
            start=self.start_sample,
            length=self._stream_length(len(windows), world_size),
            resume=self._resume_sample,
            rank=rank,
            world_size=world_size,
        )
        return DataLoader(
            windows,
            batch_size=self.batch_size,
            sampler=self._train_sampler,
            drop_last=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        windows = TokenWindows(self._split("val"), self.block_size, limit=self.val_windows)
        rank, world_size = self.rank_world()
        sampler = (
            DistributedSampler(windows, num_replicas=world_size, rank=rank, shuffle=False)
            if world_size > 1
            else None
        )
        return DataLoader(windows, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers)

    # -- checkpointing

    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "start_sample": self.start_sample,
            "position": self.stream_position(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict["seed"] != self.seed:
            log.info("TextDataModule: seed %s from the checkpoint replaces %s", state_dict["seed"], self.seed)
        self.seed = state_dict["seed"]
        self.start_sample = state_dict["start_sample"]
        self._resume_sample = state_dict["position"]
