"""In-context evaluation batches (GPT-2/GPT-3 zero-, one- and few-shot) of a labelled task.

The prompts, demonstrations and token ids follow lm-evaluation-harness v0.4 (``gptlab.data.prompts``).
Demonstrations come from the task's **full** training split, even when ``task.train_limit`` cuts
it for fine-tuning (lm-eval draws from the whole split too); a task without a training split
draws them from its validation split, else its test split, with a warning.

**Batch** (the contract with ``gptlab.lit.incontext.InContextModule``). ``B`` examples with
``N = sum(num_choices)`` answers in all:

=====================  ============  ==========================================================
key                    tensor        meaning
=====================  ============  ==========================================================
``prefix_ids``         long (B, T)   each example's context, **left**-padded with ``FILL_ID``
``prefix_mask``        long (B, T)   1 on context tokens, 0 on padding
``continuation_ids``   long (N, L)   each answer's tokens (the examples' answers in order),
                                     right-padded with ``FILL_ID``
``continuation_mask``  long (N, L)   1 on answer tokens, 0 on padding
``score_mask``         long (N, L)   1 on the answer tokens scored (a multiple-input answer's
                                     own context tokens condition but are not scored)
``num_choices``        long (B,)     answers of each example
``choice_chars``       float (N,)    characters of each answer (``acc_norm``)
``labels``             long (B,)     index of the right answer
``index``              long (B,)     each example's position in its split
``answers``            list (B,)     each example's answers as text (per-example output)
=====================  ============  ==========================================================

With ``mutual_info`` the batch also holds ``unconditional_prefix`` (1, T0), the unconditional
context every answer is scored after, and ``unconditional_ids`` / ``unconditional_mask`` (N, L'),
the answers' tokens after it.

**Order.** Each eval split runs longest context first (little padding, an out-of-memory batch
shows at once); ranks take the sorted examples round-robin, so each is scored exactly once and
the metrics (torchmetrics) sync at the end of the epoch. A batch holds at most ``batch_size``
examples and is closed early when its widest context plus its longest answer would not fit
``block_size`` (``T + L - 1``): every answer continues in the columns after the padded contexts.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import torch
from torch.utils.data import DataLoader

from gptlab.bounds import NON_NEGATIVE, POSITIVE, check_arguments
from gptlab.data.contract import TaskDataModule
from gptlab.data.labeled import IndexedExamples, check_labels
from gptlab.data.prompts import (
    Request,
    UNCONDITIONAL_CONTEXTS,
    Context,
    answer_choices,
    check_template,
    encode_multiple_input,
    encode_requests,
    fewshot_contexts,
)
from gptlab.data.sources import load_split, load_task
from gptlab.tasks.chance import chance_levels
from gptlab.tasks.spec import PromptSpec, TaskSpec

log = logging.getLogger(__name__)

# Padding is masked out, so any id does; 0 is one that every vocabulary has (a model of exactly
# GPT-2's 50257 tokens has no room for gptlab's PAD_ID).
FILL_ID = 0
# lm-eval's fallback order for the split demonstrations come from
DEMONSTRATION_SPLITS = ("validation", "test")


def check_incontext_task(spec: TaskSpec, prompt: str | None = None, mutual_info: str | None = None) -> PromptSpec:
    """The prompt to evaluate ``spec`` with; a task in-context scoring cannot run, or cannot score
    unconditionally as ``mutual_info`` asks, is an error saying why."""
    if mutual_info not in (None, *UNCONDITIONAL_CONTEXTS):
        raise ValueError(
            f"mutual_info={mutual_info!r}; valid: null (off), "
            + ", ".join(f"{name} (unconditional context {text!r})" for name, text in UNCONDITIONAL_CONTEXTS.items())
        )
    kind = spec.task_kind
    if mutual_info is not None and (kind.incontext != "choice" or spec.kind == "multiple_input"):
        raise ValueError(
            f"mutual_info={mutual_info!r}: task {spec.name!r} (kind {spec.kind}) has no answers to score "
            "unconditionally: only tasks that choose among answer continuations do (a multiple_input "
            "task scores one continuation after each of its contexts)"
        )
    if kind.incontext == "perplexity":
        raise ValueError(
            f"task {spec.name!r} is a language-modelling task (kind {spec.kind!r}): it has no answers to "
            f"score and no labelled demonstrations, so only regime=zero_shot runs it (reporting perplexity)"
        )
    if kind.incontext is None:
        raise ValueError(f"task {spec.name!r} is not evaluated in context: {kind.not_incontext}")
    if spec.regression:
        raise ValueError(
            f"task {spec.name!r} is not supported in context: it is a regression task (a real-valued "
            "score per example, e.g. STS-B similarity 0-5), and in-context scoring can only pick one "
            "of a set of answers; evaluate it with regime=finetune"
        )
    chosen = spec.prompt_spec(prompt)
    # The answers are the example's own (multiple choice, generation), or one verbalizer per label.
    own_answers = kind.label in ("choice", "text")
    if own_answers and chosen.choices is not None:
        raise ValueError(
            f"task {spec.name!r}, prompt {chosen.name!r}: a {spec.kind} task scores each example's "
            f"own answers, so its prompt's choices must be null (got {chosen.choices})"
        )
    if not own_answers:
        if chosen.choices is None:
            raise ValueError(
                f"task {spec.name!r}, prompt {chosen.name!r}: choices is null; a {spec.kind} task needs "
                f"one verbalizer per label ({spec.labels or 'in label order'})"
            )
        if spec.labels is not None and len(chosen.choices) != len(spec.labels):
            raise ValueError(
                f"task {spec.name!r}, prompt {chosen.name!r}: {len(chosen.choices)} choices "
                f"{chosen.choices} for {len(spec.labels)} labels {spec.labels}; give one per label, in order"
            )
    return chosen


def _has_split(spec: TaskSpec, split: str) -> bool:
    # Hub and demo readers know their own splits; a missing one is their error, naming it.
    return spec.format in ("hub", "demo") or spec.has_split(split)


def demonstration_split(spec: TaskSpec, k: int = 1) -> str:
    """The split demonstrations are drawn from: training, else validation, else test (lm-eval).
    The fallback is logged as a warning when demonstrations are drawn (``k > 0``)."""
    for split in dict.fromkeys((spec.train_split, *DEMONSTRATION_SPLITS)):
        if _has_split(spec, split):
            if split != spec.train_split and k > 0:
                log.warning(
                    "task %s has no %r split: demonstrations come from its %r split instead",
                    spec.name, spec.train_split, split,
                )
            return split
    raise ValueError(
        f"task {spec.name!r} has none of the splits {[spec.train_split, *DEMONSTRATION_SPLITS]} to draw "
        f"demonstrations from; files: {dict(spec.files)}"
    )


def scoring_batches(
    requests: Sequence[Request], batch_size: int, block_size: int, rank: int = 0, world_size: int = 1
) -> list[list[int]]:
    """This rank's batches of request indices (see the module doc's order)."""
    order = sorted(range(len(requests)), key=lambda i: (-len(requests[i].context), i))[rank::world_size]
    batches: list[list[int]] = []
    width = longest = 0
    for i in order:
        context, answer = len(requests[i].context), max(map(len, requests[i].continuations))
        fits = max(width, context) + max(longest, answer) - 1 <= block_size
        if batches and len(batches[-1]) < batch_size and fits:
            batches[-1].append(i)
            width, longest = max(width, context), max(longest, answer)
        else:
            batches.append([i])
            width, longest = context, answer
    return batches


def left_padded(sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of token sequences left-padded with ``FILL_ID`` to the longest (mask 0 on
    padding); at least one column, so that an empty sequence is one row of padding."""
    width = max(1, *(len(s) for s in sequences))
    ids = torch.full((len(sequences), width), FILL_ID, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, width - len(s):] = torch.tensor(s)
        mask[i, width - len(s):] = 1
    return ids, mask


