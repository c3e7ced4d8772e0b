"""One figure per task: the metric against the number of labelled examples the model learned
from, or (``gptlab-report --x KEY``) against a swept config value.

x is k for prompting (0 zero-shot, 1 one-shot, k few-shot) and N for fine-tuning, on a symlog
axis since it spans 0 to tens of thousands; error bars are the sample std over seeds; the chance
/ majority-class level is a dashed line. A sweep figure puts the swept value on x (log scale
when its values are positive and span a factor of 10 or more, as learning rates do; categories
when they are not numbers), one line per other setting. Figures are drawn on Agg canvases, so
no display or pyplot state is involved.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from gptlab.report.aggregate import FINETUNE, Cell, is_number, param_sort_key, primary_split

FAMILIES = {FINETUNE: "fine-tuning"}
PROMPTING = "prompting"
# settings that can tell apart series of one family; named in the legend where they differ
SERIES_KEYS = ("model", "init", "prompt", "params")


def _setting(name: str, value: object) -> str:
    if name == "params":  # the swept config values, each by its key
        return ", ".join(f"{key}={v}" for key, v in value)
    return f"{name}={value}"


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
        extra = ", ".join(_setting(SERIES_KEYS[i], key[1 + i]) for i in varying[key[0]])
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


# what tells apart the lines of a sweep figure, besides the other swept values
SWEEP_SERIES_KEYS = ("regime", "model", "init", "k", "n_train_examples", "prompt")


def sweep_figure(cells: Iterable[Cell], key: str) -> Figure:
    """One task's metric against the swept config value ``key`` (a name in the cells' ``params``),
    mean ± std over seeds (± the bootstrap standard error for a single run)."""
    cells = [c for c in cells if dict(c.params).get(key) is not None]
    if not cells:
        raise ValueError(f"no cells with a value of {key}")
    (task,), (metric,) = {c.task for c in cells}, {c.metric for c in cells}
    split = primary_split(cells)
    cells = [c for c in cells if c.split == split]

    def series_key(cell: Cell) -> tuple[tuple[str, object], ...]:
        fields = [(name, getattr(cell, name)) for name in SWEEP_SERIES_KEYS]
        return tuple(fields + [(name, value) for name, value in cell.params if name != key])

    series: dict[tuple, list[Cell]] = defaultdict(list)
    for cell in cells:
        series[series_key(cell)].append(cell)
    varying = [i for i in range(len(next(iter(series)))) if len({k[i][1] for k in series}) > 1]
    xs = sorted({dict(c.params)[key] for c in cells}, key=param_sort_key)
    numeric = all(is_number(x) for x in xs)

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for skey in sorted(series, key=str):
        points = sorted(series[skey], key=lambda c: param_sort_key(dict(c.params)[key]))
        x = [dict(c.params)[key] for c in points]
        ax.errorbar(
            x if numeric else [xs.index(v) for v in x],
            [c.mean for c in points],
            yerr=[c.std if c.std is not None else c.stderr or 0.0 for c in points],
            marker="o",
            capsize=3,
            label=", ".join(f"{skey[i][0]}={skey[i][1]}" for i in varying) or points[0].regime,
        )
    chances = [c.chance for c in cells if c.chance is not None]
    if chances:
        ax.axhline(statistics.fmean(chances), linestyle="--", color="grey", label="chance / majority class")
    if numeric and min(xs) > 0 and max(xs) >= 10 * min(xs):
        ax.set_xscale("log")
    elif not numeric:
        ax.set_xticks(range(len(xs)), [str(x) for x in xs])
    ax.set_xlabel(key)
    ax.set_ylabel(metric)
    ax.set_title(f"{task} ({split}): {metric} vs {key}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return fig


def save_sweep_plots(cells: Iterable[Cell], key: str, out_dir: str | Path) -> dict[str, Path]:
    """Write ``out_dir/<task>_vs_<key>.png`` for each task with values of ``key``; task -> file."""
    by_task: dict[str, list[Cell]] = defaultdict(list)
    for cell in cells:
        if dict(cell.params).get(key) is not None:
            by_task[cell.task].append(cell)
    out_dir = Path(out_dir)
    paths = {}
    for task, task_cells in sorted(by_task.items()):
        out_dir.mkdir(parents=True, exist_ok=True)
        paths[f"{task} vs {key}"] = out_dir / f"{task}_vs_{key}.png"
        sweep_figure(task_cells, key).savefig(paths[f"{task} vs {key}"], dpi=120)
    return paths
