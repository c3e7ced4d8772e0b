"""Labelled-task batches for fine-tuning (GPT-1): task spec -> normalised examples (``gptlab.data.sources``)
-> GPT-1 input transformations (``transforms.py``) -> dynamically padded, length-bucketed batches.

**Batch** (the contract with the fine-tuning LightningModule). ``B`` examples, ``S`` sequences per
example (1 for classification, entailment and ner; 2 for similarity, both orderings; the most
answers of any example in the batch for multiple choice), ``T`` the longest sequence in the batch:

==================  ===============  =============================================================
key                 tensor           meaning
==================  ===============  =============================================================
``input_ids``       long (B, S, T)   ``[start] ... [extract]``, right-padded with ``PAD_ID``
``attention_mask``  long (B, S, T)   1 on real tokens, 0 on padding
``extract_index``   long (B, S)      position of ``[extract]`` in each sequence (0 in a padded slot)
``sequence_mask``   bool (B, S)      False for the padded answer slots of a multiple-choice batch
``lm_targets``      long (B, S, T)   next-token targets for the auxiliary LM loss: token ``t + 1``
                                     at position ``t`` (text, ``[delim]`` or ``[extract]``); -100 at
                                     the last token and on padding
``labels``          long (B,)        class index (multiple choice: the right answer's index)
                    float (B,)       regression tasks (``spec.regression``)
                    long (B, T)      ner: the tag of each word on its first sub-token, else -100
``word_index``      long (B, T)      ner only: the word whose first sub-token is at ``t``, else -1
``word_labels``     long (B, W)      ner only: the tag of every word of the sentence (also of those
                                     truncation dropped), -100 past its end
``index``           long (B,)        evaluation batches only: each example's index in its split
==================  ===============  =============================================================

**Order.** Training shuffles with a generator seeded by ``(seed, epoch)``, cuts the permutation
into chunks of ``bucket_size`` batches, sorts each chunk by length, cuts it into batches and
shuffles the batch order: batches of similar lengths (little padding) in random order, every
example once per epoch. Evaluation runs longest first (an out-of-memory batch shows at once),
without shuffling.

**Distributed.** The trainer runs with ``use_distributed_sampler=False``; this module shards by
``trainer.global_rank``/``world_size`` itself. Training deals the epoch's batches round-robin,
repeating the first few so every rank gets the same number (DDP waits for all ranks at every
step). Evaluation deals the length-sorted examples round-robin: every example is scored exactly
once, and ranks may differ by one batch, so per-step collectives (``self.log(sync_dist=True)`` in
``validation_step``) must be avoided; torchmetrics sync at epoch end.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from numbers import Integral, Real
from typing import Annotated, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from gptlab.bounds import NON_NEGATIVE, POSITIVE, SEED, check_arguments
from gptlab.data import transforms
from gptlab.data.contract import TaskDataModule
from gptlab.data.sources import load_task
from gptlab.data.sources.labels import train_subset
from gptlab.data.tokenizer import PAD_ID
from gptlab.data.transforms import IGNORE_INDEX, Transformed
from gptlab.tasks.chance import chance_levels
from gptlab.tasks.spec import TaskSpec

log = logging.getLogger(__name__)


# Training batches are length-sorted within chunks of this many batches (see the module doc's order)
BUCKET_SIZE = 50

# ----------------------------------------------------------------------------- examples -> token ids


def check_labels(spec: TaskSpec, split: str, examples: Sequence[Mapping[str, Any]]) -> None:
    """Fail early, naming the example, on a label the head cannot take (e.g. GLUE's unlabelled -1)."""
    rule = spec.task_kind.label
    if rule == "text":
        return  # generation targets are checked as they are read (gptlab.data.sources.records)
    for i, ex in enumerate(examples):
        if rule == "tags":
            bad = [t for t in ex["tags"] if not 0 <= t < spec.num_labels]
            if bad or len(ex["tags"]) != len(ex["tokens"]):
                raise ValueError(
                    f"task {spec.name!r}: {split} example {i} has tags {ex['tags']} for {len(ex['tokens'])} "
                    f"words; expected one tag in [0, {spec.num_labels}) per word"
                )
            continue
        label = ex["label"]
        if spec.regression:
            ok, expected = isinstance(label, Real) and math.isfinite(label), "a finite number"
        elif rule == "choice":
            n = len(ex["choices"])
            ok, expected = isinstance(label, Integral) and 0 <= label < n, f"an answer index in [0, {n})"
        else:
            ok = isinstance(label, Integral) and 0 <= label < spec.num_labels
            expected = f"a class index in [0, {spec.num_labels})"
        if not ok:
            raise ValueError(
                f"task {spec.name!r}: {split} example {i} has label {label!r}; expected {expected}"
            )


def transform_examples(
    spec: TaskSpec, examples: Sequence[Mapping[str, Any]], block_size: int
) -> list[Transformed]:
    """Normalised examples of ``spec.kind`` as GPT-1 token sequences (the kind's ``transform``)."""
    transform = spec.task_kind.transform
    if transform is None:
        raise ValueError(f"task {spec.name!r}: kind {spec.kind!r} has no GPT-1 input transformation")
    return transforms.TRANSFORMS[transform](examples, float if spec.regression else int, block_size)


# ----------------------------------------------------------------------------- batches


class Collator:
    """``Transformed`` examples -> one padded batch dict (see the module doc)."""

    def __init__(self, per_token_labels: bool, regression: bool = False) -> None:
        self.per_token_labels, self.regression = per_token_labels, regression

    def __call__(self, examples: Sequence[Transformed] | Sequence[tuple[int, Transformed]]) -> dict[str, torch.Tensor]:
        index = None
        if examples and isinstance(examples[0], tuple):  # NumberedExamples
            index, examples = zip(*examples)
        b = len(examples)
        s = max(len(ex.sequences) for ex in examples)
        t = max(ex.max_length for ex in examples)
        input_ids = np.full((b, s, t), PAD_ID, dtype=np.int64)
        attention_mask = np.zeros((b, s, t), dtype=np.int64)
        lm_targets = np.full((b, s, t), IGNORE_INDEX, dtype=np.int64)
        extract_index = np.zeros((b, s), dtype=np.int64)
        sequence_mask = np.zeros((b, s), dtype=bool)
        for i, ex in enumerate(examples):
            for j, seq in enumerate(ex.sequences):
                n = len(seq)
                input_ids[i, j, :n] = seq
                attention_mask[i, j, :n] = 1
                # [start] is never a target and the last token ([extract]) has no next token.
                lm_targets[i, j, : n - 1] = seq[1:]
                extract_index[i, j] = ex.extract_index[j]
                sequence_mask[i, j] = True
        batch = {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention_mask),
            "extract_index": torch.from_numpy(extract_index),
            "sequence_mask": torch.from_numpy(sequence_mask),
            "lm_targets": torch.from_numpy(lm_targets),
        }
        if self.per_token_labels:
            labels = np.full((b, t), IGNORE_INDEX, dtype=np.int64)
            word_index = np.full((b, t), -1, dtype=np.int64)
            words = np.full((b, max(len(ex.word_tags or ()) for ex in examples)), IGNORE_INDEX, dtype=np.int64)
            for i, ex in enumerate(examples):
                assert ex.token_labels is not None and ex.word_index is not None and ex.word_tags is not None
                labels[i, : len(ex.token_labels)] = ex.token_labels
                word_index[i, : len(ex.word_index)] = ex.word_index
                words[i, : len(ex.word_tags)] = ex.word_tags
            batch["labels"] = torch.from_numpy(labels)
            batch["word_index"] = torch.from_numpy(word_index)
            batch["word_labels"] = torch.from_numpy(words)
        else:
            dtype = torch.float32 if self.regression else torch.long
            batch["labels"] = torch.tensor([ex.label for ex in examples], dtype=dtype)
        if index is not None:
            batch["index"] = torch.tensor(index)
        return batch


