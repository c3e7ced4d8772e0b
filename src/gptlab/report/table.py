"""The comparison table (task × regime) as markdown and the aggregated cells as CSV.

Rows are (task, split, metric, model, init) and the swept config values that tell conditions
apart (``Cell.params``: λ = 0 and λ = 0.5 are two rows); columns are regimes. A regime whose runs
differ in a setting (fine-tuning's N labelled examples, few-shot's k, the prompt) gets one column
per setting where one table row has several of them; otherwise one column, whose header names the
setting when all rows share it and whose cells name it when they do not.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gptlab.report.aggregate import (
    FINETUNE,
    FIXED_K,
    GROUP_KEYS,
    IN_CONTEXT,
    PRETRAIN,
    Cell,
    Params,
    regime_rank,
    select_metric,
)
from gptlab.report.flags import LEGEND, MARK, RunKey, cell_flags, run_key
from gptlab.report.summary import plain_summary

ROW_KEYS = ("task", "split", "metric", "model", "init")
CSV_FIELDS = (*GROUP_KEYS, "condition", "labelled_examples", "mean", "std", "n", "duplicates", "stderr", "chance")
MISSING = "–"


def short_names(keys: Iterable[str]) -> dict[str, str]:
    """Each dotted config key by its shortest unique tail: ``regime.module.lm_lambda`` ->
    ``lm_lambda`` unless another key ends the same way."""
    keys = list(keys)
    names = {}
    for key in keys:
        parts = key.split(".")
        for size in range(1, len(parts) + 1):
            tail = ".".join(parts[-size:])
            if sum(k == tail or k.endswith("." + tail) for k in keys) == 1:
                break
        names[key] = tail
    return names


def swept_columns(cells: list[Cell]) -> list[str]:
    """The swept config keys the cells' ``params`` hold (the same for every cell of one aggregate)."""
    return [name for name, _ in cells[0].params] if cells else []


def param_text(value: Any) -> str:
    return MISSING if value is None else str(value)


def _params(cell: Cell, with_prompt: bool) -> Params:
    """The settings that tell apart runs of one regime on one table row."""
    params: list[tuple[str, Any]] = []
    if cell.regime == FINETUNE:
        params.append(("N", cell.n_train_examples))
    elif cell.regime in IN_CONTEXT and cell.regime not in FIXED_K:
        params.append(("k", cell.k))
    if with_prompt:
        params.append(("prompt", cell.prompt))
    return tuple(params)


def _params_text(params: Params) -> str:
    return ", ".join(f"{name}={value}" for name, value in params)


def _params_sort_key(params: Params) -> tuple[Any, ...]:
    return tuple((value is None, str(value) if isinstance(value, str) else value or 0) for _, value in params)


def format_value(cell: Cell, params: Params = (), flags: Sequence[str] = ()) -> str:
    """``mean ± std (n=…)`` (a single run: ``± stderr SE``), with same-seed duplicates flagged,
    the cell's own settings when its column does not name them, and its warnings
    (``gptlab.report.flags``)."""
    text = f"{cell.mean:.3f}"
    if cell.std is not None:
        text += f" ± {cell.std:.3f}"
    elif cell.stderr is not None:
        text += f" ± {cell.stderr:.3f} SE"
    notes = [f"n={cell.n}"]
    if cell.duplicates:
        notes.append(f"+{cell.duplicates} same-seed duplicate{'s' if cell.duplicates > 1 else ''}")
    if params:
        notes.append(_params_text(params))
    return " ".join([f"{text} ({', '.join(notes)})", *(f"{MARK} {flag}" for flag in flags)])


