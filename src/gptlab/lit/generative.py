"""In-context evaluation of generation tasks (GPT-2/GPT-3's LAMBADA, TriviaQA) as a LightningModule.

Two scorers, as lm-evaluation-harness has them, chosen by the task's metrics:

* ``exact_match``, ``f1`` (``generate_until``): the model continues each prompt greedily
  (``gptlab.model.greedy``), the generation is cut before the first stop string
  (``task.generation``) and compared with every target after normalisation (``gptlab.tasks.answers``);
* ``acc``, ``perplexity``, ``ppl`` (``loglikelihood``): the first target is scored as a
  continuation of the context: ``acc`` when every one of its tokens is the greedy argmax,
  ``perplexity`` the exponential of its mean negative log-likelihood over the examples, ``ppl``
  over the target tokens (an instruction task's response perplexity).

Metrics are logged as ``val/<metric>`` (``val/<split>/<metric>`` with several eval splits), with
``val/n_truncated``; each example's generation and scores go to ``predictions`` (``PredictionLog``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from gptlab.data.tokenizer import get_tokenizer
from gptlab.lit.incontext import EvaluationModule, continuation_scores
from gptlab.model.greedy import greedy_until
from gptlab.report.results import N_TRUNCATED
from gptlab.tasks.answers import answer_end, answer_scores, cut_answer
from gptlab.tasks.metrics import build_metrics, generation_needs, val_prefix
from gptlab.tasks.spec import TaskSpec

# the per-example record entry each metric averages (perplexity: of the target's log-likelihood)
RECORD_KEYS = {"perplexity": "target_loglikelihood", "ppl": "target_loglikelihood"}
# metrics averaged per target token: each example's value is divided by, and weighted with, its tokens
PER_TOKEN = ("ppl",)


class GenerativeModule(EvaluationModule):
    """Scores ``gptlab.data.generative`` batches with a frozen backbone ``model`` (see ``EvaluationModule``)."""

    DATAMODULE = "gptlab.data.generative.GenerativeDataModule"

    def configure_task(self, spec: TaskSpec, eval_splits: list[str], truncated: dict[str, int]) -> None:
        """Per-split metrics of ``spec`` and its decoding and matching rules."""
        self.spec, self.rules = spec, spec.generation_spec
        self.eval_splits, self.truncated = eval_splits, truncated
        self.val_metrics = nn.ModuleList(build_metrics(spec) for _ in eval_splits)
        self.generates, self.scores_target = generation_needs(spec)

    def generate(self, batch: Mapping[str, Any], rows: list[int] | None = None) -> list[str]:
        """The answer each prompt of ``batch`` (of its ``rows``: all when None) generates, cut at
        its end, not yet stripped."""
        rules, decode = self.rules, get_tokenizer().decode
        ids, mask = batch["prompt_ids"], batch["prompt_mask"]
        if rows is not None:
            ids, mask = ids[rows], mask[rows]
        tokens = greedy_until(self.model, ids, mask, rules.max_gen_toks, lambda text: answer_end(text, rules))
        return [cut_answer(decode(row), rules) for row in tokens]

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        records: list[dict[str, Any]] = [
            {"index": int(i), "targets": targets} for i, targets in zip(batch["index"].tolist(), batch["targets"])
        ]
        if self.generates:
            for record, generation in zip(records, self.generate(batch)):
                scores = answer_scores(generation, record["targets"], self.rules)
                record.update(generation=generation, correct=bool(scores["exact_match"]), **scores)
        elif sampled := [row for row, record in enumerate(records) if record["index"] < self.rules.samples]:
            for row, generation in zip(sampled, self.generate(batch, sampled)):
                records[row]["generation"] = generation.strip()
        if self.scores_target:
            loglik, greedy = continuation_scores(self.model, batch, greedy=True, logits=self.logits)
            tokens = batch["continuation_mask"].sum(1).tolist()
            for record, ll, n, is_greedy in zip(records, loglik.tolist(), tokens, greedy.tolist()):
                record.update(target_loglikelihood=ll, target_tokens=n, acc=float(is_greedy))
                record.setdefault("correct", bool(is_greedy))
        self.update_metrics(dataloader_idx, records)
        self.predictions.add(self.eval_splits[dataloader_idx], records)

    def update_metrics(self, dataloader_idx: int, records: list[dict[str, Any]]) -> None:
        """Feed one batch's per-example records to the split's metrics."""
        metrics = self.val_metrics[dataloader_idx]
        for name in self.spec.metrics:
            values = torch.tensor([r[RECORD_KEYS.get(name, name)] for r in records], dtype=torch.float64)
            if name in PER_TOKEN:
                tokens = torch.tensor([r["target_tokens"] for r in records], dtype=torch.float64)
                metrics[name].update((values / tokens).to(self.device), weight=tokens.to(self.device))
            else:
                metrics[name].update(values.to(self.device))

    def compute_metrics(self) -> dict[str, torch.Tensor]:
        logs = {}
        for i, split in enumerate(self.eval_splits):
            prefix = val_prefix(split, self.eval_splits)
            logs.update({f"{prefix}{name}": value for name, value in self.val_metrics[i].compute().items()})
            logs[f"{prefix}{N_TRUNCATED}"] = torch.tensor(float(self.truncated.get(split, 0)))
            self.val_metrics[i].reset()
        return logs

