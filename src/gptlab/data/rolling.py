"""Rolling-window batches of an ``lm`` task's validation documents: zero-shot perplexity as
lm-evaluation-harness's ``loglikelihood_rolling`` computes it.

**Documents.** The documents pre-training validates on (``gptlab.data.corpus_units``): the task's
``validation`` split where it names one, otherwise those held out by ``val_fraction`` (or the last
``val_fraction`` of a one-document corpus), so zero-shot and pre-training validation read the same
text. A document without any token is skipped.

**Windows** (lm-eval's ``get_rolling_token_windows`` with ``context_len=1`` and
``make_disjoint_window``). A document's tokens ``t`` are scored once each: the first window reads
``<|endoftext|> t[0..L-2]`` and predicts ``t[0..L-1]`` (``L = min(block_size, len(t))``); each
next window predicts the following ``block_size`` tokens (fewer at the end) from the
``block_size`` tokens before each of them, scoring only its new ones. So every token but a
document's first ``block_size`` sees a full window of context.

**Batch** (the contract with ``gptlab.lit.rolling.RollingPerplexityModule``), ``B`` windows:
``input_ids`` / ``target_ids`` long (B, L) right-padded, ``scored`` bool (B, L) (the targets that
count), ``index`` long (B,) (the window's document), and ``words`` / ``bytes`` float (B,): the
document's whitespace-separated words and UTF-8 bytes (lm-eval's ``count_words`` and
``count_bytes``) on its first window, 0 on the others, so sums over windows count each document
once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import torch
from torch.utils.data import DataLoader

from gptlab.bounds import NON_NEGATIVE, POSITIVE, check_arguments
from gptlab.data.contract import TaskDataModule
from gptlab.data.incontext import FILL_ID
from gptlab.data.labeled import IndexedExamples
from gptlab.data.corpus_units import plan_corpus
from gptlab.data.unit_encoding import unit_pieces
from gptlab.data.tokenizer import EOT_ID, encode_texts
from gptlab.tasks.spec import TaskSpec

log = logging.getLogger(__name__)


@dataclass
class Window:
    """One rolling window of a document: its input tokens, their next tokens, and which count."""

    index: int  # the document
    tokens: list[int]  # the model's input
    targets: list[int]  # the next token of each input position
    scored: int  # the last `scored` targets count
    words: int
    bytes: int


def count_words(text: str) -> int:
    """lm-eval's ``count_words``: pieces of ``re.split(r"\\s+", text)``."""
    return len(re.split(r"\s+", text))


def rolling_windows(index: int, text: str, tokens: Sequence[int], block_size: int) -> list[Window]:
    """The windows of one document (see the module doc)."""
    words, size = count_words(text), len(text.encode("utf-8"))
    first = min(block_size, len(tokens))
    stream = [EOT_ID, *tokens]  # stream[i] precedes tokens[i]
    windows = [Window(index, stream[:first], list(tokens[:first]), first, words, size)]
    done = first
    while done < len(tokens):
        new = min(len(tokens) - done, block_size)
        end = done + new  # predict tokens[end - block_size .. end - 1], score the last `new`
        windows.append(Window(index, stream[end - block_size: end], list(tokens[end - block_size: end]), new, 0, 0))
        done = end
    return windows


def collate_windows(windows: Sequence[Window]) -> dict[str, torch.Tensor]:
    """Windows -> one batch (see the module doc)."""
    width = max(len(w.tokens) for w in windows)
    input_ids = torch.full((len(windows), width), FILL_ID, dtype=torch.long)
    target_ids = torch.full((len(windows), width), FILL_ID, dtype=torch.long)
    scored = torch.zeros((len(windows), width), dtype=torch.bool)
    for i, w in enumerate(windows):
        n = len(w.tokens)
        input_ids[i, :n], target_ids[i, :n] = torch.tensor(w.tokens), torch.tensor(w.targets)
        scored[i, n - w.scored: n] = True
    return {
        "input_ids": input_ids,
        "target_ids": target_ids,
        "scored": scored,
        "index": torch.tensor([w.index for w in windows]),
        "words": torch.tensor([float(w.words) for w in windows], dtype=torch.float64),
        "bytes": torch.tensor([float(w.bytes) for w in windows], dtype=torch.float64),
    }


def validation_documents(spec: TaskSpec) -> tuple[list[str], dict[str, int]]:
    """An ``lm`` task's validation documents (see the module doc) and the blank lines skipped reading them."""
    corpus = plan_corpus(spec)
    documents: list[str] = []
    skipped: dict[str, int] = {}
    piece = ""  # a document of format text comes in pieces
    for unit in corpus.units(0):
        pieces, blank_lines = unit_pieces(corpus.reading, unit)
        if unit.path is not None:
            skipped[unit.split] = skipped.get(unit.split, 0) + blank_lines
        for output, text, _, ends in pieces:
            if output == "val":
                piece += text
                if ends:
                    documents.append(piece)
                    piece = ""
    return documents, skipped


class RollingDataModule(TaskDataModule):
    """Rolling windows of an ``lm`` task's validation documents (one eval split, ``validation``).

    After ``setup()``: ``documents`` (the texts scored), ``num_tokens`` (tokens scored) and the
    ``TaskDataModule`` contract (``truncated`` is empty: no token is dropped).
    """

    NATURE = "incontext"

    def __init__(
        self,
        task: Mapping[str, Any],
        block_size: Annotated[int, POSITIVE],
        batch_size: Annotated[int, POSITIVE],
        num_workers: Annotated[int, NON_NEGATIVE] = 0,
    ) -> None:
        check_arguments(RollingDataModule.__init__, locals())
        super().__init__(task)
        self.block_size, self.batch_size, self.num_workers = block_size, batch_size, num_workers
        self.num_train_examples = 0
        self.windows: list[Window] = []

    def check_task(self) -> None:
        if self.spec.task_kind.incontext != "perplexity":
            raise ValueError(
                f"task {self.spec.name!r} is of kind {self.spec.kind!r}; RollingDataModule scores the "
                "documents of language-modelling tasks (kind lm)"
            )

    @property
    def eval_splits(self) -> list[str]:
        return ["validation"]

    def setup(self, stage: str | None = None) -> None:
        if self.windows:
            return
        self.documents, self.skipped_lines = validation_documents(self.spec)
        tokens = encode_texts(self.documents)
        self.windows = [
            w for i, (text, ids) in enumerate(zip(self.documents, tokens)) if ids
            for w in rolling_windows(i, text, ids, self.block_size)
        ]
        self.num_tokens = sum(map(len, tokens))
        log.info(
            "task %s: rolling perplexity over %d documents, %d tokens, in %d windows of up to %d tokens",
            self.spec.name, len(self.documents), self.num_tokens, len(self.windows), self.block_size,
        )

    def val_dataloader(self) -> DataLoader:
        rank, world_size = self.rank_world()
        order = sorted(range(len(self.windows)), key=lambda i: (-len(self.windows[i].tokens), i))[rank::world_size]
        batches = [order[i: i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        return DataLoader(
            IndexedExamples(self.windows),
            sampler=batches,
            batch_size=None,
            collate_fn=collate_windows,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