def comparison_table(
    cells: Iterable[Cell], flags: Mapping[RunKey, list[str]] | None = None
) -> tuple[list[str], list[list[str]]]:
    """Header and rows (as text) of the task × regime table of ``cells`` (one metric per task),
    each value with the warnings ``flags`` holds for its runs (``gptlab.report.flags``)."""
    cells = list(cells)
    flags = flags or {}
    rows: dict[tuple[Any, ...], list[Cell]] = defaultdict(list)
    for cell in cells:
        rows[(*(getattr(cell, k) for k in ROW_KEYS), *(value for _, value in cell.params))].append(cell)
    swept = swept_columns(cells)
    regimes = sorted({c.regime for c in cells}, key=regime_rank)

    def row_params(row_cells: list[Cell], regime: str, with_prompt: bool) -> set[Params]:
        return {_params(c, with_prompt) for c in row_cells if c.regime == regime}

    # (header, regime, settings the column holds; None: each cell names its own)
    columns: list[tuple[str, str, Params | None]] = []
    for regime in regimes:
        with_prompt = any(
            len({c.prompt for c in rc if c.regime == regime}) > 1 for rc in rows.values()
        )
        variants = sorted(
            {p for rc in rows.values() for p in row_params(rc, regime, with_prompt)}, key=_params_sort_key
        )
        several_per_row = any(len(row_params(rc, regime, with_prompt)) > 1 for rc in rows.values())
        if several_per_row or len(variants) == 1:
            columns += [
                (f"{regime} ({_params_text(v)})" if v else regime, regime, v) for v in variants
            ]
        else:
            columns.append((regime, regime, None))

    show_init = len({c.init for c in cells}) > 1
    show_chance = any(c.chance is not None for c in cells)
    header = [*(k for k in ROW_KEYS if k != "init" or show_init), *short_names(swept).values()]
    header += [h for h, _, _ in columns] + (["chance"] if show_chance else [])
    body = []
    for key, row_cells in rows.items():
        line = [str(v) for k, v in zip(ROW_KEYS, key) if k != "init" or show_init]
        line += [param_text(value) for value in key[len(ROW_KEYS):]]
        for _, regime, params in columns:
            with_prompt = params is not None and any(name == "prompt" for name, _ in params)
            match = [
                c for c in row_cells
                if c.regime == regime and (params is None or _params(c, with_prompt) == params)
            ]
            if not match:
                line.append(MISSING)
            elif params is None:
                line.append(format_value(match[0], _params(match[0], with_prompt=False), flags.get(run_key(match[0]), ())))
            else:
                line.append(format_value(match[0], flags=flags.get(run_key(match[0]), ())))
        if show_chance:
            chance = next((c.chance for c in row_cells if c.chance is not None), None)
            line.append(MISSING if chance is None else f"{chance:.3f}")
        body.append(line)
    return header, body


def to_markdown(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table, columns padded so that it also reads well in a terminal."""
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]

    def fmt(line: list[str]) -> str:
        return "| " + " | ".join(text.ljust(width) for text, width in zip(line, widths)) + " |"

    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([fmt(header), rule, *map(fmt, rows)])


def tables_markdown(cells: Iterable[Cell], metric: str | None = None) -> str:
    """The report's tables: fine-tuning vs prompting, then pre-training (where present), each on
    the primary metric of every task, or on ``metric``."""
    cells = list(cells)
    chosen = select_metric(cells, metric)
    flags = cell_flags(cells)
    which = f"metric {metric}" if metric else "primary metric of each task"
    sections = []
    compared = [c for c in chosen if c.regime != PRETRAIN]
    if compared:
        legend = f" {LEGEND}" if any(run_key(c) in flags for c in compared) else ""
        sections.append(
            f"## Fine-tuning vs prompting ({which})\n\n"
            "mean ± sample std over seeds (n runs; a single run: ± the bootstrap standard error over "
            "its examples, SE); N = labelled training examples of fine-tuning, k = examples in the "
            "prompt; chance = the metric's chance / majority-class level. Other columns before the "
            f"regimes are config values the conditions differ in.{legend}\n\n"
            + to_markdown(*comparison_table(compared, flags))
        )
    pretrained = [c for c in chosen if c.regime == PRETRAIN]
    if pretrained:
        sections.append(
            f"## Pre-training ({which})\n\n" + to_markdown(*comparison_table(pretrained))
        )
    if compared:
        sections.append(plain_summary(compared, flags).rstrip("\n"))
    return "\n\n".join(sections) + "\n"


def csv_rows(cells: Iterable[Cell]) -> tuple[list[str], list[list[Any]]]:
    """Columns (``CSV_FIELDS`` then the swept config keys) and one row per cell."""
    cells = list(cells)
    columns = [*CSV_FIELDS, *swept_columns(cells)]
    return columns, [[getattr(c, name) for name in CSV_FIELDS] + [v for _, v in c.params] for c in cells]


def write_csv(cells: Iterable[Cell], path: str | Path) -> Path:
    """One line per aggregated cell: its grouping keys and condition, labelled examples, mean,
    std, n, duplicates, stderr, chance and the swept config values."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns, rows = csv_rows(cells)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
    return path
