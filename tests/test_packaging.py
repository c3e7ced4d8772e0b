"""The package as users install it: a wheel that carries its configs, and the public API."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import gptlab

ROOT = Path(__file__).resolve().parents[1]


def test_public_api_is_exported() -> None:
    for name in ("GPT", "GPTConfig", "get_tokenizer", "load_hf_gpt2", "export_hf_gpt2"):
        assert callable(getattr(gptlab, name)), name
    assert gptlab.GPT.from_name("gpt-nano").config.n_layer == 3


def test_wheel_ships_the_config_tree_and_the_task_group(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("gptlab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for tracked in ("conf/train.yaml", "conf/model/gpt2.yaml", "conf/experiment/demo.yaml"):
        assert f"gptlab/{tracked}" in names, tracked
    # tasks/ is the `task` group inside the package, as real files
    for task in (ROOT / "tasks").glob("*.yaml"):
        assert f"gptlab/conf/task/{task.name}" in names, task.name
    assert "gptlab/data/tokenizer.py" in names
