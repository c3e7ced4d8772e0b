"""Two CPU processes (gloo) train like one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_app(run_dir: Path, cache: Path, *overrides: str) -> tuple[list[dict], str]:
    env = {**os.environ, "GPTLAB_CACHE_DIR": str(cache)}
    result = subprocess.run(
        [sys.executable, "-m", "gptlab", "debug=fast", f"hydra.run.dir={run_dir}", *overrides],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    return rows, result.stdout + result.stderr


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
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt", "step0000004.ckpt"]
    assert len(list(run.rglob("results.jsonl"))) == 1
