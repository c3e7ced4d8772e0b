"""In-loop evaluation during pre-training: a suite scored every N optimizer steps, rows with step
and tokens, the same numbers as a zero-shot run on the checkpoint, a resumed run without duplicate
points, and the report's curves."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_train import FEW_VAL_WINDOWS, make_cfg

from gptlab.cli.report import main as report_main
from gptlab.cli.train import train
from gptlab.lit.inloop import SCORERS
from gptlab.report.results import read_results
from gptlab.resources import config_dir

SUITE = ["callbacks=inloop_eval", "callbacks.inloop_eval.suite.tasks=[demo_topic,{name:demo_continuation,metric:acc_norm}]",
         "callbacks.inloop_eval.suite.limit=8", "callbacks.inloop_eval.every_n_steps=2", "callbacks.inloop_eval.batch_size=4",
         FEW_VAL_WINDOWS]


def inloop_rows(run: Path) -> list[dict]:
    return [r for r in read_results(run / "results.jsonl") if r["step"] is not None]


def test_inloop_rows_equal_a_zero_shot_run_of_the_checkpoint(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path / "pre", *SUITE)
    train(cfg)
    run = tmp_path / "pre" / "run"
    rows = inloop_rows(run)
    per_step = cfg.regime.global_batch_size * cfg.regime.block_size  # windows of every optimizer step
    assert {(r["step"], r["tokens"]) for r in rows} == {(s, s * per_step) for s in (0, 2, 4)}
    assert Counter((r["task"], r["metric"]) for r in rows)[("demo_topic", "acc")] == 3
    scores = {r["step"]: r for r in rows if r["task"] == "inloop"}
    final = {(r["task"], r["metric"]): r for r in rows if r["step"] == 4}
    for task, metric in (("demo_topic", "acc"), ("demo_continuation", "acc_norm")):
        assert final[task, metric]["suite"] == "inloop" and final[task, metric]["n_eval"] == 8
        metrics = train(make_cfg(tmp_path / task, "regime=zero_shot", f"task={task}", "regime.limit=8",
                                 f"model.init_from={run / 'checkpoints' / 'last.ckpt'}"))
        assert final[task, metric]["value"] == pytest.approx(metrics[f"val/{metric}"], abs=1e-6)
    centered = [(final[t, m]["value"] - final[t, m]["chance"]) / (1 - final[t, m]["chance"])
                for t, m in (("demo_topic", "acc"), ("demo_continuation", "acc_norm"))]
    assert scores[4]["value"] == pytest.approx(sum(centered) / 2)
    logged = (run / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"inloop/score", "inloop/tokens", "inloop/seconds", "inloop/demo_topic/acc"} <= set(logged)
    report_main([str(run)])
    assert (run / "plots" / "inloop_inloop_0.png").is_file()
    assert "## During pre-training (in-loop evaluation)" in (run / "report.md").read_text()


def test_a_resumed_run_continues_the_curve_without_duplicates(tmp_path: Path) -> None:
    train(make_cfg(tmp_path, *SUITE, "trainer.max_steps=2"))
    train(make_cfg(tmp_path, *SUITE, "trainer.max_steps=4", "ckpt_path=last"))
    rows = inloop_rows(tmp_path / "run")
    points = Counter((r["task"], r["metric"], r["step"]) for r in rows)
    assert {step for _, _, step in points} == {0, 2, 4}
    assert set(points.values()) == {1}


def test_the_scorers_are_the_zero_shot_regimes() -> None:
    regime = OmegaConf.load(config_dir() / "regime" / "zero_shot.yaml").regime
    targets = {
        "choice": (regime.datamodule._target_, regime.module._target_),
        "generate": (regime.generate.datamodule._target_, regime.generate.module._target_),
    }
    assert {scorer: tuple(f"{c.__module__}.{c.__name__}" for c in classes) for scorer, classes in SCORERS.items()} == targets


def test_an_unknown_task_stops_the_run_before_training(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, *SUITE, "callbacks.inloop_eval.suite.tasks=[demo_topc]")
    with pytest.raises(Exception, match=r"unknown task 'demo_topc'; valid tasks: .*demo_topic"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()
