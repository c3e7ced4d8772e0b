"""Tokens/s and model FLOPs utilisation (MFU) of training steps."""

from __future__ import annotations

import functools
import time
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.throughput import get_available_flops

from gptlab.model.gpt import GPTConfig


def flops_per_token(config: GPTConfig, seq_len: int, n_params: int) -> float:
    """Training FLOPs per token: 6N for the matmuls plus attention's 12·L·d·T (PaLM, appendix B)."""
    return 6.0 * n_params + 12.0 * config.n_layer * config.n_embd * seq_len


@functools.cache
def measured_cpu_peak_flops(size: int = 2048, repeats: int = 5) -> float:
    """fp32 matmul FLOP/s of this CPU with torch's current thread count (best of ``repeats``)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def device_peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """The accelerator's dense peak from Lightning's table; on CPU, a measured matmul peak."""
    if device.type == "cpu":
        return measured_cpu_peak_flops()
    return get_available_flops(device, dtype)


class ThroughputLogger(pl.Callback):
    """Logs ``perf/tokens_per_sec`` and ``perf/mfu`` over each optimizer step.

    The module must expose ``tokens_per_batch(batch)`` and ``flops_per_token``; steps include
    gradient accumulation, so both count every micro-batch of the step.
    """

    def __init__(self, log_every_n_steps: int = 10) -> None:
        self.log_every_n_steps = log_every_n_steps
        self._tokens = 0
        self._start: float | None = None
        self._peak: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dtype = torch.bfloat16 if "bf16" in str(trainer.precision) else torch.float32
        self._peak = device_peak_flops(pl_module.device, dtype)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self._start is None:
            self._start = time.perf_counter()
        self._tokens += pl_module.tokens_per_batch(batch)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        step_done = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        if not step_done or trainer.global_step % self.log_every_n_steps or self._start is None:
            return
        elapsed = time.perf_counter() - self._start
        tokens_per_sec = self._tokens * trainer.world_size / elapsed
        metrics = {"perf/tokens_per_sec": tokens_per_sec}
        if self._peak:
            metrics["perf/mfu"] = tokens_per_sec * pl_module.flops_per_token / (self._peak * trainer.world_size)
        pl_module.log_dict(metrics, on_step=True, on_epoch=False, rank_zero_only=True)
        self._tokens, self._start = 0, time.perf_counter()
