"""One figure per task: the metric against the number of labelled examples the model learned from.

x is k for prompting (0 zero-shot, 1 one-shot, k few-shot) and N for fine-tuning, on a symlog
axis since it spans 0 to tens of thousands; error bars are the sample std over seeds; the chance
/ majority-class level is a dashed line. Figures are drawn on Agg canvases, so no display or
pyplot state is involved.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from gptlab.report.aggregate import FINETUNE, Cell, primary_split

FAMILIES = {FINETUNE: "fine-tuning"}
PROMPTING = "prompting"
# settings that can tell apart series of one family; named in the legend where they differ
SERIES_KEYS = ("model", "init", "prompt")


def _family(cell: Cell) -> str:
    return FAMILIES.get(cell.regime, PROMPTING)


def task_figure(cells: Iterable[Cell]) -> Figure:
    """The figure of one task's cells of one metric (its primary split; cells without a number of
    labelled examples, e.g. pre-training, are left out)."""
    cells = [c for c in cells if c.labelled_examples is not None]
    if not cells:
        raise ValueError("no fine-tuning or prompting cells to plot")
    tasks, metrics = {c.task for c in cells}, {c.metric for c in cells}
    if len(tasks) > 1 or len(metrics) > 1:
        raise ValueError(f"one figure shows one task and metric, got tasks {sorted(tasks)} and metrics {sorted(metrics)}")
    (task,), (metric,) = tasks, metrics
    split = primary_split(cells)
    cells = [c for c in cells if c.split == split]

    series: dict[tuple, list[Cell]] = defaultdict(list)
    for cell in cells:
        series[(_family(cell), *(getattr(cell, k) for k in SERIES_KEYS))].append(cell)
    varying = {
        family: [
            i for i, name in enumerate(SERIES_KEYS)
            if len({key[1 + i] for key in series if key[0] == family}) > 1
        ]
        for family in {key[0] for key in series}
    }

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    # fine-tuning first, so it keeps the first colour in every figure
    for key in sorted(series, key=lambda k: (k[0] != FAMILIES[FINETUNE], [str(v) for v in k])):
        points = sorted(series[key], key=lambda c: c.labelled_examples)
        extra = ", ".join(f"{SERIES_KEYS[i]}={key[1 + i]}" for i in varying[key[0]])
        ax.errorbar(
            [c.labelled_examples for c in points],
            [c.mean for c in points],
            yerr=[c.std or 0.0 for c in points],
            marker="o",
            capsize=3,
            label=f"{key[0]} ({extra})" if extra else key[0],
        )
    chances = [c.chance for c in cells if c.chance is not None]
    if chances:
        ax.axhline(statistics.fmean(chances), linestyle="--", color="grey", label="chance / majority class")

    ax.set_xscale("symlog", linthresh=1)
    xs = sorted({c.labelled_examples for c in cells})
    # symlog autoscaling leaves no margin: the outermost points would sit on the frame
    ax.set_xlim(min(xs) - 0.5, max(xs) * 1.6 if max(xs) > 0 else 0.5)
    ax.xaxis.set_major_locator(FixedLocator(xs))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(x) for x in xs], rotation=45 if len(xs) > 6 else 0)
    ax.set_xlabel("labelled examples (k in the prompt, N for fine-tuning)")
    ax.set_ylabel(metric)
    ax.set_title(f"{task} ({split}): {metric} vs labelled examples")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return fig


def task_figures(cells: Iterable[Cell]) -> dict[str, Figure]:
    """task -> its figure, for every task with fine-tuning or prompting cells (one metric per
    task, as ``select_metric`` returns them)."""
    by_task: dict[str, list[Cell]] = defaultdict(list)
    for cell in cells:
        if cell.labelled_examples is not None:
            by_task[cell.task].append(cell)
    return {task: task_figure(task_cells) for task, task_cells in sorted(by_task.items())}


def save_plots(cells: Iterable[Cell], out_dir: str | Path) -> dict[str, Path]:
    """Write ``out_dir/<task>.png`` for each task of ``task_figures``; task -> file."""
    out_dir = Path(out_dir)
    paths = {}
    for task, fig in task_figures(cells).items():
        out_dir.mkdir(parents=True, exist_ok=True)
        paths[task] = out_dir / f"{task}.png"
        fig.savefig(paths[task], dpi=120)
    return paths
