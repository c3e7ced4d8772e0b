"""Two CPU processes (gloo) train like one process with the same global batch; every hardware
profile builds what it can on this machine (GPU Trainers on a GPU, the SLURM executor without a
cluster)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from unittest import mock

import pytest
import torch

from gptlab.cli.train import build_all, train
from gptlab.data.demo_tasks import TRAIN_SIZES


def run_app(run_dir: Path, cache: Path, *overrides: str) -> tuple[list[dict], str]:
    env = {**os.environ, "GPTLAB_CACHE_DIR": str(cache)}
    result = subprocess.run(
        [sys.executable, "-m", "gptlab", "debug=fast", f"hydra.run.dir={run_dir}", *overrides],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    return rows, result.stdout + result.stderr


@pytest.mark.slow  # two CLI runs, ~50 s; the fine-tuning equivalence below keeps DDP in make test
def test_ddp_cpu_pretraining_matches_a_single_process(tmp_path: Path) -> None:
    common = ("trainer.max_steps=4", "regime.global_batch_size=4", "regime.datamodule.val_windows=8")
    single, _ = run_app(tmp_path / "single", tmp_path / "cache", "regime.batch_size=4", *common)
    ddp, output = run_app(tmp_path / "ddp", tmp_path / "cache", "hardware=ddp-cpu", "regime.batch_size=2", *common)
    assert "MEMBER: 2/2" in output  # really two processes
    value = {r["metric"]: r["value"] for r in single}
    # Same samples per optimizer step, gradients averaged over ranks: equal up to fp32 reduction order.
    assert len(ddp) == len(single)  # rank 0 alone wrote its rows
    for row in ddp:
        assert row["value"] == pytest.approx(value[row["metric"]], rel=1e-4), row["metric"]
    run = tmp_path / "ddp"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "best-step0000004.ckpt", "last.ckpt", "step0000004.ckpt",
    ]
    assert len(list(run.rglob("results.jsonl"))) == 1


FINETUNE = (
    "regime=finetune",
    "task=demo_topic",
    "regime.global_batch_size=4",
    "trainer.max_steps=4",
    "regime.block_size=64",
    "regime.datamodule.eval_batch_size=40",
    # no dropout anywhere (gpt-nano has none): the two runs draw from different random streams
    "regime.module.classifier_dropout=0",
)


def test_ddp_cpu_finetuning_matches_a_single_process_with_the_same_global_batch(tmp_path: Path, compose_profile) -> None:
    # One process accumulates two micro-batches of 2 per step; two processes take one each.
    # regime.batch_size caps the per-device batch: the DDP run derives 2 from its cap of 4.
    # The single process runs in this one (no interpreter start), through the same train().
    train(compose_profile("cpu", "debug=fast", *FINETUNE, "regime.batch_size=2", f"paths.output_dir={tmp_path / 'single'}"))
    single = [json.loads(line) for line in (tmp_path / "single" / "results.jsonl").read_text().splitlines()]
    ddp, output = run_app(tmp_path / "ddp", tmp_path / "cache", *FINETUNE, "hardware=ddp-cpu", "regime.batch_size=4")
    assert "MEMBER: 2/2" in output
    # the scores, the examples cut to the 64-token window, the most common answer's share (from
    # the per-example answers every rank gathers)
    assert {(r["split"], r["metric"]) for r in single} == {
        ("validation", "acc"), ("validation", "loss"), ("validation", "n_truncated"), ("train", "n_truncated"),
        ("validation", "top_answer_share"),
    }
    value = {(r["split"], r["metric"]): r["value"] for r in single}
    assert len(ddp) == len(single)
    # Same examples in every optimizer step, gradients averaged, validation examples dealt over the
    # ranks and synced: equal up to fp32 reduction order (1e-4 relative; accuracy exactly).
    for row in ddp:
        assert row["value"] == pytest.approx(value[row["split"], row["metric"]], rel=1e-4), row["metric"]
        assert row["n_eval"] == (160 if row["split"] == "validation" else None)
        assert row["n_train_examples"] == TRAIN_SIZES["demo_topic"]
    run = tmp_path / "ddp"
    assert len(list(run.rglob("results.jsonl"))) == 1
    # one checkpoint set, written whole by one process (its last.ckpt loads and is at step 4)
    assert {p.parent for p in run.rglob("*.ckpt")} == {run / "checkpoints"}
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 4
    assert [p.name for p in (run / "csv").iterdir()] == ["version_0"]


@pytest.mark.slow
def test_ddp_cpu_jobs_of_a_multirun_each_train_in_their_own_dir(tmp_path: Path) -> None:
    # Lightning starts rank 1 by re-running the command line: in a multirun it must run the one
    # job (its overrides, its dir), and the second job must start a process group of its own.
    sweep = tmp_path / "sweep"
    env = {**os.environ, "GPTLAB_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, "-m", "gptlab", "-m", "debug=fast", *FINETUNE, "hardware=ddp-cpu", "trainer.max_steps=2",
         "seed=1,2", f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("MEMBER: 2/2") + result.stderr.count("MEMBER: 2/2") == 2
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name.split("seed=")[1][0] for p in jobs] == ["1", "2"]
    for job in jobs:
        assert (job / "job_complete.json").is_file()
        assert len(list(job.rglob("results.jsonl"))) == 1
    assert len(list(sweep.rglob("results.jsonl"))) == 2  # no stray run of the whole sweep elsewhere


@pytest.fixture
def compose_profile(compose_config):
    """``compose_profile(name, *overrides, with_hydra=False)``: the ``train`` config on hardware profile ``name``."""

    def compose_profile(name: str, *overrides: str, with_hydra: bool = False):
        return compose_config(
            f"hardware={name}", "paths.output_dir=unused", *overrides, return_hydra_config=with_hydra
        )

    return compose_profile


@pytest.mark.parametrize("name", ["cpu", "ddp-cpu"])
def test_cpu_profiles_build_a_trainer_with_the_global_batch_split_over_their_processes(name: str, compose_profile) -> None:
    cfg = compose_profile(name, "regime=finetune", "task=demo_topic")
    _, _, trainer = build_all(cfg)
    world = trainer.num_devices * trainer.num_nodes
    assert world == (2 if name == "ddp-cpu" else 1)
    # finetune's global batch 32 with a per-device cap of 32
    assert trainer.accumulate_grad_batches == 1
    assert type(trainer.strategy).__name__ == ("DDPStrategy" if world > 1 else "SingleDeviceStrategy")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="builds a GPU Trainer: needs a CUDA device")
@pytest.mark.parametrize("name", ["gpu", "gpu-bf16", "ddp", "fsdp"])
def test_gpu_profiles_build_their_trainer_on_a_gpu_machine(name: str, compose_profile) -> None:
    cfg = compose_profile(name, "regime=finetune", "task=demo_topic")
    _, _, trainer = build_all(cfg)
    assert trainer.num_devices == (1 if name.startswith("gpu") else torch.cuda.device_count())
    assert trainer.precision == ("bf16-mixed" if torch.cuda.is_bf16_supported() or name == "gpu-bf16" else "16-mixed")
    strategy = {"fsdp": "FSDPStrategy", "ddp": "DDPStrategy"}.get(name, "SingleDeviceStrategy")
    assert type(trainer.strategy).__name__ == strategy


def test_slurm_profile_configures_a_slurm_executor_for_every_rank(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compose_profile) -> None:
    """The submitit launcher's own code builds the SLURM executor; only the submission is stubbed."""
    import submitit
    from hydra.utils import instantiate

    cfg = compose_profile(
        "slurm", "regime=finetune", "task=demo_topic", "hardware.nodes=4", "hardware.gpus_per_node=4", "hardware.partition=gpu",
        f"hydra.sweep.dir={tmp_path / 'sweep'}", with_hydra=True,
    )
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit checks srun is on PATH
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    submitted = {}

    def submit(executor, fn, *job_args):
        submitted.update(executor._executor.parameters)
        return []

    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=print, config=cfg)
    with mock.patch.object(submitit.AutoExecutor, "map_array", submit):
        launcher.launch([["seed=1"]], initial_job_idx=0)
    assert (submitted["nodes"], submitted["ntasks_per_node"], submitted["gpus_per_node"]) == (4, 4, 4)
    assert submitted["partition"] == "gpu" and submitted["time"] == 240
    # one SLURM task per GPU is one Lightning process per GPU
    assert (cfg.trainer.num_nodes, cfg.trainer.devices) == (4, 4)
