"""End-to-end LM pre-training through the Hydra config: run dir, resume, bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import compose_config
from hydra.errors import InstantiationException, MissingConfigException

from gptlab.cli.train import build_all, resolve_ckpt_path, split_global_batch, train
from gptlab.data.sources import DataFormatError
from gptlab.report.results import read_results


# Pre-training validates on 64 windows by default: a few are enough where only the run's outputs
# are checked (each validation pass then costs a second instead of ten)
FEW_VAL_WINDOWS = "regime.datamodule.val_windows=4"


def make_cfg(tmp_path: Path, *overrides: str):
    """A ``debug=fast`` run writing under ``tmp_path``. A plain function, not a fixture, because
    test_finetune and test_incontext import it; so it takes conftest's composer by import."""
    return compose_config(
        "debug=fast", f"paths.output_dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}", *overrides
    )


def test_pretraining_run_writes_checkpoints_results_and_logs(tmp_path: Path) -> None:
    metrics = train(make_cfg(tmp_path, "seed=7", FEW_VAL_WINDOWS))
    run = tmp_path / "run"
    assert metrics["val/ppl"] == pytest.approx(torch.exp(torch.tensor(metrics["val/loss"])).item(), rel=1e-5)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert {r["metric"] for r in rows} == {"loss", "ppl"}
    assert all(r["task"] == "demo_corpus" and r["regime"] == "pretrain" and r["seed"] == 7 for r in rows)
    assert all(r["model"] == "gpt-nano" and r["split"] == "validation" for r in rows)
    with open(run / "csv" / "version_0" / "metrics.csv") as f:
        logged = list(csv.DictReader(f))
    columns = set(logged[0])
    assert {"train/loss", "val/loss", "val/ppl", "perf/tokens_per_sec", "perf/mfu"} <= columns
    assert any(name.startswith("lr-") for name in columns)
    mfu = [float(r["perf/mfu"]) for r in logged if r.get("perf/mfu")]
    assert mfu and all(0 < m < 1 for m in mfu)


