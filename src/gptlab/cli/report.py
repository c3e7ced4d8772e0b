"""``gptlab-report``: compare fine-tuning and prompting across every run below some directories.

    gptlab-report runs/demo                       # run dirs or multirun dirs, searched recursively
    gptlab-report runs/sst2 runs/sst2-icl --out report --metric acc --wandb
    gptlab-report multirun/lambda-sweep --x regime.module.lm_lambda   # metric vs a swept value

Reads every ``results.jsonl`` below the given directories, aggregates over seeds, prints the
task × regime table (each evaluation suite's table with its score, and the curves of in-loop
evaluation during pre-training) and writes into ``--out``: ``report.md``, ``results.csv`` (one line per
aggregated cell) and ``plots/<task>.png`` (with ``--x KEY`` also ``plots/<task>_vs_<KEY>.png``).
Runs are told apart by their full condition (``gptlab.conditions``): config values that differ
between otherwise alike runs are table columns.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from gptlab.report.aggregate import PRETRAIN, Cell, aggregate, select_metric
from gptlab.report.curves import curves_section
from gptlab.report.plots import save_plots, save_sweep_plots
from gptlab.report.predictions import load_predictions
from gptlab.report.results import find_results, read_results
from gptlab.report.suite import is_suite_score, suite_tables
from gptlab.report.table import comparison_table, csv_rows, swept_columns, tables_markdown, write_csv

REPORT_FILE = "report.md"
CSV_FILE = "results.csv"
PLOTS_DIR = "plots"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gptlab-report",
        description="Aggregate results.jsonl files over seeds into a fine-tuning vs prompting report.",
    )
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="run or multirun directories (searched recursively)")
    parser.add_argument("--out", help="where to write report.md, results.csv and plots/ (default: the first DIR; ./report when it is a file)")
    parser.add_argument("--metric", help="report this metric for every task that has it (default: each task's primary metric)")
    parser.add_argument("--x", metavar="KEY", help="also plot each task's metric against this swept config value (a dotted key, e.g. regime.module.lm_lambda)")
    parser.add_argument("--wandb", action="store_true", help="also log the table and plots to W&B (offline unless WANDB_MODE says otherwise)")
    parser.add_argument("--wandb-project", help="W&B project (implies --wandb; default: gptlab)")
    return parser.parse_args(argv)


def log_to_wandb(cells: list[Cell], shown: list[Cell], plots: dict[str, Path], out: Path, project: str) -> Path:
    """Log the comparison table, every aggregated cell and the plots to one W&B run; its dir.

    The run is offline unless ``WANDB_MODE`` says otherwise, and lives under ``WANDB_DIR`` when
    set, else under ``out``.
    """
    import wandb

    run = wandb.init(
        project=project,
        job_type="report",
        mode=os.environ.get("WANDB_MODE", "offline"),
        dir=os.environ.get("WANDB_DIR") or str(out),
    )
    try:
        header, rows = comparison_table([c for c in shown if c.regime != PRETRAIN])
        columns, data = csv_rows(cells)
        run.log(
            {
                "report/comparison": wandb.Table(columns=header, data=rows),
                "report/cells": wandb.Table(columns=columns, data=data),
                **{f"report/plot/{task}": wandb.Image(str(path)) for task, path in plots.items()},
            }
        )
        return Path(run.dir).parent
    finally:
        run.finish()


def predictions_section(dirs: Sequence[str]) -> str:
    """Markdown listing the runs' ``predictions.jsonl`` files (in-context and fine-tuned
    tasks): examples and how many were wrong."""
    runs: dict[str, list[dict]] = {}
    for row in load_predictions(dirs):
        runs.setdefault(row["run_dir"], []).append(row)
    lines = []
    for run, rows in runs.items():
        k = rows[0]["k"]
        shots = "" if k is None else f" k={k}"  # fine-tuning runs have no k
        lines.append(
            f"- {run}: {rows[0]['task']} {rows[0]['regime']}{shots}, {len(rows)} examples, "
            f"{sum(not row['correct'] for row in rows)} wrong"
        )
    return "\n## Per-example predictions (predictions.jsonl)\n\n" + "\n".join(lines) + "\n" if lines else ""


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        files = find_results(args.dirs)
        rows = [row for path in files for row in read_results(path)]
        if not rows:
            raise ValueError(f"no result rows in {', '.join(map(str, files))}")
        # a suite's score and the evaluations during pre-training have tables of their own
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cells = aggregate(row for row in rows if not is_suite_score(row) and row["step"] is None)
        for warning in caught:
            print(f"gptlab-report: warning: {warning.message}", file=sys.stderr)
        shown = select_metric(cells, args.metric)
        if args.x is not None and args.x not in (swept := swept_columns(cells)):
            raise ValueError(
                f"--x {args.x}: no runs of the results differ only in it; "
                f"swept config values: {', '.join(swept) or 'none'}"
            )
        tables = tables_markdown(cells, args.metric) + suite_tables(rows)
    except (OSError, ValueError) as err:
        raise SystemExit(f"gptlab-report: error: {err}") from err

    first = Path(args.dirs[0])
    out = Path(args.out) if args.out else first if first.is_dir() else Path("report")
    out.mkdir(parents=True, exist_ok=True)
    plots = save_plots(shown, out / PLOTS_DIR)
    if args.x is not None:
        plots.update(save_sweep_plots(shown, args.x, out / PLOTS_DIR))
    inloop, curve_plots = curves_section(rows, out / PLOTS_DIR)
    tables += inloop
    plots.update(curve_plots)
    sources = "\n".join(f"- {path}" for path in files)
    figures = "\n".join(f"- {task}: {PLOTS_DIR}/{path.name}" for task, path in plots.items())
    report = f"# gptlab report\n\n{len(rows)} result rows from:\n\n{sources}\n\n{tables}"
    report += f"\n## Plots\n\n{figures}\n" if plots else ""
    report += predictions_section(args.dirs)
    (out / REPORT_FILE).write_text(report, encoding="utf-8")
    write_csv(cells, out / CSV_FILE)

    print(tables)
    print(f"report: {out / REPORT_FILE}")
    print(f"table:  {out / CSV_FILE}")
    for path in plots.values():
        print(f"plot:   {path}")
    if args.wandb or args.wandb_project:
        run_dir = log_to_wandb(cells, shown, plots, out, args.wandb_project or "gptlab")
        print(f"wandb:  {run_dir}")


if __name__ == "__main__":
    main()
