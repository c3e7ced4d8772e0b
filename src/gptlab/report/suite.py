"""The report's evaluation-suite tables (``gptlab.tasks.suite``): one per suite × model × init ×
seed, a row per task (its contributing metric, value, chance and centered value) and a column per
``k``, and the suite's score, read from the rows a suite run marks with its name."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from gptlab.report.table import MISSING, to_markdown
from gptlab.tasks.suite import centered

Row = Mapping[str, Any]
SUITE_KEYS = ("suite", "model", "init", "seed")


def is_suite_score(row: Row) -> bool:
    """Whether ``row`` is a suite's own score (not a task's result)."""
    return row.get("suite") is not None and row["task"] == row["suite"]


def suite_tables(rows: Iterable[Row]) -> str:
    """Markdown: every suite's table (see the module doc); empty when no row belongs to a suite."""
    groups: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for row in rows:
        if row.get("suite") is not None and row.get("step") is None:
            groups[tuple(row.get(key) for key in SUITE_KEYS)].append(row)
    sections = []
    for (suite, model, init, seed), members in sorted(groups.items(), key=lambda g: tuple(map(str, g[0]))):
        shots = sorted({row["k"] for row in members})
        header = ["task", "metric", *(f"k={k}" for k in shots), "chance"]
        tasks: dict[tuple[str, str], dict[int, Row]] = defaultdict(dict)
        for row in members:
            if not is_suite_score(row):
                tasks[row["task"], row["metric"]][row["k"]] = row
        lines = []
        for (task, metric), by_k in tasks.items():
            chance = next(iter(by_k.values()))["chance"]
            cells = [_value(by_k.get(k)) for k in shots]
            lines.append([task, metric, *cells, MISSING if chance is None else f"{chance:.3f}"])
        scores = {row["k"]: row["value"] for row in members if is_suite_score(row)}
        lines.append(["**score**", "centered mean", *(_number(scores.get(k)) for k in shots), "0"])
        sections.append(
            f"### {suite}: {model} ({init}, seed {seed})\n\n" + to_markdown(header, lines)
        )
    if not sections:
        return ""
    return (
        "## Evaluation suites\n\nEach task's metric, and (in brackets) centered: (value - chance) / "
        "(1 - chance), 0 at chance and 1 perfect; the score is the mean centered value over the "
        "suite's tasks (DCLM's CORE).\n\n" + "\n\n".join(sections) + "\n"
    )


def _number(value: float | None) -> str:
    return MISSING if value is None else f"{value:.3f}"


def _value(row: Row | None) -> str:
    if row is None:
        return MISSING
    return f"{row['value']:.3f} ({centered(row['value'], row['chance']):+.3f})"
