"""The Hydra app behind ``gptlab`` and ``python -m gptlab``: compose, check, train, record."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.fabric.utilities.seed import reset_seed
from omegaconf import DictConfig, OmegaConf, open_dict

from gptlab.cli.quiet import quiet
from gptlab.cli.sweep import SweepJob, optimized_value
from gptlab.cli.tracking import log_final_metrics, log_resolved_config, log_results_table, wandb_run_finished
from gptlab.conditions import Condition
from gptlab.data.contract import TaskDataModule
from gptlab.lit.checkpoint_io import CHECKPOINT_DIR, newest_valid_checkpoint
from gptlab.lit.inloop import SuiteEvaluation
from gptlab.lit.predictions import PredictionLog
from gptlab.model.checkpoint import verify_checkpoint_archive
from gptlab.model.gpt import GPT
from gptlab.report.predictions import write_predictions
from gptlab.report.flags import top_answer_share
from gptlab.report.results import (
    DROPPED_WORDS,
    N_TRUNCATED,
    SKIPPED_BLANK_LINES,
    TOP_ANSWER_SHARE,
    SCRATCH,
    ResultRow,
    append_results,
)
from gptlab.report.stderr import metric_stderrs
from gptlab.resources import config_dir
from gptlab.schema import ConfigError, check_across_nodes, is_incontext, scorer_node, validate_config
from gptlab.tasks.suite import suite_contribution

log = logging.getLogger("gptlab")

quiet()


def world_size(trainer_cfg: DictConfig) -> int:
    """Processes the configured Trainer will run (devices × nodes)."""
    devices = trainer_cfg.get("devices", 1)
    if devices in ("auto", -1, "-1"):
        devices = max(1, torch.cuda.device_count()) if trainer_cfg.get("accelerator") != "cpu" else 1
    elif isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        devices = len(devices)
    return int(devices) * int(trainer_cfg.get("num_nodes", 1))


def split_global_batch(global_batch: int, max_micro_batch: int, world: int) -> tuple[int, int]:
    """(per-device micro-batch, micro-batches to accumulate) so that every optimizer step sees
    exactly ``global_batch`` examples on ``world`` processes, whatever the world size.

    ``max_micro_batch`` (``regime.batch_size``) caps what one device holds at once; the fewest
    accumulation steps that split each process's share evenly are used.
    """
    if global_batch <= 0 or max_micro_batch <= 0 or global_batch % world:
        raise ValueError(
            f"regime.global_batch_size={global_batch} must be a positive multiple of the world size "
            f"{world} (devices × nodes), and regime.batch_size={max_micro_batch} positive"
        )
    share = global_batch // world
    accumulate = next(n for n in range(-(-share // max_micro_batch), share + 1) if share % n == 0)
    return share // accumulate, accumulate


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """``last``: the newest checkpoint in this run dir's ``checkpoints/`` that verifies (a truncated
    or corrupt newer one is skipped with a warning). A path must exist and verify, else the error
    names it."""
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        directory = output_dir / CHECKPOINT_DIR
        newest = newest_valid_checkpoint(directory)
        if newest is None:
            raise FileNotFoundError(f"ckpt_path=last: no valid checkpoint in {directory}")
        return str(newest)
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path}: no checkpoint at {path}")
    verify_checkpoint_archive(path)
    return str(path)


def per_device(cfg: DictConfig) -> tuple[DictConfig, int]:
    """``cfg`` checked across nodes, with ``regime.batch_size`` the per-device micro-batch, and the
    micro-batches to accumulate per optimizer step."""
    if problems := check_across_nodes(cfg):
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    micro_batch, accumulate = split_global_batch(
        cfg.regime.global_batch_size, cfg.regime.batch_size, world_size(cfg.trainer)
    )
    if micro_batch != cfg.regime.batch_size:  # the DataModules read ${regime.batch_size}
        log.info("regime.batch_size=%d per device (global batch %d)", micro_batch, cfg.regime.global_batch_size)
        cfg = copy.deepcopy(cfg)
        with open_dict(cfg):
            cfg.regime.batch_size = micro_batch
    return cfg, accumulate


def built_node(cfg: DictConfig) -> DictConfig:
    """The node whose ``datamodule`` and ``module`` a run builds: a kind with its own scorer or
    objective is built from the regime node named after it, whose settings may point at the
    regime's own (regime.generate.module.lr: ${regime.module.lr}); else the regime itself."""
    node = scorer_node(cfg)
    return cfg.regime[node] if node else cfg.regime


def build_datamodule(cfg: DictConfig) -> TaskDataModule:
    """The DataModule ``cfg`` describes (checked as ``build_all`` checks it)."""
    return instantiate(built_node(per_device(cfg)[0]).datamodule, _convert_="partial")


