"""``BackboneModule``: what every gptlab LightningModule that trains the backbone shares.

AdamW with torch's fused kernel (CUDA and CPU), gradient clipping that works with it and with
FSDP's sharded gradients, and checkpoints that record the backbone's ``GPTConfig`` (so any of them
can seed a new run through ``model.init_from``).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import GradClipAlgorithmType

from gptlab.model.checkpoint import CONFIG_KEY
from gptlab.model.gpt import GPT

# Devices where AdamW runs fused: one kernel per tensor instead of a dozen element-wise passes. On
# the CPU that is ~10x faster for gpt-mini (its 50k-row embedding makes the step memory-bound).
FUSED_ADAMW_DEVICES = ("cuda", "cpu")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay the weights of linear layers and embeddings, never biases or LayerNorm gains.

    Chosen by module type rather than by shape: under FSDP the optimizer is built after sharding,
    when every parameter is a 1-D view of its shard.
    """
    matrices = {id(m.weight) for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Embedding))}
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if id(p) in matrices], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) not in matrices], "weight_decay": 0.0},
    ]


# GPT-1's fine-tuning optimizer (section 4.1): the defaults of both fine-tuning modules
# (gptlab.lit.finetune with a task head, gptlab.lit.sft on the answer tokens)
FINETUNE_LR = 6.25e-5
FINETUNE_WEIGHT_DECAY = 0.01
FINETUNE_WARMUP_RATIO = 0.002
FINETUNE_BETAS = (0.9, 0.999)
FINETUNE_EPS = 1e-8


def warmup_linear(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate multiplier: linear warm-up, then linear decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


class BackboneModule(pl.LightningModule):
    """Base of the modules that train ``self.model`` (a ``GPT``)."""

    model: GPT

    def adamw(self, lr: float, weight_decay: float, betas: tuple[float, float], eps: float) -> torch.optim.AdamW:
        """AdamW over ``param_groups(self)``; fused (``FUSED_ADAMW_DEVICES``) unless fp16's loss scaler must
        unscale first."""
        fp16_scaler = self._trainer is not None and str(self.trainer.precision) == "16-mixed"
        return torch.optim.AdamW(
            param_groups(self, weight_decay),
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            fused=self.device.type in FUSED_ADAMW_DEVICES and not fp16_scaler,
        )

    def adamw_warmup_linear(
        self, lr: float, weight_decay: float, betas: tuple[float, float], eps: float, warmup_ratio: float
    ) -> dict[str, Any]:
        """``configure_optimizers``'s answer for fine-tuning (GPT-1): ``adamw``, its learning rate
        warmed up over ``warmup_ratio`` of the run's steps, then decayed linearly to 0."""
        optimizer = self.adamw(lr, weight_decay, betas, eps)
        total = int(self.trainer.estimated_stepping_batches)
        warmup = int(warmup_ratio * total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_linear(step, warmup, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        plugin = self.trainer.precision_plugin
        if isinstance(self.trainer.strategy, FSDPStrategy) and gradient_clip_val:
            if GradClipAlgorithmType(gradient_clip_algorithm or "norm") == GradClipAlgorithmType.NORM:
                # Each rank holds a shard of the gradients: only the root FSDP module's clip_grad_norm_
                # reduces the norm over all of them (Lightning's FSDP plugin refuses norm clipping).
                self.trainer.strategy.model.clip_grad_norm_(gradient_clip_val)
                return
        if isinstance(plugin, MixedPrecision) and plugin.scaler is None and gradient_clip_val:
            # Lightning's mixed-precision plugin refuses to clip for an optimizer that unscales its
            # own gradients (fused AdamW), for fp16's sake. bf16 has no loss scaler: the gradients
            # are already true gradients here, so the plain clipping is exact.
            algorithm = GradClipAlgorithmType(gradient_clip_algorithm or "norm")
            Precision.clip_gradients(plugin, optimizer, gradient_clip_val, algorithm)
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = self.model.config.to_dict()
