"""gptlab's Lightning training loop (LMModule + Trainer) vs a plain PyTorch loop over the same work.

Both sides train a fresh gpt-mini (same initial weights) on the same pre-made batches from the same
DataLoader, with the same AdamW groups and settings, gradient clipping at 1.0 (conf/trainer) and the
warm-up + cosine LR schedule stepped every step. The Trainer runs as gptlab's does on the CPU
(fp32, one device) with logger, checkpointing, progress bar and model summary off, so what is left
is the loop itself: hooks, the optimizer closure, ``self.log`` of the loss, the scheduler handling.
A run times ``TIMED_STEPS`` steps after ``WARMUP_STEPS`` warm-up steps (Trainer set-up excluded);
runs alternate. Target: Lightning's throughput >= 0.95x the plain loop's.
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

import common
from gptlab.lit.lm import LMModule, warmup_cosine
from gptlab.model.gpt import GPT, GPTConfig
from gptlab.resources import config_dir

TARGET = 0.95
WARMUP_STEPS = 1
TIMED_STEPS = 5


def gradient_clip_val() -> float:
    return float(OmegaConf.load(config_dir() / "trainer" / "default.yaml").gradient_clip_val)


class StepTimer(pl.Callback):
    """Seconds from the end of step ``start_after`` to the end of the run's last step."""

    def __init__(self, start_after: int, last: int) -> None:
        self.start_after, self.last = start_after, last
        self.start = self.elapsed = float("nan")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx == self.start_after:
            self.start = time.perf_counter()
        elif batch_idx == self.last:
            self.elapsed = time.perf_counter() - self.start


def lightning_run(config: GPTConfig, state: dict[str, torch.Tensor], loader: DataLoader) -> float:
    model = GPT(config)
    model.load_state_dict(state)
    module = LMModule(model, **common.pretrain_settings())
    timer = StepTimer(WARMUP_STEPS - 1, len(loader) - 1)
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=1,
            precision="32-true",
            max_steps=len(loader),
            max_epochs=1,
            gradient_clip_val=gradient_clip_val(),
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            use_distributed_sampler=False,
            callbacks=[timer],
            default_root_dir=root,
        )
        trainer.fit(module, train_dataloaders=loader)
    assert trainer.global_step == len(loader), trainer.global_step
    return timer.elapsed


def plain_run(config: GPTConfig, state: dict[str, torch.Tensor], loader: DataLoader) -> float:
    model = GPT(config).train()
    model.load_state_dict(state)
    hp = common.pretrain_settings()
    optimizer = common.adamw(model)
    total = len(loader)  # LMModule's schedule length: the Trainer's max_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, hp["warmup_steps"], total, hp["min_lr_ratio"])
    )
    clip = gradient_clip_val()
    start = float("nan")
    for i, (x, y) in enumerate(loader):
        optimizer.zero_grad(set_to_none=True)
        loss = model.lm_loss(model.hidden_states(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        scheduler.step()
        if i == WARMUP_STEPS - 1:
            start = time.perf_counter()
    return time.perf_counter() - start


def quiet_lightning() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Expected here: no workers (the batches are in memory), no val loader (validation is off).
    for message in (".*does not have many workers.*", ".*defined a `validation_step`.*", ".*treespec.*"):
        warnings.filterwarnings("ignore", message=message)


def main(argv: Sequence[str] | None = None) -> common.Report:
    args = common.parse_args(__doc__.splitlines()[0], argv, warmup=1)
    common.setup_torch()
    quiet_lightning()
    config, batch_size = common.bench_config(args.quick)
    state = GPT(config).state_dict()
    batches = common.token_windows(batch_size, config.block_size, count=WARMUP_STEPS + TIMED_STEPS)
    loader = DataLoader(batches, batch_size=None, shuffle=False)  # the pre-made batches, in order

    print(f"lightning_overhead: {common.shape(config, batch_size)}")
    pairs = common.alternate(
        lambda: lightning_run(config, state, loader),
        lambda: plain_run(config, state, loader),
        args.pairs,
        warmup=args.warmup,
        names=("Lightning s", "plain s"),
    )
    target = common.Target("throughput Lightning / plain loop", pairs.ratio, TARGET)
    per_step = (pairs.median_a - pairs.median_b) / TIMED_STEPS
    report = common.Report(
        key="lightning_overhead",
        title="Lightning training loop overhead: LMModule + Trainer vs a plain PyTorch loop",
        headers=("", "Lightning (LMModule + Trainer)", "plain loop"),
        rows=[
            (f"median time of {TIMED_STEPS} steps (s)", f"{pairs.median_a:.3f}", f"{pairs.median_b:.3f}"),
            ("median step time (s)", f"{pairs.median_a / TIMED_STEPS:.3f}", f"{pairs.median_b / TIMED_STEPS:.3f}"),
            ("difference per step (ms)", f"{1e3 * per_step:+.1f}", ""),
            ("ratio per pair (min–max)", pairs.spread(), ""),
        ],
        loads=pairs.loads,
        targets=[target],
        notes=[
            f"{len(pairs.a)} alternating pairs of runs after {args.warmup} warm-up pair(s); each run builds a "
            "fresh model "
            f"(same initial weights) and optimizer, takes {WARMUP_STEPS} warm-up step(s), then times "
            f"{TIMED_STEPS} steps of {batch_size}x{config.block_size} tokens (Trainer construction and "
            "`fit` set-up are not timed).",
            "Both sides: the same DataLoader over the same pre-made batches, `GPT.lm_loss`, AdamW over "
            "`param_groups` with conf/regime/pretrain.yaml's settings, `clip_grad_norm_` at "
            f"{gradient_clip_val():g} (conf/trainer/default.yaml), `LambdaLR(warmup_cosine)` stepped every step.",
            "Trainer: cpu, 1 device, 32-true; logger, checkpointing, progress bar, model summary and "
            "validation off.",
        ],
    )
    if not target.met or args.quick:
        profile = common.python_profile(lambda: lightning_run(config, state, loader))
        report.notes.append(
            f"Profile of one Lightning run, Trainer set-up included (target {'met' if target.met else 'missed'}): "
            f"own time by package: {profile.by_package}. The `lightning` share is the loop's cost beyond "
            "the model's own work (torch ops, gptlab's loss)."
        )
        report.profiles.append(("Top functions of one Lightning run (cProfile own time):", profile.table))
    report.publish("lightning_overhead.py", args)
    return report


if __name__ == "__main__":
    main()
