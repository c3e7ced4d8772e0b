"""Supervised fine-tuning (GPT-1 section 3.2-3.3) as a LightningModule.

The objective is the task loss plus ``lm_lambda`` times the language-modelling loss on the task
text, which the paper found improves generalisation and speeds convergence. Batches follow the
contract of ``gptlab.data.labeled``: ``input_ids`` (B, S, T) with S sequences per example.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import torch
import torch.nn as nn
from torchmetrics import MeanMetric

from gptlab.bounds import BETAS, FRACTION, NON_NEGATIVE, POSITIVE, check_arguments
from gptlab.data.contract import TaskDataModule
from gptlab.lit.base import (
    FINETUNE_BETAS,
    FINETUNE_EPS,
    FINETUNE_LR,
    FINETUNE_WARMUP_RATIO,
    FINETUNE_WEIGHT_DECAY,
    BackboneModule,
)
from gptlab.lit.predictions import PredictionLog
from gptlab.lit.throughput import flops_per_token
from gptlab.model.gpt import GPT
from gptlab.model.heads import TaskHead
from gptlab.tasks.kinds import KINDS
from gptlab.tasks.metrics import IGNORE_INDEX, build_metrics, val_prefix
from gptlab.tasks.spec import TaskSpec

Batch = Mapping[str, torch.Tensor]


def per_word(values: torch.Tensor, word_index: torch.Tensor, words: int | None = None) -> torch.Tensor:
    """Token-level ``values`` (B, T) moved to word slots (B, ``words``) via ``word_index``; -100
    fills the slots of words no token stands for (padding, words cut by truncation).

    ``word_index`` is the word number at each word's first sub-token and -1 elsewhere, so only
    the first sub-token of each word speaks for it (the GPT-1/BERT NER convention). ``words``
    defaults to the most words any row has a token for.
    """
    starts = word_index >= 0
    rows = torch.arange(values.size(0), device=values.device)[:, None].expand_as(word_index)
    width = int(word_index.max()) + 1 if words is None else words
    out = values.new_full((values.size(0), width), IGNORE_INDEX)
    out[rows[starts], word_index[starts]] = values[starts]
    return out


class FinetuneModule(BackboneModule):
    """Backbone ``model`` plus a task head, trained on task loss + ``lm_lambda`` × LM loss.

    The head is built in ``setup`` from the DataModule's ``spec``, whose labels may be read from
    the training data. Validation keeps one metric collection per eval split and logs
    ``val/<metric>`` (one split) or ``val/<split>/<metric>`` (several, e.g. MNLI matched and
    mismatched). ``val/loss`` is the task loss on the first eval split, the one model selection
    follows; other splits log theirs as ``val/<split>/loss``. A head with one answer per example
    (classification, entailment, multiple choice) records each example's ``chosen`` and ``gold``
    answer in ``predictions`` (``predictions.jsonl``; its bootstrap standard error).
    """

    def __init__(
        self,
        model: GPT,
        task: Mapping[str, Any],
        lm_lambda: Annotated[float, NON_NEGATIVE] = 0.5,
        lr: Annotated[float, POSITIVE] = FINETUNE_LR,
        weight_decay: Annotated[float, NON_NEGATIVE] = FINETUNE_WEIGHT_DECAY,
        warmup_ratio: Annotated[float, FRACTION] = FINETUNE_WARMUP_RATIO,
        classifier_dropout: Annotated[float, FRACTION] = 0.1,
        betas: Annotated[tuple[float, float], BETAS] = FINETUNE_BETAS,
        eps: Annotated[float, POSITIVE] = FINETUNE_EPS,
    ) -> None:
        check_arguments(FinetuneModule.__init__, locals())
        super().__init__()
        spec = TaskSpec.from_config(task)
        if spec.task_kind.head is None:
            fine_tuned = [name for name, kind in KINDS.items() if kind.head is not None]
            raise ValueError(f"fine-tuning runs tasks of kind {', '.join(fine_tuned)}; task kind is {spec.kind!r}")
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        if lm_lambda == 0 and model.lm_head is not None:
            # without the LM loss an untied head gets no gradient: frozen, DDP does not wait for one
            model.lm_head.requires_grad_(False)
        self.head: TaskHead | None = None
        self.eval_splits: list[str] = []
        self.val_metrics = nn.ModuleList()
        self.val_losses = nn.ModuleList()
        self.predictions = PredictionLog()
        self.answer_names: list[str] | None = None
        self.flops_per_token = 0.0

    def setup(self, stage: str) -> None:
        if self.head is not None:  # fit then validate: keep the trained head
            return
        datamodule = self.trainer.datamodule
        if not isinstance(datamodule, TaskDataModule):
            raise ValueError(
                "FinetuneModule needs a gptlab DataModule (gptlab.data.contract.TaskDataModule) that "
                "exposes the task `spec` and `eval_splits`: gptlab.data.labeled.LabeledDataModule"
            )
        self.configure_task(datamodule.spec, list(datamodule.eval_splits))
        seq_len = getattr(datamodule, "block_size", self.model.config.block_size)
        self.flops_per_token = flops_per_token(self.model.config, seq_len, self.model.num_params())

    def configure_task(self, spec: TaskSpec, eval_splits: list[str]) -> None:
        """Build the head and the per-split validation metrics for ``spec`` (labels resolved)."""
        shape = spec.task_kind.head
        num_labels = 1 if spec.task_kind.label == "choice" else spec.num_labels
        self.head = TaskHead(
            shape, self.model.config.n_embd, num_labels, self.hparams.classifier_dropout, spec.regression
        )
        self.eval_splits = eval_splits
        self.answer_names = list(spec.labels) if spec.labels and spec.task_kind.label == "class" else None
        self.val_metrics = nn.ModuleList(build_metrics(spec) for _ in eval_splits)
        self.val_losses = nn.ModuleList(MeanMetric() for _ in eval_splits)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(task scores, backbone hidden states (B, S, T, C)) for one batch."""
        ids = batch["input_ids"]
        B, S, T = ids.shape
        hidden = self.model.hidden_states(ids.view(B * S, T), batch["attention_mask"].view(B * S, T))
        hidden = hidden.view(B, S, T, -1)
        return self.head(hidden, batch["extract_index"], batch["sequence_mask"]), hidden

    @staticmethod
    def tokens_per_batch(batch: Batch) -> int:
        """Tokens the model read (padding not counted)."""
        return int(batch["attention_mask"].sum())

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        scores, hidden = self(batch)
        task_loss = self.head.loss(scores, batch["labels"])
        logs = {"train/task_loss": task_loss}
        loss = task_loss
        if self.hparams.lm_lambda > 0:  # λ = 0 skips the LM head, the costliest matmul here
            lm_loss = self.model.lm_loss(hidden, batch["lm_targets"])
            loss = task_loss + self.hparams.lm_lambda * lm_loss
            logs["train/lm_loss"] = lm_loss
        self.log_dict(logs, on_step=True, on_epoch=False)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        scores, _ = self(batch)
        labels = batch["labels"]
        loss = self.head.loss(scores, labels)
        preds = self.head.predict(scores)
        if self.head.shape == "per_token":
            # the loss is a mean over labelled tokens, so weight it by their count
            self.val_losses[dataloader_idx].update(loss, weight=(labels != IGNORE_INDEX).sum())
            # scored against every word of the sentences: a word cut by truncation has no
            # prediction (-100), so its gold entities count as missed, as on the full text
            labels = batch["word_labels"]
            preds = per_word(preds, batch["word_index"], labels.size(1))
        else:
            self.val_losses[dataloader_idx].update(loss, weight=labels.size(0))
            if self.head.regression:
                preds, labels = preds.float(), labels.float()
            elif "index" in batch:
                self.record_answers(dataloader_idx, batch["index"], preds, labels)
        self.val_metrics[dataloader_idx].update(preds, labels)

    def record_answers(self, dataloader_idx: int, index: torch.Tensor, preds: torch.Tensor, labels: torch.Tensor) -> None:
        """Each example's chosen and gold answer (a class name, else the answer's index)."""
        name = (lambda i: self.answer_names[i]) if self.answer_names else (lambda i: i)
        self.predictions.add(self.eval_splits[dataloader_idx], [
            {"index": i, "chosen": name(p), "gold": name(g), "correct": p == g}
            for i, p, g in zip(index.tolist(), preds.tolist(), labels.tolist())
        ])

    def on_validation_epoch_start(self) -> None:
        self.predictions.reset(self.eval_splits)

    def on_validation_epoch_end(self) -> None:
        self.predictions.gather()
        logs = {}
        for i, split in enumerate(self.eval_splits):
            prefix = val_prefix(split, self.eval_splits)
            logs.update({f"{prefix}{name}": value for name, value in self.val_metrics[i].compute().items()})
            logs["val/loss" if i == 0 else f"{prefix}loss"] = self.val_losses[i].compute()
            self.val_metrics[i].reset()
            self.val_losses[i].reset()
        self.log_dict(logs, prog_bar=True)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        return self.adamw_warmup_linear(hp.lr, hp.weight_decay, hp.betas, hp.eps, hp.warmup_ratio)
