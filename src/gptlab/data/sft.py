"""Fine-tuning batches of a generation task (``regime=finetune``, kind ``generation``): supervised
fine-tuning with the loss on the answer only, instruction tuning included.

**Examples.** A training example is its prompt (the task's template rendered as at k = 0,
``gptlab.data.prompts``), its first target (``target_delimiter + target``, split from the prompt as
lm-evaluation-harness splits a continuation) and ``<|endoftext|>``, so a tuned model learns to
stop. The next-token targets are the response's tokens and that ``<|endoftext|>``: -100 on the
prompt and on padding, so only the answer is learned.

**Truncation** (``gptlab.data.prompts.fit_window``). An example holds at most ``block_size + 1``
tokens (the model reads all but the last). A longer one keeps its prompt's last tokens, at most
half of that window, and gives the response the rest: a response longer than that is cut on the
right (and loses its ``<|endoftext|>``), a shorter one leaves the prompt more. Every example keeps
at least one prompt and one response token, so no loss is ever empty. ``truncated_prompts`` and
``truncated_responses`` count the training examples each cut touched; both are logged.

**Batches** (the contract with ``gptlab.lit.sft.SFTModule``). Training batches hold
``batch_size`` examples, length-bucketed as the labelled tasks' (``gptlab.data.labeled``:
``BucketBatchSampler``, resumable mid-epoch) and padded to their longest:

==================  =============  ============================================================
key                 tensor         meaning
==================  =============  ============================================================
``input_ids``       long (R, T)    tokens the model reads, right-padded with ``FILL_ID``
``targets``         long (R, T)    the next token on response positions, else -100
``attention_mask``  long (R, T)    1 on tokens, 0 on padding (without packing)
``position_ids``    long (R, T)    packing: each example's positions from 0
``segment_ids``     long (R, T)    packing: which example of the row a token belongs to (1, 2,
                                   ...; 0 on padding); attention stays inside each example
==================  =============  ============================================================

R = ``batch_size`` rows without packing. With ``pack: true`` a batch's examples are packed into
as few rows of at most ``block_size`` tokens as first-fit by decreasing length finds, so short
examples share rows instead of padding.

**Validation** is the task's zero-shot evaluation (``gptlab.data.generative``, k = 0): the same
prompts, generations and metrics on the same split, so a fine-tuned row and a prompted row of the
task compare in one table.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import torch
from torch.utils.data import DataLoader

from gptlab.bounds import NON_NEGATIVE, POSITIVE, SEED, check_arguments
from gptlab.data.generative import GenerativeDataModule
from gptlab.data.incontext import FILL_ID
from gptlab.data.labeled import BUCKET_SIZE, IndexedExamples, ResumableEpochs
from gptlab.data.prompts import check_template, encode_pairs, fit_window, render
from gptlab.data.sources import load_task
from gptlab.data.tokenizer import EOT_ID
from gptlab.data.transforms import IGNORE_INDEX
from gptlab.tasks.spec import PromptSpec

log = logging.getLogger(__name__)


@dataclass
class SFTExample:
    """One training example: prompt then response tokens (see the module doc)."""

    ids: list[int]
    prompt_tokens: int  # how many of ``ids`` are the prompt's
    prompt_cut: bool
    response_cut: bool

    @property
    def length(self) -> int:
        """Tokens the model reads (all but the last)."""
        return len(self.ids) - 1


def sft_examples(
    prompt: PromptSpec, examples: Sequence[Mapping[str, Any]], block_size: int
) -> list[SFTExample]:
    """Training examples of a generation task's normalised ``examples`` (see the module doc)."""
    contexts = [render(prompt, ex) for ex in examples]
    responses = [[prompt.target_delimiter + ex["targets"][0]] for ex in examples]
    out = []
    for head, (response,) in encode_pairs(contexts, responses):
        head = head or [EOT_ID]  # an empty prompt: the end-of-text token, as in context
        response = [*response, EOT_ID]
        window = block_size + 1
        kept_prompt, kept_response = fit_window(head, response, window, min_prompt=window // 2)
        out.append(
            SFTExample(
                ids=kept_prompt + kept_response,
                prompt_tokens=len(kept_prompt),
                prompt_cut=len(kept_prompt) < len(head),
                response_cut=len(kept_response) < len(response),
            )
        )
    return out


def next_token_targets(example: SFTExample) -> list[int]:
    """The target of each position the model reads: the next token on the response, else -100."""
    ids, first = example.ids, example.prompt_tokens - 1  # the last prompt token predicts the response
    return [IGNORE_INDEX] * first + ids[first + 1 :]


def pack_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of ``lengths`` packed into rows of at most ``capacity`` (first fit, longest first)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        row = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if row is None:
            row = len(rows)
            rows.append([])
            room.append(capacity)
        rows[row].append(i)
        room[row] -= lengths[i]
    return rows


class SFTCollator:
    """``SFTExample``s -> one training batch (see the module doc), packed when ``pack``."""

    def __init__(self, pack: bool, block_size: int) -> None:
        self.pack, self.block_size = pack, block_size

    def __call__(self, examples: Sequence[SFTExample]) -> dict[str, torch.Tensor]:
        rows = (
            pack_rows([ex.length for ex in examples], self.block_size)
            if self.pack else [[i] for i in range(len(examples))]
        )
        width = max(sum(examples[i].length for i in row) for row in rows)
        input_ids = torch.full((len(rows), width), FILL_ID, dtype=torch.long)
        targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        segments = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            start = 0
            for segment, i in enumerate(row, 1):
                ex = examples[i]
                end = start + ex.length
                input_ids[r, start:end] = torch.tensor(ex.ids[:-1])
                targets[r, start:end] = torch.tensor(next_token_targets(ex))
                positions[r, start:end] = torch.arange(ex.length)
                segments[r, start:end] = segment
                start = end
        batch = {"input_ids": input_ids, "targets": targets}
        if self.pack:
            batch.update(position_ids=positions, segment_ids=segments)
        else:
            batch["attention_mask"] = (segments > 0).long()
        return batch


class SFTDataModule(ResumableEpochs, GenerativeDataModule):
    """Fine-tuning batches of a generation task and its zero-shot validation (see the module doc).

    After ``setup()``, besides ``GenerativeDataModule``'s attributes: ``num_train_examples`` (after
    ``task.train_limit``, a subset drawn with ``seed``), ``truncated_prompts`` and
    ``truncated_responses`` (training examples cut to fit ``block_size``).
    """

    NATURE = "finetune"

    def __init__(
        self,
        task: Mapping[str, Any],
        block_size: Annotated[int, POSITIVE],
        batch_size: Annotated[int, POSITIVE],
        seed: Annotated[int, SEED] = 1234,
        eval_batch_size: Annotated[int | None, POSITIVE] = None,
        prompt: str | None = None,
        pack: bool = False,
        bucket_size: Annotated[int, POSITIVE] = BUCKET_SIZE,
        num_workers: Annotated[int, NON_NEGATIVE] = 0,
    ) -> None:
        check_arguments(SFTDataModule.__init__, locals())
        # the parent's batch_size is the evaluation batch: validation is its zero-shot scoring
        super().__init__(task, block_size, eval_batch_size or batch_size, k=0, prompt=prompt, num_workers=num_workers)
        self.train_batch_size, self.seed, self.pack, self.bucket_size = batch_size, seed, pack, bucket_size
        self.truncated_prompts = self.truncated_responses = 0
        self._train: list[SFTExample] = []

    def check_task(self) -> None:
        super().check_task()
        spec = self.spec
        if spec.format not in ("hub", "demo") and not spec.has_split(spec.train_split):
            raise ValueError(
                f"task {spec.name!r} has no {spec.train_split!r} split to fine-tune on (files: "
                f"{sorted(spec.files)}); carve one from its data with the task's own seed, e.g. "
                f"task.carve={{from: {next(iter(spec.files), 'all')}, seed: 1234, sizes: {{train: 2500, "
                f"validation: null}}}} (see gptlab.tasks.spec)"
            )

    def setup(self, stage: str | None = None) -> None:
        if self._train:
            return
        spec, data = load_task(self.spec, seed=self.seed, skipped_lines=self.skipped_lines)
        if missing := [s for s in self.eval_splits if s not in data]:
            raise ValueError(f"task {spec.name!r}: no eval split(s) {missing}; the reader gave {sorted(data)}")
        for split, examples in data.items():
            check_template(spec.name, self.prompt, examples[0], f"{split!r}")
        for split in self.eval_splits:
            examples = data[split]
            self._requests[split] = self.encode(examples, [render(self.prompt, ex) for ex in examples])
            self.truncated[split] = sum(r.truncated for r in self._requests[split])
        train = sft_examples(self.prompt, data[spec.train_split], self.block_size)
        self.truncated_prompts = sum(ex.prompt_cut for ex in train)
        self.truncated_responses = sum(ex.response_cut for ex in train)
        log.info(
            "task %s: %s: %d training examples, prompt %r; to fit block_size=%d, %d prompts were cut "
            "on the left and %d responses on the right; eval splits %s: %s prompts truncated",
            spec.name, spec.train_split, len(train), self.prompt.name, self.block_size,
            self.truncated_prompts, self.truncated_responses, self.eval_splits, self.truncated,
        )
        self.num_train_examples, self._train = len(train), train

    def train_dataloader(self) -> DataLoader:
        if not self._train:
            raise RuntimeError("SFTDataModule: call setup() (or let the Trainer call it) first")
        sampler = self.bucket_sampler([ex.length for ex in self._train], self.train_batch_size)
        return DataLoader(
            IndexedExamples(self._train),
            sampler=sampler,
            batch_size=None,  # the sampler yields whole batches of indices
            collate_fn=SFTCollator(self.pack, self.block_size),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
