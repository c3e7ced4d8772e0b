"""Warnings a table cell carries: numbers that look like a measurement of skill but are not.

- **one answer**: the run gave the same answer to (nearly) every example (``top_answer_share``
  at least ``ONE_ANSWER``). Its accuracy is then the share of that answer's class, whatever the
  model learned: an untrained or collapsed model sits at the majority rate.
- **truncated**: most of the run's evaluated examples were cut to the model's window
  (``n_truncated`` over ``n_eval`` above ``MOSTLY``): a few-shot column whose demonstrations
  did not fit measures something else than few-shot prompting.

The flags read the descriptive rows each run writes beside its scores
(``gptlab.report.results.DESCRIPTIVE_METRICS``), aggregated like any metric.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gptlab.report.aggregate import GROUP_KEYS, Cell
from gptlab.report.results import N_TRUNCATED, TOP_ANSWER_SHARE

ONE_ANSWER = 0.95
MOSTLY = 0.5
MARK = "⚠"
RunKey = tuple[Any, ...]


def top_answer_share(records: Sequence[Mapping[str, Any]]) -> float | None:
    """The share of examples given the most common ``chosen`` answer; None when the records name
    no chosen answer (generation, NER)."""
    if not records or not all("chosen" in r for r in records):
        return None
    counts = Counter(str(r["chosen"]) for r in records)
    return max(counts.values()) / len(records)


def run_key(cell: Cell) -> RunKey:
    """What a cell shares with the other metrics of the same runs: its grouping keys but the
    metric, its condition and its swept values."""
    return (*(getattr(cell, key) for key in GROUP_KEYS if key != "metric"), cell.condition, cell.params)


def cell_flags(cells: Iterable[Cell]) -> dict[RunKey, list[str]]:
    """``run_key`` -> the warnings of those runs (only keys with any); tables mark each with
    ``MARK``."""
    by_run: dict[RunKey, dict[str, Cell]] = defaultdict(dict)
    for cell in cells:
        by_run[run_key(cell)][cell.metric] = cell
    flags = {}
    for key, metrics in by_run.items():
        notes = []
        if (share := metrics.get(TOP_ANSWER_SHARE)) is not None and share.mean >= ONE_ANSWER:
            notes.append(f"one answer for {share.mean:.0%}")
        cut = metrics.get(N_TRUNCATED)
        if cut is not None and cut.n_eval and cut.mean / cut.n_eval > MOSTLY:
            notes.append(f"{cut.mean:.0f}/{cut.n_eval} truncated")
        if notes:
            flags[key] = notes
    return flags


LEGEND = (
    f"{MARK} one answer for X%: the model gave the same answer to X% of the examples (≥ {ONE_ANSWER:.0%}), "
    f"so its score is that answer's share, not a skill; {MARK} a/b truncated: a of the b examples were "
    "cut to the model's window."
)
