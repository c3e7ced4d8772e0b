"""``results.jsonl``: one JSON row per task × split × metric × regime × k × seed.

Every run appends its rows here; the report and the notebooks read only these files.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable

RESULTS_FILE = "results.jsonl"


@dataclass
class ResultRow:
    task: str
    split: str
    metric: str
    value: float
    regime: str
    model: str
    seed: int
    init: str | None = None
    k: int | None = None
    n_train_examples: int | None = None
    n_eval: int | None = None
    fewshot_seed: int | None = None
    prompt: str | None = None
    gptlab_version: str | None = None

    def __post_init__(self) -> None:
        if self.gptlab_version is None:
            from gptlab import __version__

            self.gptlab_version = __version__


def append_results(run_dir: str | Path, rows: Iterable[ResultRow]) -> Path:
    """Append ``rows`` to ``run_dir/results.jsonl`` in one write, flushed to disk."""
    path = Path(run_dir) / RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(asdict(row), sort_keys=True) + "\n" for row in rows)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return path


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """Rows of one results file; a malformed line is an error naming file and line."""
    known = {f.name for f in fields(ResultRow)}
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not a JSON row ({err.msg})") from err
            missing = {"task", "split", "metric", "value"} - row.keys()
            if missing:
                raise ValueError(f"{path}:{lineno}: missing keys {sorted(missing)}")
            rows.append({k: v for k, v in row.items() if k in known})
    return rows
