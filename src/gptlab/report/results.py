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
# Rows that describe a run's data or answers rather than score it: examples cut to the window,
# words cut from NER sentences, blank lines the readers skipped, and the share of examples given
# the most common answer (1.0: the same answer to every example)
N_TRUNCATED = "n_truncated"
DROPPED_WORDS = "dropped_words"
SKIPPED_BLANK_LINES = "skipped_blank_lines"
TOP_ANSWER_SHARE = "top_answer_share"
DESCRIPTIVE_METRICS = (N_TRUNCATED, DROPPED_WORDS, SKIPPED_BLANK_LINES, TOP_ANSWER_SHARE)
# a row's init when the model started from random weights (model.init_from: null)
SCRATCH = "scratch"


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
    # the metric's value for a predictor that ignores its input (gptlab.tasks.chance); None where
    # it has none (regression, NER, language modelling, counts)
    chance: float | None = None
    # the evaluation suite (gptlab.tasks.suite) whose score this row enters: its task's contributing
    # metric, or the suite's own score row (task = the suite's name)
    suite: str | None = None
    # rows written during pre-training (gptlab.lit.inloop): optimizer steps and tokens seen so far
    step: int | None = None
    tokens: int | None = None
    # what the run was (gptlab.conditions): the hash of its condition (its resolved config less
    # seeds, paths and logging) and that config's values by dotted key
    condition: str | None = None
    config: dict[str, Any] | None = None
    # bootstrap standard error of the value over the run's examples (gptlab.report.stderr)
    stderr: float | None = None
    # the weights a run that trained was evaluated with: "last" or "best" (eval_ckpt)
    eval_ckpt: str | None = None
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
    """Rows of one results file, every ``ResultRow`` field present (``None`` where a row omits it,
    e.g. ``chance`` in rows written before it existed); a malformed line is an error naming file
    and line.
    """
    known = [f.name for f in fields(ResultRow)]
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not a JSON row ({err.msg})") from err
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: not a JSON object")
            missing = {"task", "split", "metric", "value"} - row.keys()
            if missing:
                raise ValueError(f"{path}:{lineno}: missing keys {sorted(missing)}")
            value = row["value"]
            # bool is an int subclass, but a true/false metric value is a writer's bug
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{path}:{lineno}: value {value!r} is not a number")
            rows.append({name: row.get(name) for name in known})
    return rows


def find_results(paths: Iterable[str | Path]) -> list[Path]:
    """Every ``results.jsonl`` at or below each path (a run dir, a multirun dir, or the file).

    A path that does not exist, or holds no results file, is an error naming it. A file reached
    through two paths (``runs/demo`` and ``runs/demo/finetune``) is listed once.
    """
    found: dict[Path, Path] = {}
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such run directory")
        files = [path] if path.is_file() else sorted(path.rglob(RESULTS_FILE))
        if not files:
            raise FileNotFoundError(
                f"{path}: holds no {RESULTS_FILE} (each gptlab run writes one into its run dir)"
            )
        for f in files:
            found.setdefault(f.resolve(), f)
    return list(found.values())


def load_results(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """The rows of every results file at or below ``paths`` (see ``find_results``)."""
    return [row for path in find_results(paths) for row in read_results(path)]
