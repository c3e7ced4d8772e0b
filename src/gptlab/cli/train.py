"""The Hydra app behind ``gptlab`` and ``python -m gptlab``: compose, check, train, record."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gptlab.report.results import ResultRow, append_results
from gptlab.resources import config_dir

log = logging.getLogger("gptlab")

# The DataModules restore their own stream position, so Lightning's mid-epoch resume warning
# ("dataloader is not resumable") does not apply to gptlab runs.
warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")


def world_size(trainer_cfg: DictConfig) -> int:
    """Processes the configured Trainer will run (devices × nodes)."""
    devices = trainer_cfg.get("devices", 1)
    if devices in ("auto", -1, "-1"):
        import torch

        devices = max(1, torch.cuda.device_count()) if trainer_cfg.get("accelerator") != "cpu" else 1
    elif isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        devices = len(devices)
    return int(devices) * int(trainer_cfg.get("num_nodes", 1))


def gradient_accumulation(global_batch: int, micro_batch: int, world: int) -> int:
    """Micro-batches to accumulate so that every optimizer step sees ``global_batch`` sequences."""
    per_step = micro_batch * world
    if global_batch <= 0 or micro_batch <= 0 or global_batch % per_step:
        raise ValueError(
            f"regime.global_batch_size={global_batch} must be a positive multiple of "
            f"regime.batch_size × world size = {micro_batch} × {world}"
        )
    return global_batch // per_step


def check_config(cfg: DictConfig) -> None:
    """Refuse combinations that cannot run, before any data is read or model built."""
    kinds = list(cfg.regime.task_kinds)
    if cfg.task.kind not in kinds:
        raise ValueError(
            f"task={cfg.task.name} is of kind {cfg.task.kind!r}, which regime={cfg.regime.name} "
            f"does not run (it runs: {', '.join(kinds)})"
        )
    block, context = cfg.regime.get("block_size"), cfg.model.block_size
    if block is not None and block > context:
        raise ValueError(
            f"regime.block_size={block} is larger than the context of model={cfg.model.name} "
            f"(model.block_size={context})"
        )


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """``last`` means this run dir's ``checkpoints/last.ckpt``; a path must exist."""
    if ckpt_path is None:
        return None
    path = output_dir / "checkpoints" / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path}: no checkpoint at {path}")
    return str(path)


def build_all(cfg: DictConfig) -> tuple[pl.LightningDataModule, pl.LightningModule, pl.Trainer]:
    """Instantiate the DataModule, LightningModule and Trainer that ``cfg`` describes."""
    check_config(cfg)
    datamodule = instantiate(cfg.regime.datamodule, _convert_="partial")
    module = instantiate(cfg.regime.module, _convert_="partial")
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    accumulate = gradient_accumulation(
        cfg.regime.global_batch_size, cfg.regime.batch_size, world_size(cfg.trainer)
    )
    trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, accumulate_grad_batches=accumulate
    )
    return datamodule, module, trainer


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, validate the final weights, write ``results.jsonl``; returns the final metrics."""
    output_dir = Path(cfg.paths.output_dir)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule, module, trainer = build_all(cfg)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.validate(module, datamodule=datamodule, verbose=False)[0].items()}
    if trainer.is_global_zero:
        rows = result_rows(cfg, metrics, datamodule, trainer)
        path = append_results(output_dir, rows)
        log.info("results: %s", path)
        summary = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        print(f"[gptlab] {cfg.task.name} / {cfg.regime.name} / {cfg.model.name}: {summary}")
        print(f"[gptlab] run dir: {output_dir}")
        if cfg.sample.num_samples > 0:
            print_samples(module.model, cfg.sample)
    return metrics


def eval_split_sizes(datamodule: pl.LightningDataModule, trainer: pl.Trainer) -> dict[str, int | None]:
    """Eval split name -> examples in it (None when its dataset has no length), in loader order.

    A DataModule without ``eval_splits`` (pre-training) has one split, ``validation``.
    """
    names = list(getattr(datamodule, "eval_splits", None) or ["validation"])
    loaders = trainer.val_dataloaders
    loaders = list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]
    loaders += [None] * (len(names) - len(loaders))
    return {
        name: len(loader.dataset) if hasattr(getattr(loader, "dataset", None), "__len__") else None
        for name, loader in zip(names, loaders)
    }


def result_rows(
    cfg: DictConfig, metrics: dict[str, float], datamodule: pl.LightningDataModule, trainer: pl.Trainer
) -> list[ResultRow]:
    """One row per logged ``val/<metric>`` (first eval split) or ``val/<split>/<metric>``."""
    splits = eval_split_sizes(datamodule, trainer)
    first = next(iter(splits))
    rows = []
    for name, value in metrics.items():
        if not name.startswith("val/"):
            continue
        split, sep, metric = name[len("val/"):].partition("/")
        if not sep or split not in splits:
            split, metric = first, name[len("val/"):]
        rows.append(
            ResultRow(
                task=cfg.task.name,
                split=split,
                metric=metric,
                value=value,
                regime=cfg.regime.name,
                model=cfg.model.name,
                init=cfg.model.get("init_from") or "scratch",
                seed=cfg.seed,
                n_train_examples=getattr(datamodule, "num_train_examples", None),
                n_eval=splits.get(split),
            )
        )
    return rows


def print_samples(model: Any, sample_cfg: DictConfig) -> None:
    from gptlab.cli.sample import sample_text

    texts = sample_text(
        model,
        prompt=sample_cfg.prompt,
        num_samples=sample_cfg.num_samples,
        max_new_tokens=sample_cfg.max_new_tokens,
        temperature=sample_cfg.temperature,
        top_k=sample_cfg.top_k,
        top_p=None,
        seed=0,
    )
    for i, text in enumerate(texts):
        print(f"--- sample {i} ---\n{text}")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None