def build_all(
    cfg: DictConfig, datamodule: TaskDataModule | None = None, model: GPT | None = None
) -> tuple[pl.LightningDataModule, pl.LightningModule, pl.Trainer]:
    """Instantiate the DataModule, LightningModule and Trainer that ``cfg`` describes; a given
    ``datamodule`` or backbone ``model`` (built from ``cfg``) is used instead of building one."""
    cfg, accumulate = per_device(cfg)
    built = built_node(cfg)
    if datamodule is None:
        datamodule = instantiate(built.datamodule, _convert_="partial")
    module = instantiate(built.module, _convert_="partial", **({} if model is None else {"model": model}))
    torch.set_float32_matmul_precision(cfg.get("float32_matmul_precision", "highest"))
    module.model.activation_checkpointing = bool(cfg.get("activation_checkpointing", False))
    if cfg.get("compile", False) and cfg.regime.get("fit", True):  # scoring alone never pays it back
        module.model.compile_training()
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, accumulate_grad_batches=accumulate
    )
    return datamodule, module, trainer


def train(
    cfg: DictConfig, datamodule: TaskDataModule | None = None, model: GPT | None = None
) -> dict[str, float]:
    """Fit, validate the final weights, write ``results.jsonl``; returns the final metrics.
    ``datamodule``, ``model``: already built from ``cfg``, which the caller has checked (an
    evaluation suite checks and reads every task first and scores them all with one backbone)."""
    if datamodule is None:
        validate_config(cfg)  # every bad key at once, before any data is read
    output_dir = Path(cfg.paths.output_dir)
    pl.seed_everything(cfg.seed, workers=True)
    if node := scorer_node(cfg):
        log.info(
            "task=%s (kind %s): regime=%s builds regime.%s's DataModule and module",
            cfg.task.name, cfg.task.kind, cfg.regime.name, node,
        )
    condition = Condition.of(cfg)
    datamodule, module, trainer = build_all(cfg, datamodule, model)
    log.info("model %s: %.2fM parameters", cfg.model.name, module.model.num_params() / 1e6)
    for callback in trainer.callbacks:
        if isinstance(callback, SuiteEvaluation):  # its rows are this run's
            callback.condition = condition
    log_resolved_config(trainer.loggers, cfg, condition)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)
    fit = cfg.regime.get("fit", True)
    if fit:
        # DDP re-seeds every process when it starts; doing the same on one device makes what is
        # drawn from here on (a task head's init in setup) the same for any number of devices
        reset_seed()
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    else:
        log.info("regime=%s: no training (regime.fit=false), validating the backbone as it is", cfg.regime.name)
    eval_ckpt, weights = evaluation_weights(cfg, trainer) if fit else (None, None)
    validated = trainer.validate(module, datamodule=datamodule, ckpt_path=weights, verbose=False)
    metrics = {k: float(v) for k, v in validated[0].items()}
    if trainer.is_global_zero:
        prediction_log = getattr(module, "predictions", None)
        records = prediction_log.records if isinstance(prediction_log, PredictionLog) and any(prediction_log.records.values()) else None
        rows = result_rows(cfg, metrics, datamodule, trainer, condition=condition, eval_ckpt=eval_ckpt, predictions=records)
        path = append_results(output_dir, rows)
        log.info("results: %s", path)
        if records is not None:
            incontext = is_incontext(cfg)
            run = {"task": cfg.task.name, "regime": cfg.regime.name, "model": cfg.model.name,
                   "k": cfg.regime.k if incontext else None,
                   "fewshot_seed": cfg.regime.fewshot_seed if incontext else None, "prompt": datamodule.prompt_name}
            log.info("per-example output: %s", write_predictions(output_dir, run, records))
        log_results_table(trainer.loggers, rows)
        log_final_metrics(trainer.loggers, cfg, condition, metrics, trainer.global_step)
        summary = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        print(f"[gptlab] {cfg.task.name} / {cfg.regime.name} / {cfg.model.name}: {summary}")
        print(f"[gptlab] run dir: {output_dir}")
        if cfg.sample.num_samples > 0:
            print_samples(module.model, cfg.sample)
    return metrics


def evaluation_weights(cfg: DictConfig, trainer: pl.Trainer) -> tuple[str, str | None]:
    """(which weights, the checkpoint to load for them) after fitting, as ``eval_ckpt`` asks:
    ``last`` are the weights in memory; ``best`` those of the monitored checkpoint callback (the
    last ones, with a warning, when it kept none: no validation ran)."""
    if cfg.get("eval_ckpt") != "best":
        return "last", None
    best = next(cb for cb in trainer.checkpoint_callbacks if getattr(cb, "monitor", None))
    if not best.best_model_path:
        log.warning("eval_ckpt=best: %s kept no checkpoint (no validation ran); evaluating the last weights", best.monitor)
        return "last", None
    log.info("eval_ckpt=best: %s=%.4g at %s", best.monitor, float(best.best_model_score), best.best_model_path)
    return "best", best.best_model_path


