"""notebooks/icl_vs_finetune.ipynb runs top to bottom on results files and shows the table and plots."""

from __future__ import annotations

import base64
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from gptlab.report.predictions import write_predictions
from gptlab.report.results import ResultRow, append_results

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "icl_vs_finetune.ipynb"


def write_results(root: Path) -> None:
    """Two seeds of sst2 fine-tuned on 64 examples and prompted zero- and 8-shot; rte prompted."""
    base = dict(split="validation", model="gpt-micro", init="scratch", metric="acc")
    for seed, (ft, zero, few) in enumerate([(0.70, 0.50, 0.55), (0.80, 0.52, 0.65)], start=1):
        append_results(root / "ft" / str(seed), [
            ResultRow(**base, task="sst2", value=ft, regime="finetune", seed=seed, n_train_examples=64, chance=0.509),
        ])
        append_results(root / "icl" / str(seed), [
            ResultRow(**base, task="sst2", value=zero, regime="zero_shot", seed=seed, k=0, chance=0.509),
            ResultRow(**base, task="sst2", value=few, regime="few_shot", seed=seed, k=8, fewshot_seed=seed, chance=0.509),
            ResultRow(**base, task="rte", value=0.5, regime="zero_shot", seed=seed, k=0, chance=0.527),
        ])
        write_predictions(root / "icl" / str(seed), {"task": "rte", "regime": "zero_shot", "k": 0}, {"validation": [
            {"index": 0, "chosen": " yes", "gold": " no", "correct": False},
            {"index": 1, "chosen": " no", "gold": " no", "correct": True},
        ]})


def test_notebook_runs_on_results_files_and_shows_table_and_plots(tmp_path: Path) -> None:
    write_results(tmp_path / "runs")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    (parameters,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert "RESULTS_DIRS" in parameters.source
    parameters.source = f"RESULTS_DIRS = [{str(tmp_path / 'runs')!r}]\nMETRIC = None"

    NotebookClient(notebook, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("8 result rows, 4 conditions" in o.get("text", "") for o in outputs)
    assert any("4 per-example predictions, 2 wrong" in o.get("text", "") for o in outputs)
    assert any("rte zero_shot k=0 validation[0]: ' yes', gold ' no'" in o.get("text", "") for o in outputs)
    (table,) = [o.data["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
    assert "| task | split      | metric | model     | finetune (N=64)     | zero_shot           | few_shot (k=8)      | chance |" in table
    assert "| sst2 | validation | acc    | gpt-micro | 0.750 ± 0.071 (n=2) | 0.510 ± 0.014 (n=2) | 0.600 ± 0.071 (n=2) | 0.509  |" in table
    pngs = [base64.b64decode(o.data["image/png"]) for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 2  # rte and sst2
    assert all(png.startswith(b"\x89PNG") and len(png) > 10_000 for png in pngs)
