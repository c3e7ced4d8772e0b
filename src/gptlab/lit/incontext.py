"""In-context evaluation (GPT-2/GPT-3 zero-, one- and few-shot) as a LightningModule.

Every answer is scored by the summed log-likelihood of its continuation tokens, as
lm-evaluation-harness scores ``loglikelihood`` requests: ``acc`` picks the answer with the highest
sum, ``acc_norm`` the highest sum per character of the answer, and with the DataModule's
``mutual_info`` ``acc_mutual_info`` the highest sum minus the answer's sum after an unconditional
context (lm-eval's ``acc_mutual_info``; GPT-3's normalisation). The ``acc`` picks also feed the
task's own metrics, so a run logs the same names as fine-tuning (``val/acc``, ``val/f1``,
``val/mcc``; ``val/<split>/<metric>`` with several eval splits) plus ``val/acc_norm`` and
``val/n_truncated`` (examples whose context was cut to fit the model's window). Each example's
chosen answer goes to ``predictions`` (``PredictionLog``, written to ``predictions.jsonl``).

**Prefix sharing.** An example's context (demonstrations + question) runs through the backbone
once; every answer continues from a copy of its key/value cache, answers of similar length
together. The LM head, most of the cost (``gptlab.lit.head_scores``), runs once per distinct
state: all of an example's answers predict their first token from the context's last
state, and answers that agree on their first tokens share the states after them
(``shared_states``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping

import lightning.pytorch as pl
import torch
import torch.nn as nn

from gptlab.lit.predictions import PredictionLog
from gptlab.model.gpt import GPT
from gptlab.model.kv_cache import KVCache
from gptlab.lit.head_scores import token_scores
from gptlab.model.logit_buffer import LogitBuffer
from gptlab.report.results import N_TRUNCATED
from gptlab.tasks.metrics import Accuracy, build_metrics, val_prefix
from gptlab.tasks.spec import TaskSpec

Batch = Mapping[str, torch.Tensor]
# answers run through the backbone in groups of similar length, the cut that costs the fewest padded
# tokens plus this many a group (a call's fixed work: ~3.5 ms, some 100 answer tokens of gpt-micro on
# 2 cores). The former rule (an answer joins while >= half its group's longest) padded HellaSwag's
# answer tokens by 49%; against it, lm-eval loglikelihood time with 64: HellaSwag 0.91x, ARC-Easy
# 5-shot 0.94x, three-word answers 1.0x (16 and 256: 0.95-1.0x).
GROUP_COST_TOKENS = 64


def shared_states(example: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """An id (N, L) for the state before each token of answers (N, L) that continue the contexts
    ``example`` (N,): equal for two tokens exactly when their answers continue one context and agree
    on every token before them, so that the model's hidden state there is the same (all the first
    tokens of one question's answers, say)."""
    ids = torch.empty_like(answers)
    ids[:, 0] = example
    count = int(example.max()) + 1
    tokens = int(answers.max()) + 1  # padding included
    for t in range(1, answers.size(1)):
        # (state before t-1, token t-1) names the state before t
        distinct, inverse = torch.unique(ids[:, t - 1] * tokens + answers[:, t - 1], return_inverse=True)
        ids[:, t] = inverse + count
        count += distinct.numel()
    return ids


