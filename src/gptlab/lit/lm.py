"""Language-model pre-training as a LightningModule."""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch
from torchmetrics import MeanMetric

from gptlab.bounds import BETAS, NON_NEGATIVE, POSITIVE, Bound, check_arguments
from gptlab.lit.base import BackboneModule
from gptlab.lit.throughput import flops_per_token
from gptlab.model.gpt import GPT


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine decay to ``min_lr_ratio``."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if step >= total_steps:
        return min_lr_ratio
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr_ratio + 0.5 * (1.0 - min_lr_ratio) * (1.0 + math.cos(math.pi * progress))


class LMModule(BackboneModule):
    """Next-token prediction on (x, y) windows; logs loss, perplexity and learning rate."""

    def __init__(
        self,
        model: GPT,
        lr: Annotated[float, POSITIVE] = 6e-4,
        weight_decay: Annotated[float, NON_NEGATIVE] = 0.1,
        betas: Annotated[tuple[float, float], BETAS] = (0.9, 0.95),
        eps: Annotated[float, POSITIVE] = 1e-8,
        warmup_steps: Annotated[int, NON_NEGATIVE] = 100,
        min_lr_ratio: Annotated[float, Bound(gt=0, le=1)] = 0.1,
    ) -> None:
        check_arguments(LMModule.__init__, locals())
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self.val_loss = MeanMetric()
        self.flops_per_token = 0.0

    def setup(self, stage: str) -> None:
        if self.trainer is not None and self.trainer.datamodule is not None:
            seq_len = self.trainer.datamodule.block_size
            self.flops_per_token = flops_per_token(self.model.config, seq_len, self.model.num_params())

    @staticmethod
    def tokens_per_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> int:
        return batch[0].numel()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.model.lm_loss(self.model.hidden_states(x), y)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        loss = self.model.lm_loss(self.model.hidden_states(x), y)
        self.val_loss.update(loss, weight=y.numel())  # a token-weighted mean, synced across ranks

    def on_validation_epoch_end(self) -> None:
        loss = self.val_loss.compute()
        self.val_loss.reset()
        self.log_dict({"val/loss": loss, "val/ppl": torch.exp(loss)}, prog_bar=True)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = self.adamw(hp.lr, hp.weight_decay, hp.betas, hp.eps)
        total = self.trainer.max_steps if self.trainer.max_steps > 0 else self.trainer.estimated_stepping_batches
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: warmup_cosine(step, hp.warmup_steps, int(total), hp.min_lr_ratio),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
