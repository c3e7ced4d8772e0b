"""The report's in-loop evaluation curves (``gptlab.lit.inloop``): for each pre-training run (suite
× model × init × seed), every task's suite metric and the suite's score against tokens seen, as a
figure (``plots/inloop_<suite>_<n>.png``) and a table (one row per evaluation)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gptlab.report.suite import SUITE_KEYS, is_suite_score
from gptlab.report.table import MISSING, to_markdown

Row = Mapping[str, Any]
Curves = dict[str, dict[int, float]]  # series (task/metric, or "score") -> tokens -> value


def curves(rows: Iterable[Row]) -> dict[tuple[Any, ...], Curves]:
    """(suite, model, init, seed) -> its series, from the rows of in-loop evaluations that enter
    the suite's score (each task's suite metric, and the score)."""
    runs: dict[tuple[Any, ...], Curves] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        if row.get("step") is None or row.get("suite") is None:
            continue
        series = "score" if is_suite_score(row) else f"{row['task']}/{row['metric']}"
        if row["k"]:
            series += f" k={row['k']}"
        runs[tuple(row.get(key) for key in SUITE_KEYS)][series][row["tokens"]] = row["value"]
    return runs


def curve_figure(title: str, series: Curves) -> Figure:
    """The series against tokens seen: the tasks thin, the score thick."""
    fig = Figure(figsize=(7, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, points in sorted(series.items(), key=lambda item: item[0] == "score"):
        tokens = sorted(points)
        ax.plot(tokens, [points[t] for t in tokens], marker="o", markersize=3,
                linewidth=2.5 if name == "score" else 1.2, label=name if name != "score" else "score (centered mean)")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("metric")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def curves_section(rows: Iterable[Row], plots_dir: str | Path) -> tuple[str, dict[str, Path]]:
    """Markdown for every in-loop evaluation run, and the figures written (name -> file)."""
    sections, paths = [], {}
    for n, ((suite, model, init, seed), series) in enumerate(sorted(curves(rows).items(), key=lambda r: tuple(map(str, r[0])))):
        title = f"{suite}: {model} ({init}, seed {seed})"
        name = f"inloop_{suite}_{n}"
        paths[name] = Path(plots_dir) / f"{name}.png"
        paths[name].parent.mkdir(parents=True, exist_ok=True)
        curve_figure(title, series).savefig(paths[name], dpi=120)
        names = sorted(series, key=lambda s: (s == "score", s))
        tokens = sorted({t for points in series.values() for t in points})
        table = [[f"{t:,}", *(_number(series[s].get(t)) for s in names)] for t in tokens]
        sections.append(f"### {title}\n\n![{name}]({Path(plots_dir).name}/{name}.png)\n\n" + to_markdown(["tokens", *names], table))
    if not sections:
        return "", {}
    text = "## During pre-training (in-loop evaluation)\n\nEach task's suite metric and the suite's score against tokens seen.\n\n"
    return text + "\n\n".join(sections) + "\n", paths


def _number(value: float | None) -> str:
    return MISSING if value is None else f"{value:.3f}"