def continuation_scores(
    model: GPT, batch: Batch, greedy: bool = False, logits: LogitBuffer | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Summed log-likelihood (N,) of every answer of a batch (``gptlab.data.incontext`` contract),
    and with ``greedy`` whether each answer is the greedy continuation (every token the argmax:
    lm-eval's ``is_greedy``; else None). ``logits``: the evaluation's ``LogitBuffer``."""
    prefix, prefix_mask = batch["prefix_ids"], batch["prefix_mask"]
    answers, answer_mask = batch["continuation_ids"], batch["continuation_mask"]
    repeats = batch["num_choices"]
    padded = not bool(prefix_mask.all())
    # Left padding: every context ends in the last column, and its tokens keep positions 0, 1, ...
    positions = (prefix_mask.cumsum(1) - 1).clamp(min=0) if padded else None
    # One-token answers (most verbalizers) need nothing past the context: no cache at all.
    cache = model.new_cache() if answers.size(1) > 1 else None
    hidden = model.hidden_states(prefix, prefix_mask if padded else None, positions, cache)
    # state t of an answer predicts its token t: the context's last state, then the answer's own
    example = torch.repeat_interleave(torch.arange(repeats.numel(), device=repeats.device), repeats)
    states = [hidden[example, -1:]]
    if cache is not None:
        if prefix.size(1) + answers.size(1) - 1 > model.config.block_size:
            raise ValueError(
                f"a batch's widest context ({prefix.size(1)} tokens) and longest answer "
                f"({answers.size(1)}) do not fit block_size={model.config.block_size}; "
                "batch with gptlab.data.incontext.scoring_batches"
            )
        states.append(answer_states(model, cache, example, answers[:, :-1], answer_mask[:, :-1], prefix_mask.sum(1)))
    keep = batch.get("score_mask", answer_mask).bool()
    # one LM-head row per distinct state: its first token's, then those of answers that agree so far
    distinct, state = torch.unique(shared_states(example, answers)[keep], return_inverse=True)
    first = torch.full((distinct.numel(),), state.numel(), device=state.device)
    first.scatter_reduce_(0, state, torch.arange(state.numel(), device=state.device), "amin")
    hidden_kept = torch.cat(states, 1)[keep]
    logprobs, is_argmax = token_scores(model, hidden_kept[first], answers[keep], greedy, logits, state)
    rows = torch.arange(answers.size(0), device=answers.device)[:, None].expand_as(answers)[keep]
    loglik = torch.zeros(answers.size(0), device=answers.device).index_add_(0, rows, logprobs)
    if is_argmax is None:
        return loglik, None
    misses = torch.zeros(answers.size(0), device=answers.device).index_add_(0, rows, (~is_argmax).float())
    return loglik, misses == 0


def answer_states(
    model: GPT, cache: KVCache, example: torch.Tensor, steps: torch.Tensor, step_mask: torch.Tensor, start: torch.Tensor
) -> torch.Tensor:
    """The hidden state after each of ``steps`` (N, L), answers' tokens but their last (padding:
    ``step_mask`` 0): answer i continues row ``example[i]`` of the contexts' ``cache``, whose real
    length is ``start[example[i]]``. Answers run in groups of similar length (``length_groups``):
    padded to the batch's longest answer, most of the tokens were padding (59% in the zero-shot suite)."""
    lengths = step_mask.sum(1)
    out = None
    for group in length_groups(lengths.tolist()):
        rows = torch.tensor(group, device=steps.device)
        width = int(lengths[group[0]])
        mask = step_mask[rows, :width]
        positions = start[example[rows], None] + torch.arange(width, device=steps.device)
        hidden = model.hidden_states(
            steps[rows, :width], None if bool(mask.all()) else mask, positions, cache.take(example[rows], room=width)
        )
        if out is None:
            out = hidden.new_zeros((*steps.shape, hidden.size(-1)))
        out[rows, :width] = hidden
    return out


def length_groups(lengths: list[int]) -> list[list[int]]:
    """Indices of ``lengths`` from the longest down, cut into groups that each run padded to their
    first's length: the cut that costs the fewest tokens (padding included) plus
    ``GROUP_COST_TOKENS`` a group; zero lengths are left out."""
    order = sorted((i for i in range(len(lengths)) if lengths[i] > 0), key=lambda i: -lengths[i])
    # runs of one length: a cheapest cut never splits one (its part in the earlier, wider group pads
    # no more in the group its run starts)
    runs = [list(run) for _, run in itertools.groupby(order, key=lengths.__getitem__)]
    before = list(itertools.accumulate(map(len, runs), initial=0))  # answers in the runs before run j
    cost, cut = [0] + [math.inf] * len(runs), [0] * (len(runs) + 1)
    for j in range(1, len(runs) + 1):  # the best cut of runs[:j]: its last group is runs[i:j]
        for i in range(j):
            total = cost[i] + GROUP_COST_TOKENS + lengths[runs[i][0]] * (before[j] - before[i])
            if total < cost[j]:
                cost[j], cut[j] = total, i
    groups, j = [], len(runs)
    while j:
        groups.append([k for run in runs[cut[j] : j] for k in run])
        j = cut[j]
    return groups[::-1]


def choice_loglikelihoods(model: GPT, batch: Batch, logits: LogitBuffer | None = None) -> torch.Tensor:
    """Summed log-likelihood (N,) of every answer of a batch (``gptlab.data.incontext`` contract)."""
    return continuation_scores(model, batch, logits=logits)[0]


def unconditional_loglikelihoods(model: GPT, batch: Batch, logits: LogitBuffer | None = None) -> torch.Tensor:
    """Summed log-likelihood (N,) of every answer after the batch's ``unconditional_prefix``: one
    context shared by all the batch's answers, so it runs through the model once."""
    prefix = batch["unconditional_prefix"]
    answers = batch["unconditional_ids"]
    shared = {
        "prefix_ids": prefix,
        "prefix_mask": torch.ones_like(prefix),
        "continuation_ids": answers,
        "continuation_mask": batch["unconditional_mask"],
        "num_choices": torch.tensor([answers.size(0)], device=answers.device),
    }
    return continuation_scores(model, shared, logits=logits)[0]


def per_example(values: torch.Tensor, num_choices: torch.Tensor) -> torch.Tensor:
    """Per-answer ``values`` (N,) laid out as (B, most answers), missing answers at -inf."""
    example = torch.repeat_interleave(torch.arange(num_choices.numel(), device=values.device), num_choices)
    first = torch.cumsum(num_choices, 0) - num_choices
    slot = torch.arange(values.numel(), device=values.device) - first[example]
    out = values.new_full((num_choices.numel(), int(num_choices.max())), float("-inf"))
    out[example, slot] = values
    return out


class EvaluationModule(pl.LightningModule):
    """Base of the in-context modules: a frozen backbone ``model`` that only evaluates
    (``trainer.validate``; the in-context regimes set ``regime.fit: false``), configured in
    ``setup`` from its DataModule's task ``spec``, ``eval_splits`` and ``truncated`` (split ->
    examples cut to fit, logged as ``n_truncated``), writing per-example ``predictions``. ``logits``
    is the evaluation's ``LogitBuffer``, freed when it ends."""

    DATAMODULE = ""  # the DataModule it reads, for errors
    TRAINS = False  # a subclass that trains the backbone (gptlab.lit.sft) lets trainer.fit run

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model = model
        self.eval_splits: list[str] = []
        self.truncated: dict[str, int] = {}
        self.val_metrics = nn.ModuleList()
        self.predictions = PredictionLog()
        self.logits = LogitBuffer()

    def setup(self, stage: str) -> None:
        name = type(self).__name__
        if stage == "fit" and not self.TRAINS:
            raise ValueError(f"{name} does not train: run trainer.validate (regime.fit: false)")
        datamodule = self.trainer.datamodule
        if not all(hasattr(datamodule, key) for key in ("spec", "eval_splits", "truncated")):
            raise ValueError(
                f"{name} needs a DataModule that exposes the task `spec`, `eval_splits` and `truncated` "
                f"({self.DATAMODULE})"
            )
        self.configure_task(datamodule.spec, list(datamodule.eval_splits), dict(datamodule.truncated))

    def configure_task(self, spec: TaskSpec, eval_splits: list[str], truncated: dict[str, int]) -> None:
        raise NotImplementedError

    def on_validation_epoch_start(self) -> None:
        self.predictions.reset(self.eval_splits)

    def compute_metrics(self) -> dict[str, torch.Tensor]:
        """The epoch's metrics by logged name (``val/...``, synced across ranks), every metric state
        reset after: what the epoch's end logs, and what in-loop evaluation (``gptlab.lit.inloop``)
        reads without a Trainer of its own."""
        raise NotImplementedError

    def on_validation_epoch_end(self) -> None:
        self.logits.clear()
        logs = self.compute_metrics()
        self.predictions.gather()
        self.log_dict(logs, prog_bar=True)


class InContextModule(EvaluationModule):
    """Scores the answers of ``gptlab.data.incontext`` batches with a frozen backbone ``model``
    (see ``EvaluationModule``); metrics are ``acc``, the task's own and ``acc_norm``."""

    DATAMODULE = "gptlab.data.incontext.InContextDataModule"

    def __init__(self, model: GPT) -> None:
        super().__init__(model)
        self.val_acc_norm = nn.ModuleList()
        self.val_acc_mutual_info = nn.ModuleList()  # updated by batches with unconditional scores

    def configure_task(self, spec: TaskSpec, eval_splits: list[str], truncated: dict[str, int]) -> None:
        """Per-split metrics for ``spec`` (labels resolved): ``acc`` + the task's metrics, ``acc_norm``."""
        with_acc = dataclasses.replace(spec, metrics=list(dict.fromkeys(["acc", *spec.metrics])))
        self.eval_splits, self.truncated = eval_splits, truncated
        self.val_metrics = nn.ModuleList(build_metrics(with_acc) for _ in eval_splits)
        self.val_acc_norm = nn.ModuleList(Accuracy() for _ in eval_splits)
        self.val_acc_mutual_info = nn.ModuleList(Accuracy() for _ in eval_splits)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Per-answer scores laid out (B, most answers), -inf padded: ``loglik``, ``normed`` (per
        character) and, when the batch has unconditional answers, ``unconditional``."""
        loglik = choice_loglikelihoods(self.model, batch, self.logits)
        # lm-eval's acc_norm divides by len(choice) in characters, the choice as doc_to_choice
        # gives it (without the target delimiter): choice_chars holds exactly that length.
        scores = {"loglik": loglik, "normed": loglik / batch["choice_chars"]}
        if "unconditional_ids" in batch:
            scores["unconditional"] = unconditional_loglikelihoods(self.model, batch, self.logits)
        return {name: per_example(value, batch["num_choices"]) for name, value in scores.items()}

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        scores = self(batch)
        loglik, labels = scores["loglik"], batch["labels"]
        picks, picks_norm = loglik.argmax(1), scores["normed"].argmax(1)
        self.val_metrics[dataloader_idx].update(picks, labels)
        self.val_acc_norm[dataloader_idx].update(picks_norm, labels)
        records = [
            {"index": index, "chosen": answers[pick], "chosen_norm": answers[pick_norm],
             "gold": answers[label], "correct": pick == label, "loglikelihoods": row[: len(answers)]}
            for index, answers, pick, pick_norm, label, row in zip(
                batch["index"].tolist(), batch["answers"], picks.tolist(), picks_norm.tolist(),
                labels.tolist(), loglik.tolist(),
            )
        ]
        if "unconditional" in scores:
            picks_info = (loglik - scores["unconditional"]).nan_to_num(nan=float("-inf")).argmax(1)
            self.val_acc_mutual_info[dataloader_idx].update(picks_info, labels)
            for record, answers, pick, row in zip(
                records, batch["answers"], picks_info.tolist(), scores["unconditional"].tolist()
            ):
                record["chosen_mutual_info"] = answers[pick]
                record["unconditional_loglikelihoods"] = row[: len(answers)]
        self.predictions.add(self.eval_splits[dataloader_idx], records)

    def compute_metrics(self) -> dict[str, torch.Tensor]:
        logs = {}
        for i, split in enumerate(self.eval_splits):
            prefix = val_prefix(split, self.eval_splits)
            logs.update({f"{prefix}{name}": value for name, value in self.val_metrics[i].compute().items()})
            logs[f"{prefix}acc_norm"] = self.val_acc_norm[i].compute()
            if self.val_acc_mutual_info[i].update_called:
                logs[f"{prefix}acc_mutual_info"] = self.val_acc_mutual_info[i].compute()
            logs[f"{prefix}{N_TRUNCATED}"] = torch.tensor(float(self.truncated.get(split, 0)))
            for metric in (self.val_metrics[i], self.val_acc_norm[i], self.val_acc_mutual_info[i]):
                metric.reset()
        return logs
