"""Pre-training data: an ``lm`` task's token shards (``gptlab.data.token_cache``) -> (x, y) windows.

**Windows.** Each train shard is cut into non-overlapping windows of ``block_size + 1`` tokens at
stride ``block_size`` (``x = w[:-1]``, ``y = w[1:]``); a window never spans two shards.

**Train stream** (``gptlab.data.stream``). Endless: global sample position ``p`` reads one window,
each window once per data epoch, in an order seeded by the run's seed; under DDP rank ``r`` of
``W`` takes positions ``begin + r, begin + r + W, ...``. A task of format ``mixture`` interleaves
its sources' windows by weight. A fit reads ``length`` positions from ``start_sample`` as one
Lightning epoch; the datamodule's ``state_dict`` records how far training got, so a resumed fit
continues the stream exactly where the checkpoint was taken.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler

from gptlab.bounds import NON_NEGATIVE, POSITIVE, SEED, check_arguments
from gptlab.data.contract import TaskDataModule
from gptlab.data.stream import MixtureSampler, StreamSampler
from gptlab.data.shards import Shard
from gptlab.data.token_cache import DEFAULT_SHARD_TOKENS, TokenShards, token_shards
from gptlab.tasks.spec import TaskSpec

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
        self._splits: dict[str, list[TokenShards]] = {}  # "train"/"val" -> its shards, per source
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
        for split, sources in splits.items():
            for shards in sources:
                self._check_split(split, shards)
        self._splits = splits

    def _check_split(self, split: str, shards: TokenShards) -> None:
        spec = shards.spec  # a mixture's source names itself
        if shards.tokens < self.block_size + 1:
            held_out = "" if split == "train" or spec.has_split("validation") else (
                f" (val_fraction={spec.val_fraction} of the documents, by a hash of each: raise it or "
                "name a validation split in task.files)"
            )
            raise ValueError(
                f"task {spec.name!r}: the {split} split has {shards.tokens} tokens, fewer than "
                f"block_size + 1 = {self.block_size + 1}{held_out}"
            )
        if len(TokenWindows(shards, self.block_size)) == 0:
            raise ValueError(
                f"task {spec.name!r}: no shard of the {split} split holds block_size + 1 = "
                f"{self.block_size + 1} tokens; raise shard_tokens (now {self.shard_tokens})"
            )

    def _sources(self) -> list[tuple[str, TaskSpec, float]]:
        """(name, task, weight) of each corpus: a mixture's sources, or the task itself."""
        return self.spec.mixture_sources() or [(self.spec.name, self.spec, 1.0)]

    def _token_shards(self) -> tuple[dict[str, list[TokenShards]], dict[str, int]]:
        """Each source's train and val shards, and the blank lines skipped per source split (named
        ``<source>/<split>`` in a mixture)."""
        splits: dict[str, list[TokenShards]] = {"train": [], "val": []}
        skipped: dict[str, int] = {}
        for name, spec, _ in self._sources():
            found, lines = token_shards(spec, self.cache_dir, self.num_proc, self.shard_tokens, self.verify_cache)
            for output, shards in found.items():
                splits[output].append(shards)
            skipped |= {f"{name}/{split}" if self.spec.mixture else split: n for split, n in lines.items()}
        return splits, skipped

    def _split(self, name: str) -> list[TokenShards]:
        if not self._splits:
            raise RuntimeError("TextDataModule: call setup() (or let the Trainer call it) first")
        return self._splits[name]

    def shards(self, split: str) -> list[Shard]:
        """The shards of ``split`` (``train`` or ``val``), source after source."""
        return [shard for source in self._split(split) for shard in source.shards]

    @property
    def num_train_tokens(self) -> int:
        """Tokens in the train split (all of them, before cutting windows)."""
        return sum(source.tokens for source in self._split("train"))

    @property
    def num_val_tokens(self) -> int:
        """Tokens in the val split (all of them, whatever ``val_windows`` keeps)."""
        return sum(source.tokens for source in self._split("val"))

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
        sources = [TokenWindows(shards, self.block_size) for shards in self._split("train")]
        windows = sources[0] if len(sources) == 1 else ConcatDataset(sources)
        rank, world_size = self.rank_world()
        stream = {
            "seed": self.seed,
            "start": self.start_sample,
            "length": self._stream_length(len(windows), world_size),
            "resume": self._resume_sample,
            "rank": rank,
            "world_size": world_size,
        }
        self._train_sampler = (
            StreamSampler(num_windows=len(windows), **stream)
            if len(sources) == 1
            else MixtureSampler([len(w) for w in sources], [weight for _, _, weight in self._sources()], **stream)
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
        sources = self._split("val")
        # a mixture validates on each source alike: an equal share of val_windows from each
        limit = None if self.val_windows is None else -(-self.val_windows // len(sources))
        parts = [TokenWindows(shards, self.block_size, limit=limit) for shards in sources]
        windows = parts[0] if len(parts) == 1 else ConcatDataset(parts)
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
