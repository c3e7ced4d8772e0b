"""Supervised fine-tuning of a generation task (instruction tuning included) as a LightningModule.

Training minimises the LM head's cross-entropy on the response tokens only (``gptlab.data.sft``
masks the prompt and the padding); there is no task head and no auxiliary loss, since the task is
language modelling already. Validation is the task's zero-shot evaluation
(``gptlab.lit.generative.GenerativeModule``: generations, exact match, F1, ``acc``, perplexities)
plus ``val/loss``, the response's negative log-likelihood per token, which the best checkpoint
follows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import torch
import torch.nn as nn
from torchmetrics import MeanMetric

from gptlab.bounds import BETAS, FRACTION, NON_NEGATIVE, POSITIVE, check_arguments
from gptlab.lit.base import (
    FINETUNE_BETAS,
    FINETUNE_EPS,
    FINETUNE_LR,
    FINETUNE_WARMUP_RATIO,
    FINETUNE_WEIGHT_DECAY,
    BackboneModule,
)
from gptlab.lit.generative import GenerativeModule
from gptlab.lit.throughput import flops_per_token
from gptlab.model.gpt import GPT
from gptlab.tasks.metrics import val_prefix
from gptlab.tasks.spec import TaskSpec


class SFTModule(GenerativeModule, BackboneModule):
    """Backbone ``model`` fine-tuned on ``gptlab.data.sft`` batches (see the module doc)."""

    DATAMODULE = "gptlab.data.sft.SFTDataModule"
    TRAINS = True

    def __init__(
        self,
        model: GPT,
        lr: Annotated[float, POSITIVE] = FINETUNE_LR,
        weight_decay: Annotated[float, NON_NEGATIVE] = FINETUNE_WEIGHT_DECAY,
        warmup_ratio: Annotated[float, FRACTION] = FINETUNE_WARMUP_RATIO,
        betas: Annotated[tuple[float, float], BETAS] = FINETUNE_BETAS,
        eps: Annotated[float, POSITIVE] = FINETUNE_EPS,
    ) -> None:
        check_arguments(SFTModule.__init__, locals())
        super().__init__(model)
        self.save_hyperparameters(ignore=["model"])
        self.val_losses = nn.ModuleList()
        self.flops_per_token = 0.0

    def configure_task(self, spec: TaskSpec, eval_splits: list[str], truncated: dict[str, int]) -> None:
        super().configure_task(spec, eval_splits, truncated)
        self.scores_target = True  # for val/loss, whatever the task's metrics
        self.val_losses = nn.ModuleList(MeanMetric().set_dtype(torch.float64) for _ in eval_splits)
        self.flops_per_token = flops_per_token(
            self.model.config, self.trainer.datamodule.block_size, self.model.num_params()
        )

    @staticmethod
    def tokens_per_batch(batch: Mapping[str, torch.Tensor]) -> int:
        """Tokens the model read (padding not counted)."""
        mask = batch.get("attention_mask")
        return int(mask.sum()) if mask is not None else int((batch["segment_ids"] > 0).sum())

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        hidden = self.model.hidden_states(
            batch["input_ids"], batch.get("attention_mask"), batch.get("position_ids"),
            segment_ids=batch.get("segment_ids"),
        )
        loss = self.model.lm_loss(hidden, batch["targets"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def update_metrics(self, dataloader_idx: int, records: list[dict[str, Any]]) -> None:
        super().update_metrics(dataloader_idx, records)
        loglik = torch.tensor([r["target_loglikelihood"] for r in records], dtype=torch.float64)
        tokens = torch.tensor([r["target_tokens"] for r in records], dtype=torch.float64)
        self.val_losses[dataloader_idx].update((-loglik / tokens).to(self.device), weight=tokens.to(self.device))

    def on_validation_epoch_end(self) -> None:
        logs = {}
        for i, split in enumerate(self.eval_splits):
            logs["val/loss" if i == 0 else f"{val_prefix(split, self.eval_splits)}loss"] = self.val_losses[i].compute()
            self.val_losses[i].reset()
        self.log_dict(logs, prog_bar=True)
        super().on_validation_epoch_end()

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        return self.adamw_warmup_linear(hp.lr, hp.weight_decay, hp.betas, hp.eps, hp.warmup_ratio)
