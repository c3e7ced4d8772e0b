"""Multiruns: one dir per combination, aggregated by gptlab-report; a failing job reported at the
end without stopping the others; finished jobs skipped on a re-run; an Optuna study that resumes.

The sweeps run the Hydra app in this process (as the console script would, minus the interpreter
start) on jobs a few optimizer steps long.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import statistics
import subprocess
import sys
from pathlib import Path
from unittest import mock

import optuna
import pytest
from hydra.types import RunMode
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata

from gptlab.cli.report import main as report_main
from gptlab.cli.sweep import COMPLETE_MARKER, FAILURES_FILE, config_hash, job_dirname
from gptlab.cli.train import main as gptlab_main
from gptlab.resources import group_choices

# A fine-tuning job of two optimizer steps on 4 examples, scored on 2 validation batches.
FAST_JOB = (
    "debug=fast",
    "regime=finetune",
    "task=demo_topic",
    "regime.block_size=32",
    "regime.module.lm_lambda=0",
    "trainer.max_steps=2",
    "+trainer.limit_val_batches=2",
    "callbacks.model_checkpoint=null",
)


def gptlab(*args: str) -> int:
    """Run ``gptlab ARGS`` in this process; its exit status."""
    with mock.patch.object(sys, "argv", ["gptlab", *args]):
        try:
            gptlab_main()
        except SystemExit as exit:
            return 0 if exit.code is None else int(exit.code)
    return 0


def rows_of(job_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (job_dir / "results.jsonl").read_text().splitlines()]


def job_dirs(sweep: Path) -> dict[str, Path]:
    return {p.name: p for p in sweep.iterdir() if p.is_dir()}


def test_a_2x2_multirun_runs_every_combination_in_its_own_dir_and_is_aggregated(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    assert gptlab("-m", *FAST_JOB, "model=gpt-nano,gpt-micro", "seed=1,2", f"hydra.sweep.dir={sweep}") == 0

    dirs = job_dirs(sweep)
    assert len(dirs) == 4
    seen = set()
    for name, job in dirs.items():
        # the directory is named after the job's own overrides, not its position in the sweep
        (row,) = [r for r in rows_of(job) if r["metric"] == "acc"]
        assert f"model={row['model']}" in name and f"seed={row['seed']}" in name
        seen.add((row["model"], row["seed"]))
        marker = json.loads((job / COMPLETE_MARKER).read_text())
        assert marker["metrics"]["val/acc"] == row["value"]
    assert seen == {(m, s) for m in ("gpt-nano", "gpt-micro") for s in (1, 2)}

    report_main([str(sweep), "--out", str(tmp_path / "report")])
    with open(tmp_path / "report" / "results.csv") as f:
        cells = {(c["model"], c["metric"]): c for c in csv.DictReader(f)}
    for model in ("gpt-nano", "gpt-micro"):
        accs = [r["value"] for job in dirs.values() for r in rows_of(job) if r["model"] == model and r["metric"] == "acc"]
        cell = cells[(model, "acc")]
        assert int(cell["n"]) == 2
        assert float(cell["mean"]) == pytest.approx(statistics.fmean(accs))


def test_a_failing_job_is_reported_at_the_end_and_a_rerun_runs_only_unfinished_jobs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "sweep"
    # gpt-nano's context is 256 tokens: the second job fails when it starts
    args = ("-m", *FAST_JOB, "regime.block_size=32,1024", f"hydra.sweep.dir={sweep}")
    assert gptlab(*args) == 1
    err = capsys.readouterr().err
    assert "1 job(s) of the sweep" in err
    assert "regime.block_size=1024" in err
    assert "ConfigError: invalid config:" in err
    assert "regime.block_size=1024 is larger than the context of model=gpt-nano" in err
    (failure,) = [json.loads(line) for line in (sweep / FAILURES_FILE).read_text().splitlines()]
    assert "regime.block_size=1024" in failure["overrides"]

    good = next(p for name, p in job_dirs(sweep).items() if "regime.block_size=32" in name)
    bad = next(p for name, p in job_dirs(sweep).items() if "regime.block_size=1024" in name)
    assert (good / COMPLETE_MARKER).is_file() and not (bad / "results.jsonl").exists()
    results = (good / "results.jsonl").read_bytes()
    written_at = (good / "results.jsonl").stat().st_mtime_ns

    # the same sweep again: the finished job is not re-trained, the failing one is tried again
    assert gptlab(*args) == 1
    out, err = capsys.readouterr()
    assert f"{good}: complete in an earlier run of this sweep, skipped" in out
    assert "1 job(s) of the sweep" in err
    assert (good / "results.jsonl").read_bytes() == results
    assert (good / "results.jsonl").stat().st_mtime_ns == written_at

    # without the failing value, the sweep succeeds (the failure list is per sweep run)
    assert gptlab("-m", *FAST_JOB, "regime.block_size=32", f"hydra.sweep.dir={sweep}") == 0
    assert "skipped" in capsys.readouterr().out
    assert not (sweep / FAILURES_FILE).exists()

    # a job killed between its results and its marker runs again, its earlier rows set aside
    first = rows_of(good)
    (good / COMPLETE_MARKER).unlink()
    assert gptlab("-m", *FAST_JOB, "regime.block_size=32", f"hydra.sweep.dir={sweep}") == 0
    assert "skipped" not in capsys.readouterr().out
    assert len(rows_of(good)) == len(first)  # the new attempt's rows only
    assert (good / "results.jsonl.stale").read_text().splitlines() == [json.dumps(r, sort_keys=True) for r in first]
    assert (good / COMPLETE_MARKER).is_file()


def hparams_of(run_dir: Path) -> tuple[dict, list[str]]:
    """What TensorBoard's HPARAMS tab reads from a run's event files: its hyper-parameters and
    the tags of the metrics it lists with them."""
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    content = accumulator.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    start = hparams_metadata.parse_session_start_info_plugin_data(content[hparams_metadata.SESSION_START_INFO_TAG])
    experiment = hparams_metadata.parse_experiment_plugin_data(content[hparams_metadata.EXPERIMENT_TAG])
    values = {k: v.number_value if v.HasField("number_value") else v.string_value for k, v in start.hparams.items()}
    return values, [info.name.tag for info in experiment.metric_infos]


def test_a_lambda_sweep_is_two_conditions_in_the_report_and_in_tensorboards_hparams(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "lambda"
    job = [arg for arg in FAST_JOB if "lm_lambda" not in arg]
    assert gptlab("-m", *job, "regime.module.lm_lambda=0,0.5", "seed=1", "logger=tensorboard", f"hydra.sweep.dir={sweep}") == 0
    capsys.readouterr()

    report_main([str(sweep), "--out", str(tmp_path / "report")])
    assert "warning" not in capsys.readouterr().err
    with open(tmp_path / "report" / "results.csv") as f:
        cells = [c for c in csv.DictReader(f) if c["metric"] == "acc"]
    # one run each, not one condition of two same-seed runs
    assert sorted((c["regime.module.lm_lambda"], c["n"], c["duplicates"]) for c in cells) == [("0", "1", "0"), ("0.5", "1", "0")]

    for lam, job_dir in [(lam, next(d for n, d in job_dirs(sweep).items() if f"lm_lambda={lam}," in n)) for lam in (0, 0.5)]:
        (row,) = [r for r in rows_of(job_dir) if r["metric"] == "acc"]
        assert row["config"]["regime.module.lm_lambda"] == lam and "seed" not in row["config"]
        (version,) = (job_dir / "tensorboard").iterdir()
        hparams, metrics = hparams_of(version)
        assert (hparams["regime.module.lm_lambda"], hparams["seed"], hparams["condition"]) == (lam, 1, row["condition"])
        assert {"final/val/acc", "final/val/loss"} <= set(metrics)


# Runs gptlab's app, killing its own process (SIGKILL: no clean-up runs) when the job whose dir
# name holds KILL_IN reaches optimizer step KILL_AT.
KILLING_APP = """
import os, signal, sys
from gptlab.lit.batch_seed import BatchSeed
from gptlab.cli.train import main
at, where, train_batch_start = int(os.environ["KILL_AT"]), os.environ["KILL_IN"], BatchSeed.on_train_batch_start
def kill_at_step(self, trainer, *args):
    if trainer.global_step == at and where in str(trainer.default_root_dir):
        os.kill(os.getpid(), signal.SIGKILL)
    train_batch_start(self, trainer, *args)