def eval_split_sizes(datamodule: TaskDataModule, trainer: pl.Trainer) -> dict[str, int | None]:
    """Eval split name -> examples in it (None when its dataset has no length), in loader order."""
    names = datamodule.eval_splits
    loaders = trainer.val_dataloaders
    loaders = list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]
    loaders += [None] * (len(names) - len(loaders))
    return {
        name: len(loader.dataset) if hasattr(getattr(loader, "dataset", None), "__len__") else None
        for name, loader in zip(names, loaders)
    }


def result_rows(
    cfg: DictConfig,
    metrics: dict[str, float],
    datamodule: TaskDataModule,
    trainer: pl.Trainer,
    *,
    condition: Condition | None = None,
    eval_ckpt: str | None = None,
    predictions: Mapping[str, list[dict[str, Any]]] | None = None,
) -> list[ResultRow]:
    """One row per logged ``val/<metric>`` (first eval split) or ``val/<split>/<metric>``.

    Everything but the config comes from the DataModule contract (``gptlab.data.contract``):
    in-context rows record ``k``, ``fewshot_seed`` and the prompt's name; labelled tasks get the
    metric's ``chance`` level, computed when the data was read. What the data cut or skipped is on
    record too: ``n_truncated`` (examples cut to the window) and ``dropped_words`` (NER words cut)
    for each split that had any, and ``skipped_blank_lines`` for each data split whose reader
    skipped some; and, where the per-example ``predictions`` name a chosen answer,
    ``top_answer_share`` (the report flags a model that gives one answer to nearly everything). A run of an evaluation suite marks the row its task contributes to the suite's
    score with the suite's name. Every row carries the run's ``condition`` (``Condition.of(cfg)``
    when not given) and ``eval_ckpt``; a metric that is a mean over the per-example
    ``predictions`` gets its bootstrap ``stderr``.
    """
    condition = condition or Condition.of(cfg)
    if not isinstance(datamodule, TaskDataModule):
        raise TypeError(f"{type(datamodule).__name__} is not a gptlab.data.contract.TaskDataModule")
    splits = eval_split_sizes(datamodule, trainer)
    first = next(iter(splits))
    incontext = is_incontext(cfg)
    chance = datamodule.chance_levels
    suite, contributed = suite_contribution(cfg)
    values: dict[tuple[str, str], float] = {}
    for name, value in metrics.items():
        if not name.startswith("val/"):
            continue
        split, sep, metric = name[len("val/"):].partition("/")
        if not sep or split not in splits:
            split, metric = first, name[len("val/"):]
        values[split, metric] = value
    counts = {N_TRUNCATED: datamodule.truncated, DROPPED_WORDS: datamodule.dropped_words,
              SKIPPED_BLANK_LINES: datamodule.skipped_lines}
    for metric, per_split in counts.items():
        for split, count in per_split.items():
            if count:
                values.setdefault((split, metric), float(count))  # an evaluation module may log it
    for split, records in (predictions or {}).items():
        if (share := top_answer_share(records)) is not None:
            values[split, TOP_ANSWER_SHARE] = share
    stderrs = metric_stderrs(predictions or {}, values)
    return [
        ResultRow(
            task=cfg.task.name,
            split=split,
            metric=metric,
            value=value,
            regime=cfg.regime.name,
            model=cfg.model.name,
            init=cfg.model.get("init_from") or SCRATCH,
            seed=cfg.seed,
            n_train_examples=datamodule.num_train_examples,
            n_eval=splits.get(split),
            k=cfg.regime.k if incontext else None,
            fewshot_seed=cfg.regime.fewshot_seed if incontext else None,
            prompt=datamodule.prompt_name,
            chance=chance.get(split, {}).get(metric),
            suite=suite if (split, metric) == (first, contributed) else None,
            condition=condition.hash,
            config=condition.values,
            stderr=stderrs.get((split, metric)),
            eval_ckpt=eval_ckpt,
        )
        for (split, metric), value in values.items()
    ]


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
    """One run, or one job of a multirun (skipped when already complete, its failure recorded
    rather than raised); returns ``optimized_metric`` for sweepers such as Optuna."""
    job = SweepJob.current(cfg)
    metrics = tracked_train(cfg) if job is None else job.run(tracked_train, cfg)
    return optimized_value(metrics, cfg.get("optimized_metric"))


def tracked_train(cfg: DictConfig) -> dict[str, float]:
    """``train``, or with ``eval_suite`` set ``run_suite``, with its W&B run finished however it ends."""
    from gptlab.cli.suite import run_suite  # it runs ``train`` for each of its tasks

    with wandb_run_finished():
        return run_suite(cfg) if cfg.get("eval_suite") else train(cfg)


