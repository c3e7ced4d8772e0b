"""The real ``wandb`` library, offline: what a sweep's runs hold on disk (group, job type, tags,
resolved config, per-step metrics, the results table), and a failed job's run finished as failed.

The offline ``run-*.wandb`` file is read here with a reader of its own (LevelDB log framing,
wandb's protobuf ``Record``), independent of gptlab and of wandb's private readers.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from wandb.proto import wandb_internal_pb2

from gptlab.cli.tracking import wandb_run_finished
from gptlab.cli.train import train

_BLOCK = 32768  # LevelDB log block; every chunk has a 7-byte header (crc32, length, type)
_FULL, _LAST = 1, 4


def wandb_records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, pending = 7, b""  # file header: ":W&B", magic (2 bytes), version (1 byte)
    while pos + 7 <= len(data):
        if _BLOCK - pos % _BLOCK < 7:  # a block's tail too short for a header is zero padding
            pos += _BLOCK - pos % _BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


class OfflineRun:
    """What one offline run directory holds."""

    def __init__(self, run_dir: Path) -> None:
        (log_file,) = run_dir.glob("run-*.wandb")
        self.dir = run_dir
        self.run = None
        self.config: dict = {}
        self.history: list[dict] = []
        self.summary: dict = {}
        self.exit_code = None
        for record in wandb_records(log_file):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                self.run = record.run
                self.config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
            elif kind == "config":
                self.config.update({i.key: json.loads(i.value_json) for i in record.config.update})
            elif kind == "history":
                self.history.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item})
            elif kind == "summary":
                self.summary.update({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.summary.update})
            elif kind == "exit":
                self.exit_code = record.exit.exit_code

    def table(self, key: str) -> dict:
        (path,) = (self.dir / "files" / "media" / "table").glob(f"{key}_*.table.json")
        return json.loads(path.read_text())


def offline_runs(root: Path) -> list[OfflineRun]:
    return [OfflineRun(p) for p in sorted(root.rglob("offline-run-*")) if p.is_dir()]


FAST_JOB = (
    "debug=fast",
    "regime=finetune",
    "task=demo_topic",
    "regime.block_size=32",
    "trainer.max_steps=3",
    "+trainer.limit_val_batches=2",
    "callbacks.model_checkpoint=null",
)


def test_a_sweeps_wandb_runs_hold_group_config_metrics_and_results_and_a_failed_job_is_finished(
    tmp_path: Path,
) -> None:
    sweep = tmp_path / "glue-sweep"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    # The second job asks to validate every 100000 batches of a 200-batch epoch: Lightning refuses
    # when fit starts, after its W&B run has begun.
    result = subprocess.run(
        [sys.executable, "-m", "gptlab", "-m", "logger=wandb", *FAST_JOB, "tags=[trk,nano]",
         "trainer.val_check_interval=1,100000", f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "1 job(s) of the sweep" in result.stderr

    good, bad = (
        next(p for p in sweep.iterdir() if f"trainer.val_check_interval={every}" in p.name.split(","))
        for every in (1, 100000)
    )
    (run,) = offline_runs(good)
    assert (run.run.project, run.run.run_group, run.run.job_type) == ("gptlab", "glue-sweep", "finetune")
    assert list(run.run.tags) == ["trk", "nano"]
    # the resolved config: interpolations replaced by values
    assert run.config["model"]["name"] == "gpt-nano" and run.config["model"]["block_size"] == 256
    assert run.config["regime"]["datamodule"]["block_size"] == 32  # was ${regime.block_size}
    assert run.config["trainer"]["default_root_dir"] == str(good)  # was ${paths.output_dir}
    assert run.config["task"]["name"] == "demo_topic"
    # per-step metrics: a training loss at each of the 3 optimizer steps, then validation
    steps = [h["trainer/global_step"] for h in run.history if "train/loss" in h]
    assert steps == [0, 1, 2]
    assert any("val/acc" in h for h in run.history)
    # the results rows as a Table, the same as results.jsonl
    table = run.table("results")
    rows = [json.loads(line) for line in (good / "results.jsonl").read_text().splitlines()]
    as_dicts = [dict(zip(table["columns"], values)) for values in table["data"]]
    assert [(r["metric"], r["value"]) for r in as_dicts] == [(r["metric"], r["value"]) for r in rows]
    # the run's condition and final metrics, as TensorBoard's HPARAMS tab gets them
    assert run.config["condition"] == run.summary["condition"] == rows[0]["condition"]
    final = {name.removeprefix("final/val/"): v for name, v in run.summary.items() if name.startswith("final/")}
    assert final == {r["metric"]: r["value"] for r in rows if r["metric"] in ("acc", "loss")}
    assert run.exit_code == 0

    (failed,) = offline_runs(bad)
    assert failed.run.run_group == "glue-sweep"
    assert failed.exit_code == 1  # wandb.finish ran although the job raised


def test_loggers_many_records_the_run_in_tensorboard_csv_and_offline_wandb(tmp_path: Path, compose_config) -> None:
    run = tmp_path / "run"
    cfg = compose_config(*FAST_JOB, "logger=many", f"paths.output_dir={run}")
    with wandb_run_finished():
        train(cfg)
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert (run / "csv" / "version_0" / "metrics.csv").is_file()
    (offline,) = offline_runs(run / "wandb")
    assert offline.run.run_group == ""  # a single run belongs to no sweep
    assert offline.config["seed"] == 1234
    assert any("val/acc" in h for h in offline.history)
    assert offline.exit_code == 0


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