BatchSeed.on_train_batch_start = kill_at_step
sys.argv = ["gptlab", *sys.argv[1:]]
main()
"""


@pytest.mark.slow
def test_a_sweep_killed_mid_job_resumes_the_job_from_its_checkpoint_to_an_uninterrupted_sweeps_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = [arg for arg in FAST_JOB if not arg.startswith(("callbacks.model_checkpoint", "trainer.max_steps"))]
    args = (*job, "trainer.max_steps=6", "callbacks.model_checkpoint.every_n_train_steps=2", "seed=1,2")
    assert gptlab("-m", *args, f"hydra.sweep.dir={tmp_path / 'whole'}") == 0
    whole = {name: rows_of(d) for name, d in job_dirs(tmp_path / "whole").items()}

    sweep = tmp_path / "killed"
    killed = subprocess.run(
        [sys.executable, "-c", KILLING_APP, "-m", *args, f"hydra.sweep.dir={sweep}"],
        env={**os.environ, "KILL_AT": "5", "KILL_IN": "seed=2"}, capture_output=True, text=True, timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    first, second = sorted(job_dirs(sweep).items())  # seed=1 finished, seed=2 died after step 4's checkpoint
    assert (first[1] / COMPLETE_MARKER).is_file() and not (second[1] / COMPLETE_MARKER).exists()
    assert not (second[1] / "results.jsonl").exists()

    capsys.readouterr()
    assert gptlab("-m", *args, f"hydra.sweep.dir={sweep}") == 0
    out = capsys.readouterr().out
    assert f"{first[1]}: complete in an earlier run of this sweep, skipped" in out
    # from the newest checkpoint the killed attempt wrote (at most step 5: it died starting step 6)
    assert re.search(rf"{re.escape(str(second[1]))}: resuming an unfinished earlier attempt from .*step000000[1-5]\.ckpt", out)
    # the resumed attempt (the CSV logger's second version) trained on from there, not from scratch
    with open(second[1] / "csv" / "version_1" / "metrics.csv") as f:
        assert min(int(line["step"]) for line in csv.DictReader(f) if line.get("train/loss")) >= 4
    for name, rows in whole.items():
        resumed = rows_of(sweep / name)
        assert [(r["metric"], r["value"], r["condition"]) for r in resumed] == [
            (r["metric"], r["value"], r["condition"]) for r in rows
        ]


def test_optuna_sweep_stores_its_study_in_the_sweep_dir_and_resumes(tmp_path: Path) -> None:
    sweep = tmp_path / "hpo"
    args = (
        "hparams_search=finetune_optuna",
        *FAST_JOB,
        "regime.global_batch_size=choice(2,4)",  # replaces the search space's (8, 16, 32): fast
        f"hydra.sweep.dir={sweep}",
    )
    assert gptlab(*args, "hydra.sweeper.n_trials=3") == 0
    storage = f"sqlite:///{sweep / 'optuna.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    assert summary.study_name == "finetune-demo_topic-gpt-nano"
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    first = [(t.params, t.value) for t in study.trials]
    assert len(first) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    # FAST_JOB's regime.module.lm_lambda=0, a plain override, takes λ out of the search space
    assert set(study.trials[0].params) == {
        "regime.module.lr", "regime.module.classifier_dropout", "model.dropout", "regime.global_batch_size"
    }
    # each trial's value is the val/acc its job wrote
    accs = sorted(r["value"] for job in job_dirs(sweep).values() for r in rows_of(job) if r["metric"] == "acc")
    assert sorted(value for _, value in first) == pytest.approx(accs)

    assert gptlab(*args, "hydra.sweeper.n_trials=1") == 0
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    assert len(study.trials) == 4  # the same study, one more trial
    assert study.trials[3].state == optuna.trial.TrialState.COMPLETE
    assert [(t.params, t.value) for t in study.trials[:3]] == first


@pytest.mark.parametrize("name", group_choices("hparams_search"))
def test_every_hparams_search_composes_with_an_optuna_sweeper_storing_in_the_sweep_dir(
    name: str, compose_config
) -> None:
    cfg = compose_config(f"hparams_search={name}", "hydra.sweep.dir=/sweeps/x", return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.storage == "sqlite:////sweeps/x/optuna.db"
    assert sweeper.direction in ("maximize", "minimize") and cfg.optimized_metric.startswith("val/")
    assert cfg.hydra.mode == RunMode.MULTIRUN
    for key in sweeper.params:  # a typo would add a new key instead of searching an existing one
        assert OmegaConf.select(cfg, key) is not None, key


def test_job_dirnames_are_single_path_components() -> None:
    assert job_dirname("model.init_from=runs/demo/last.ckpt,seed=1") == "model.init_from=runs_demo_last.ckpt,seed=1"
    assert job_dirname("") == "defaults"
    long_a, long_b = "lr=" + "1" * 400, "lr=" + "1" * 399 + "2"
    assert len(job_dirname(long_a)) <= 200 and job_dirname(long_a) != job_dirname(long_b)


def test_config_hash_follows_what_a_job_computes_not_where_its_files_live(compose_config) -> None:
    def hash_of(*overrides: str) -> str:
        return config_hash(compose_config("regime=finetune", "task=sst2", *overrides))

    base = hash_of("paths.output_dir=/a", "paths.data_dir=data")
    assert hash_of("paths.output_dir=/b", "paths.data_dir=/elsewhere/data", "logger=tensorboard", "tags=[x]") == base
    assert hash_of("paths.output_dir=/a", "paths.data_dir=data", "regime.module.lr=1e-4") != base
    assert hash_of("paths.output_dir=/a", "paths.data_dir=data", "task.train_limit=256") != base