class IndexedExamples(Dataset):
    """A split's examples, indexed by a whole batch of indices (the samplers below yield batches)."""

    def __init__(self, examples: list[Transformed]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, indices: list[int]) -> list[Transformed]:
        return [self.examples[i] for i in indices]


class NumberedExamples(IndexedExamples):
    """``IndexedExamples`` that hands each example over with its index, so that evaluation batches
    name their examples (per-example records)."""

    def __getitem__(self, indices: list[int]) -> list[tuple[int, Transformed]]:  # type: ignore[override]
        return [(i, self.examples[i]) for i in indices]


class BucketBatchSampler(Sampler[list[int]]):
    """Training batches of example indices for one rank, length-bucketed (see the module doc).

    It is the DataLoader's ``sampler`` (with ``batch_size=None``), not its ``batch_sampler``, because
    Lightning calls ``set_epoch`` on the sampler only.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        bucket_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not lengths:
            raise ValueError("BucketBatchSampler: no examples")
        self.lengths = np.asarray(lengths)
        self.batch_size, self.bucket_size, self.seed = batch_size, bucket_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        # (epoch, batches) already trained when a checkpoint was taken mid-epoch: the resumed
        # epoch yields only its remaining batches, as Lightning's restored progress expects
        self.resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All batches of ``epoch``, over all ranks, in training order."""
        rng = np.random.default_rng((self.seed, epoch))
        order = rng.permutation(len(self.lengths))
        chunk = self.batch_size * self.bucket_size
        batches = []
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            part = part[np.argsort(self.lengths[part], kind="stable")]
            batches += [part[i : i + self.batch_size].tolist() for i in range(0, len(part), self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def __len__(self) -> int:
        return math.ceil(math.ceil(len(self.lengths) / self.batch_size) / self.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.epoch_batches(self.epoch)
        skip = 0
        if self.resume is not None and self.resume[0] == self.epoch:
            skip, self.resume = self.resume[1], None
        # Round-robin over ranks, wrapping around so that every rank gets len(self) batches.
        for k in range(skip, len(self)):
            yield batches[(k * self.world_size + self.rank) % len(batches)]


def eval_batches(
    lengths: Sequence[int], batch_size: int, rank: int = 0, world_size: int = 1
) -> list[list[int]]:
    """This rank's evaluation batches: examples longest first, dealt round-robin over ranks."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))[rank::world_size]
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class ResumableEpochs:
    """Training batches from a ``BucketBatchSampler`` that a checkpoint can resume mid-epoch: the
    DataModule's state is where in which epoch training stopped, so a resumed fit trains the
    rest. Mixed into a ``TaskDataModule`` with ``seed`` and ``bucket_size``."""

    _resume: tuple[int, int] | None = None  # (epoch, batches done) from a checkpoint

    def bucket_sampler(self, lengths: Sequence[int], batch_size: int) -> BucketBatchSampler:
        """This rank's length-bucketed training batches, resuming a restored epoch."""
        rank, world_size = self.rank_world()
        sampler = BucketBatchSampler(lengths, batch_size, self.bucket_size, self.seed, rank, world_size)
        sampler.resume, self._resume = self._resume, None
        return sampler

    def state_dict(self) -> dict[str, Any]:
        trainer = self.trainer
        if trainer is None:
            return {}
        return {
            "epoch": trainer.current_epoch,
            "batches_done": trainer.fit_loop.epoch_loop.batch_progress.current.processed,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            self._resume = (state_dict["epoch"], state_dict["batches_done"])


# ----------------------------------------------------------------------------- the datamodule


class LabeledDataModule(ResumableEpochs, TaskDataModule):
    """Fine-tuning batches of a labelled task (kinds classification ... ner); see the module doc.

    After ``setup()``, besides the DataModule contract (``gptlab.data.contract``): ``spec`` has its
    labels resolved (``spec.num_labels`` sizes the head), ``truncated`` counts the examples of
    each split cut to ``block_size`` and, for kinds with a tag per word, ``dropped_words`` (split ->
    words lost to truncation). Chance levels are computed from the full training split, before
    ``train_limit`` cuts it.
    """

    NATURE = "finetune"

    def __init__(
        self,
        task: Mapping[str, Any],
        block_size: Annotated[int, POSITIVE],
        batch_size: Annotated[int, POSITIVE],
        seed: Annotated[int, SEED] = 1234,
        eval_batch_size: Annotated[int | None, POSITIVE] = None,
        num_workers: Annotated[int, NON_NEGATIVE] = 0,
        bucket_size: Annotated[int, POSITIVE] = BUCKET_SIZE,
    ) -> None:
        check_arguments(LabeledDataModule.__init__, locals())
        super().__init__(task)
        self.block_size, self.batch_size, self.seed = block_size, batch_size, seed
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers, self.bucket_size = num_workers, bucket_size
        self._splits: dict[str, list[Transformed]] = {}
        self._collate = Collator(self.spec.task_kind.label == "tags", self.spec.regression)

    def setup(self, stage: str | None = None) -> None:
        if self._splits:
            return
        everything = dataclasses.replace(self.spec, train_limit=None)
        spec, examples = load_task(everything, seed=self.seed, skipped_lines=self.skipped_lines)
        spec = dataclasses.replace(spec, train_limit=self.spec.train_limit)
        if missing := [s for s in spec.eval_splits if s not in examples]:
            raise ValueError(
                f"task {spec.name!r}: no eval split(s) {missing}; the reader gave {sorted(examples)}"
            )
        train = examples[spec.train_split]
        self.chance_levels = {split: chance_levels(spec, train, examples[split]) for split in spec.eval_splits}
        if spec.train_limit is not None:
            examples[spec.train_split] = train_subset(spec, train, f"split {spec.train_split!r}", self.seed)
        per_word = spec.task_kind.label == "tags"
        splits = {}
        for split in dict.fromkeys([spec.train_split, *spec.eval_splits]):  # a split named twice is read once
            check_labels(spec, split, examples[split])
            data = transform_examples(spec, examples[split], self.block_size)
            self.truncated[split] = sum(ex.truncated for ex in data)
            if per_word:
                self.dropped_words[split] = sum(ex.dropped_words for ex in data)
            log.info(
                "task %s: %s: %d examples, %d truncated to block_size=%d%s",
                spec.name,
                split,
                len(data),
                self.truncated[split],
                self.block_size,
                f" ({self.dropped_words[split]} words dropped)" if per_word else "",
            )
            splits[split] = data
        self.spec, self._splits = spec, splits
        self.num_train_examples = len(splits[spec.train_split])

    # -- what the LightningModule reads

    def _split(self, name: str) -> list[Transformed]:
        if not self._splits:
            raise RuntimeError("LabeledDataModule: call setup() (or let the Trainer call it) first")
        if name not in self._splits:
            raise ValueError(f"task {self.spec.name!r}: no {name!r} split; have {sorted(self._splits)}")
        return self._splits[name]

    def _loader(self, data: list[Transformed], sampler: Sampler | list[list[int]], numbered: bool = False) -> DataLoader:
        return DataLoader(
            (NumberedExamples if numbered else IndexedExamples)(data),
            sampler=sampler,
            batch_size=None,  # the sampler yields whole batches of indices
            collate_fn=self._collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        data = self._split(self.spec.train_split)
        return self._loader(data, self.bucket_sampler([ex.max_length for ex in data], self.batch_size))

    def val_dataloader(self) -> list[DataLoader]:
        rank, world_size = self.rank_world()
        loaders = []
        for split in self.eval_splits:
            data = self._split(split)
            batches = eval_batches([ex.max_length for ex in data], self.eval_batch_size, rank, world_size)
            loaders.append(self._loader(data, batches, numbered=True))
        return loaders