def right_padded(sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of token sequences right-padded with ``FILL_ID`` to the longest (mask 0 on padding)."""
    ids = torch.full((len(sequences), max(len(s) for s in sequences)), FILL_ID, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


def collate(requests: Sequence[Request]) -> dict[str, Any]:
    """Requests -> one batch of the contract (see the module doc)."""
    prefix_ids, prefix_mask = left_padded([r.context for r in requests])
    continuation_ids, continuation_mask = right_padded([c for r in requests for c in r.continuations])
    score_mask = continuation_mask.clone()
    starts = [start for r in requests for start in (r.scored_from or [0] * len(r.continuations))]
    for i, start in enumerate(starts):
        score_mask[i, :start] = 0
    unconditional = {}
    if requests[0].unconditional is not None:
        unconditional["unconditional_prefix"] = torch.tensor([requests[0].unconditional[0]])
        unconditional["unconditional_ids"], unconditional["unconditional_mask"] = right_padded(
            [c for r in requests for c in r.unconditional[1]]
        )
    return {
        "prefix_ids": prefix_ids,
        "prefix_mask": prefix_mask,
        "continuation_ids": continuation_ids,
        "continuation_mask": continuation_mask,
        "score_mask": score_mask,
        "num_choices": torch.tensor([len(r.continuations) for r in requests]),
        "choice_chars": torch.tensor([n for r in requests for n in r.choice_chars], dtype=torch.float),
        "labels": torch.tensor([r.label for r in requests]),
        "index": torch.tensor([r.index for r in requests]),
        "answers": [r.answers for r in requests],
        **unconditional,
    }


class InContextDataModule(TaskDataModule):
    """Scoring batches of a labelled task's eval splits, ``k`` demonstrations per example.

    After ``setup()``: ``spec`` (labels resolved), ``prompt`` (the ``PromptSpec`` used),
    ``eval_splits`` (``val_dataloader()`` returns one loader per split, in this order),
    ``truncated`` (split -> examples whose context was cut to fit ``block_size``),
    ``skipped_lines`` (split -> blank lines the reader skipped),
    ``chance_levels`` (split -> metric -> chance value, ``gptlab.tasks.chance``) and
    ``num_train_examples`` (the demonstration pool's size; 0 at ``k = 0``, which uses none).
    ``limit`` scores only each eval split's first examples (lm-eval's ``--limit``).
    Every check that needs no data (task kind, prompt name, ``k``) runs in ``__init__``.
    """

    NATURE = "incontext"
    # the kinds' in-context scorer (gptlab.tasks.kinds) this DataModule serves
    SCORER = "choice"

    def __init__(
        self,
        task: Mapping[str, Any],
        block_size: Annotated[int, POSITIVE],
        batch_size: Annotated[int, POSITIVE],
        k: Annotated[int, NON_NEGATIVE] = 0,
        fewshot_seed: int = 1234,
        prompt: str | None = None,
        num_workers: Annotated[int, NON_NEGATIVE] = 0,
        mutual_info: str | None = None,
        limit: Annotated[int, POSITIVE] | None = None,
    ) -> None:
        check_arguments(InContextDataModule.__init__, locals())
        self.mutual_info, self.limit = mutual_info, limit
        self.k, self._requested_prompt = k, prompt
        self.block_size, self.batch_size = block_size, batch_size
        super().__init__(task)  # checks the task (check_task), which may read the settings above
        self.fewshot_seed, self.num_workers = fewshot_seed, num_workers
        self.num_train_examples = 0
        self._requests: dict[str, list[Request]] = {}

    def check_task(self) -> None:
        self.prompt = check_incontext_task(self.spec, self._requested_prompt, self.mutual_info)
        self.prompt_name = self.prompt.name
        scorer = self.spec.task_kind.incontext
        if scorer != self.SCORER:
            raise ValueError(
                f"task {self.spec.name!r} (kind {self.spec.kind!r}) is scored by {scorer!r}, which the "
                f"regime's `{scorer}` node builds; {type(self).__name__} scores {self.SCORER!r} tasks"
            )

    def _read(self) -> tuple[str, dict[str, list[dict[str, Any]]]]:
        """The demonstration split's name and split -> normalised examples (labels resolved in spec)."""
        spec = self.spec
        if spec.train_limit is not None and self.k > 0:
            log.info(
                "task %s: train_limit=%d limits fine-tuning data only; demonstrations are drawn from "
                "the full training split, as lm-evaluation-harness draws them",
                spec.name, spec.train_limit,
            )
        source = demonstration_split(spec, self.k)
        if source == spec.train_split:
            everything = dataclasses.replace(spec, train_limit=None)
            spec, data = load_task(everything, skipped_lines=self.skipped_lines)
            self.spec = dataclasses.replace(spec, train_limit=self.spec.train_limit)
        else:
            data = {
                split: load_split(spec, split, self.skipped_lines)
                for split in dict.fromkeys([source, *spec.eval_splits])
            }
        if missing := [s for s in self.eval_splits if s not in data]:
            raise ValueError(
                f"task {spec.name!r}: no eval split(s) {missing}; the reader gave {sorted(data)}"
            )
        return source, data

    def setup(self, stage: str | None = None) -> None:
        if self._requests:
            return
        source, data = self._read()
        check_incontext_task(self.spec, self.prompt.name, self.mutual_info)  # labels: null is resolved now
        spec, prompt, pool = self.spec, self.prompt, data[source]
        for split in dict.fromkeys([source, *self.eval_splits]):
            check_labels(spec, split, data[split])
            check_template(spec.name, prompt, data[split][0], f"{split!r}")
        available = len(pool) - 1 if source in self.eval_splits else len(pool)
        if self.k > available:
            raise ValueError(
                f"regime.k={self.k}: task {spec.name!r} has only {available} demonstration examples in its "
                f"{source!r} split" + (" besides the evaluated one" if source in self.eval_splits else "")
            )
        train = data.get(spec.train_split)
        requests = {}
        for split in self.eval_splits:
            # lm-eval's --limit: the split's first examples; demonstrations still come from all
            examples = data[split][: self.limit]
            contexts = fewshot_contexts(prompt, examples, pool, self.k, self.fewshot_seed, split == source)
            try:
                requests[split] = self.encode(examples, contexts)
            except ValueError as err:
                raise ValueError(f"task {spec.name!r}, {split} {err}") from None
            self.truncated[split] = sum(r.truncated for r in requests[split])
            self.chance_levels[split] = chance_levels(spec, train, examples, self.mutual_info is not None)
            log.info(
                "task %s: %s: %d examples, prompt %r, k=%d (demonstrations from %r, fewshot_seed=%d), "
                "%d contexts truncated on the left to block_size=%d",
                spec.name, split, len(examples), prompt.name, self.k, source, self.fewshot_seed,
                self.truncated[split], self.block_size,
            )
        self.num_train_examples = len(pool) if self.k > 0 else 0
        self._requests = requests

    def encode(self, examples: list[dict[str, Any]], contexts: list[Context]) -> list[Any]:
        """The requests of one eval split (its examples and their contexts): what its loader serves."""
        labels, delimiter = [ex["label"] for ex in examples], self.prompt.target_delimiter
        if self.spec.kind == "multiple_input":
            return encode_multiple_input(
                contexts, [ex["choices"] for ex in examples], [ex["continuation"] for ex in examples],
                labels, delimiter, self.block_size,
            )
        unconditional = UNCONDITIONAL_CONTEXTS[self.mutual_info] if self.mutual_info else None
        choices = [answer_choices(self.prompt, ex) for ex in examples]
        return encode_requests(contexts, choices, labels, delimiter, self.block_size, unconditional)

    def requests(self, split: str) -> list[Request]:
        """The tokenized examples of eval split ``split``, in split order."""
        if not self._requests:
            raise RuntimeError("InContextDataModule: call setup() (or let the Trainer call it) first")
        return self._requests[split]

    def val_dataloader(self) -> list[DataLoader]:
        rank, world_size = self.rank_world()
        loaders = []
        for split in self.eval_splits:
            data = self.requests(split)
            batches = scoring_batches(data, self.batch_size, self.block_size, rank, world_size)
            loaders.append(
                DataLoader(
                    IndexedExamples(data),
                    sampler=batches,
                    batch_size=None,  # the sampler yields whole batches of indices
                    collate_fn=collate,
                    num_workers=self.num_workers,
                    persistent_workers=self.num_workers > 0,
                )
            )
        return loaders