class StopAfter(pl.Callback):
    """Ends a fit after ``step`` optimizer steps, as an interruption would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def fit(cfg, ckpt_path: str | None = None, stop_after: int | None = None):
    pl.seed_everything(cfg.seed, workers=True)
    datamodule, module, trainer = build_all(cfg)
    if stop_after is not None:
        trainer.callbacks.append(StopAfter(stop_after))
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return module, trainer


@pytest.mark.slow  # about 40 s; tests/test_faults.py resumes killed runs in make test
def test_resumed_run_ends_with_the_weights_of_a_straight_run(tmp_path: Path) -> None:
    common = (
        "trainer.max_steps=6",
        "trainer.val_check_interval=3",
        "callbacks.model_checkpoint.every_n_train_steps=3",
        "regime.global_batch_size=4",
        "regime.batch_size=2",  # two micro-batches per step: accumulation is resumed too
        "trainer.deterministic=true",
    )
    straight, _ = fit(make_cfg(tmp_path / "a", *common))
    cfg_b = make_cfg(tmp_path / "b", *common)
    interrupted, trainer = fit(cfg_b, stop_after=3)
    assert trainer.global_step == 3
    last = resolve_ckpt_path("last", Path(cfg_b.paths.output_dir))
    resumed, trainer = fit(make_cfg(tmp_path / "b", *common), ckpt_path=last)
    assert trainer.global_step == 6
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_global_batch_is_split_into_per_device_batch_and_accumulation() -> None:
    assert split_global_batch(32, 8, 2) == (8, 2)
    assert split_global_batch(32, 32, 2) == (16, 1)  # two devices: half the batch each
    assert split_global_batch(30, 8, 2) == (5, 3)  # 15 per device: the cap 8 does not divide it
    for global_batch, cap, world in [(32, 8, 1), (48, 5, 3), (64, 64, 16), (7, 2, 7)]:
        micro, accumulate = split_global_batch(global_batch, cap, world)
        assert micro <= cap and micro * accumulate * world == global_batch
    with pytest.raises(ValueError, match="global_batch_size=30 must be a positive multiple of the world size 4"):
        split_global_batch(30, 8, 4)


def test_unknown_group_option_lists_valid_choices(tmp_path: Path) -> None:
    with pytest.raises(MissingConfigException) as err:
        make_cfg(tmp_path, "model=gpt-5")
    assert "gpt-nano" in str(err.value) and "gpt2-xl" in str(err.value)


def test_block_size_beyond_the_context_is_refused_before_training(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "regime.block_size=512")
    with pytest.raises(ValueError, match="regime.block_size=512 is larger than the context of model=gpt-nano"):
        build_all(cfg)


def test_missing_data_path_names_the_path_and_format(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "task=tinyshakespeare", f"paths.data_dir={tmp_path / 'nowhere'}")
    with pytest.raises(DataFormatError) as err:
        train(cfg)
    assert str(tmp_path / "nowhere" / "tinyshakespeare") in str(err.value)
    assert "text" in str(err.value)


def test_missing_checkpoint_to_resume_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="ckpt_path=last"):
        resolve_ckpt_path("last", tmp_path)


def test_init_from_a_checkpoint_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    train(make_cfg(tmp_path / "nano", FEW_VAL_WINDOWS))
    ckpt = tmp_path / "nano" / "run" / "checkpoints" / "last.ckpt"
    cfg = make_cfg(tmp_path / "micro", "model=gpt-micro", f"model.init_from={ckpt}")
    # Hydra wraps the builder's ValueError; its message reaches the user unchanged.
    with pytest.raises(InstantiationException, match=r"tensor 'wte.weight' has shape \(50304, 48\) in the checkpoint but \(50304, 128\) in model 'gpt-micro'"):
        build_all(cfg)


def test_real_text_pretrains_from_shared_data(tmp_path: Path, shared_data: Path) -> None:
    metrics = train(make_cfg(tmp_path, "task=tinyshakespeare", f"paths.data_dir={shared_data}", FEW_VAL_WINDOWS))
    assert 0 < metrics["val/loss"] < 11.0


def test_console_script_runs_the_hydra_app(tmp_path: Path) -> None:
    env = {**os.environ, "GPTLAB_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, "-m", "gptlab", "debug=fast", FEW_VAL_WINDOWS, f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "val/ppl=" in result.stdout
    # what a user needs, not the dependencies' chatter (gptlab.cli.quiet)
    output = result.stdout + result.stderr
    assert "model gpt-nano: 2.51M parameters" in output
    for chatter in ("💡 Tip", "GPU available", "Total FLOPs", "LeafSpec", "is deprecated"):
        assert chatter not in output, chatter
    assert (tmp_path / "run" / ".hydra" / "config.yaml").is_file()
    assert (tmp_path / "run" / "results.jsonl").is_file()


def run_cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GPTLAB_CACHE_DIR": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "gptlab", *overrides, f"hydra.run.dir={tmp_path / 'run'}"]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_ones_own_json_lines_corpus_pretrains_and_writes_its_results(tmp_path: Path) -> None:
    """Pre-training on a JSON-lines corpus whose text is in field ``body``, from the command line."""
    data = tmp_path / "corpus"
    data.mkdir()
    records = [json.dumps({"id": i, "body": f"Line {i} of a corpus of my own, with words."}) for i in range(300)]
    (data / "train.jsonl").write_text("\n".join(records[:150]) + "\n\n" + "\n".join(records[150:]) + "\n")
    corpus = [
        "task=tinyshakespeare", "task.format=jsonl", f"task.data_dir={data}", "task.files.train=train.jsonl",
        "model=gpt-nano", "trainer.max_steps=3", FEW_VAL_WINDOWS, "regime.global_batch_size=4", "regime.batch_size=2",
    ]
    result = run_cli(tmp_path, *corpus, "task.fields.text=body")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {(row["split"], row["metric"]): row["value"] for row in read_results(tmp_path / "run" / "results.jsonl")}
    assert 0 < rows["validation", "loss"] < 11.5 and rows["validation", "ppl"] > 1
    assert rows["train", "skipped_blank_lines"] == 1


def test_an_old_task_key_fails_before_training_naming_its_replacement(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "task=tinyshakespeare", "task.format=jsonl", "+task.text_field=body")
    assert result.returncode != 0
    assert "task.text_field: replaced by task.fields.text" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
