"""``predictions.jsonl``: what the model answered for every example of an in-context or a
fine-tuned run (one answer per example: classification, multiple choice, generation).

One JSON line per example: the run's identity (task, regime, model, k, prompt), the ``split`` and
the example's ``index`` in it, then what its scorer records: a choice task's ``chosen`` answer and
``gold`` answer, a generation task's ``generation`` and ``targets``, and ``correct`` (the ``acc``
or ``exact_match`` of the example), with the scores behind it. It sits next to ``results.jsonl``;
``read_predictions`` gives its rows back, ``load_predictions`` those of every run below a directory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gptlab.atomic import write_atomic

PREDICTIONS_FILE = "predictions.jsonl"


def write_predictions(
    run_dir: str | Path, run: Mapping[str, Any], records: Mapping[str, list[dict[str, Any]]]
) -> Path:
    """Write split -> per-example records, each under the run's identity ``run``, atomically."""
    path = Path(run_dir) / PREDICTIONS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({**run, "split": split, **record}, ensure_ascii=False) + "\n"
        for split, rows in records.items()
        for record in rows
    ]
    write_atomic(path, "".join(lines).encode("utf-8"))
    return path


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a predictions file (or of a run dir's); a malformed line is an error naming it."""
    path = Path(path)
    path = path / PREDICTIONS_FILE if path.is_dir() else path
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not a JSON row ({err.msg})") from err
            if not isinstance(row, dict) or not {"split", "index"} <= row.keys():
                raise ValueError(f"{path}:{lineno}: not a prediction row (needs split and index)")
            rows.append(row)
    return rows


def load_predictions(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """The rows of every predictions file at or below ``paths`` (run or multirun dirs), each with
    ``run_dir`` added; a run without one (pre-training, fine-tuned NER or regression) adds nothing."""
    rows = []
    for path in map(Path, paths):
        files = [path] if path.is_file() else sorted(path.rglob(PREDICTIONS_FILE))
        for file in files:
            rows += [{**row, "run_dir": str(file.parent)} for row in read_predictions(file)]
    return rows
