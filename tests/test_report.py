"""gptlab-report: discovery, aggregation over seeds, the table, the CSV, the plots, W&B logging.

The expected numbers are worked out by hand from the synthetic rows written below.
"""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import pytest

from gptlab.cli.report import main as report_main
from gptlab.conditions import digest
from gptlab.report.aggregate import Cell, aggregate, primary_metric, select_metric
from gptlab.report.flags import cell_flags
from gptlab.report.plots import save_plots, sweep_figure, task_figure
from gptlab.report.predictions import write_predictions
from gptlab.report.results import N_TRUNCATED, TOP_ANSWER_SHARE, ResultRow, append_results, find_results, load_results
from gptlab.report.table import comparison_table, tables_markdown, to_markdown, write_csv

BASE = dict(split="validation", model="gpt-micro", init="runs/demo/checkpoints/last.ckpt")
TOPIC_CHANCE = 0.25


def write_run(run_dir: Path, *rows: dict) -> None:
    """Rows of one run; as a run would, each carries its condition: here the settings the rows
    name (all but the seeds), as the config and by their hash."""
    written = []
    for row in rows:
        row = {**BASE, **row}
        config = {key: row.get(key) for key in ("task", "regime", "model", "init", "k", "n_train_examples", "prompt")}
        written.append(ResultRow(**{"condition": digest(config), "config": config, **row}))
    append_results(run_dir, written)


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """A multirun dir: demo_topic fine-tuned with N=16 (3 seeds) and N=400 (2 seeds), prompted
    zero-shot (2 seeds), one-shot (1) and 4-shot (3 few-shot seeds); cola, stsb and conll2003
    fine-tuned; a pre-training run. Fine-tuning rows also carry the task loss."""
    root = tmp_path / "multirun"
    topic = dict(task="demo_topic", metric="acc", chance=TOPIC_CHANCE)
    for i, (seed, n, acc) in enumerate([(1, 16, 0.5), (2, 16, 0.6), (3, 16, 0.7), (1, 400, 0.8), (2, 400, 0.9)]):
        write_run(
            root / "finetune" / str(i),
            dict(topic, value=acc, regime="finetune", seed=seed, n_train_examples=n),
            dict(topic, metric="loss", chance=None, value=1.0 + seed, regime="finetune", seed=seed, n_train_examples=n),
        )
    prompted = [("zero_shot", 0, 1, 0.3), ("zero_shot", 0, 2, 0.4), ("one_shot", 1, 1, 0.35)]
    prompted += [("few_shot", 4, s, acc) for s, acc in [(1, 0.4), (2, 0.5), (3, 0.9)]]
    for i, (regime, k, fewshot_seed, acc) in enumerate(prompted):
        write_run(
            root / "incontext" / str(i),
            dict(topic, value=acc, regime=regime, k=k, seed=1234, fewshot_seed=fewshot_seed, prompt="topic"),
        )
    write_run(
        root / "cola",
        dict(task="cola", metric="mcc", value=0.2, regime="finetune", seed=1, n_train_examples=8551, chance=0.0),
        dict(task="cola", metric="acc", value=0.7, regime="finetune", seed=1, n_train_examples=8551),
    )
    write_run(
        root / "stsb",
        dict(task="stsb", metric="spearman", value=0.5, regime="finetune", seed=1, n_train_examples=5749),
        dict(task="stsb", metric="pearson", value=0.6, regime="finetune", seed=1, n_train_examples=5749),
    )
    write_run(
        root / "conll",
        *(
            dict(task="conll2003", split=split, metric=metric, value=value, regime="finetune", seed=1, n_train_examples=14041)
            for split in ("validation", "test")
            for metric, value in [("precision", 0.7), ("recall", 0.5), ("f1", 0.6 if split == "validation" else 0.55)]
        ),
    )
    write_run(
        root / "pretrain",
        dict(task="demo_corpus", metric="loss", value=5.0, regime="pretrain", seed=1234, init="scratch"),
        dict(task="demo_corpus", metric="ppl", value=148.4, regime="pretrain", seed=1234, init="scratch"),
    )
    return root


def find(cells: list[Cell], **keys) -> Cell:
    (cell,) = [c for c in cells if all(getattr(c, k) == v for k, v in keys.items())]
    return cell


def parse_markdown(text: str) -> list[list[str]]:
    return [[part.strip() for part in line.strip().strip("|").split("|")] for line in text.strip().splitlines()]


# --- discovery and reading ------------------------------------------------------------------


def test_discovery_finds_every_run_below_a_multirun_dir_once(sweep: Path) -> None:
    files = find_results([sweep])
    assert len(files) == 5 + 6 + 4
    assert all(f.name == "results.jsonl" for f in files)
    # a run dir listed again below its multirun dir, and a results file given directly
    again = find_results([sweep, sweep / "finetune", sweep / "cola" / "results.jsonl"])
    assert sorted(again) == sorted(files)
    assert len(load_results([sweep])) == 5 * 2 + 6 + 2 + 2 + 6 + 2


def test_a_missing_or_empty_dir_is_an_error_naming_it(tmp_path: Path, sweep: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        find_results([sweep, tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: holds no results\.jsonl"):
        find_results([tmp_path / "empty"])


def test_malformed_rows_are_errors_naming_file_and_line(tmp_path: Path) -> None:
    good = json.dumps({"task": "t", "split": "validation", "metric": "acc", "value": 0.5})
    for bad, message in [
        ("{not json", "not a JSON row"),
        (json.dumps({"task": "t", "split": "validation", "value": 0.5}), r"missing keys \['metric'\]"),
        (json.dumps({"task": "t", "split": "validation", "metric": "acc", "value": "high"}), "value 'high' is not a number"),
    ]:
        path = tmp_path / "run" / "results.jsonl"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"{good}\n{bad}\n")
        with pytest.raises(ValueError, match=rf"results\.jsonl:2: {message}"):
            load_results([tmp_path / "run"])


def test_rows_written_before_chance_existed_read_with_chance_none(tmp_path: Path) -> None:
    old = {"task": "rte", "split": "validation", "metric": "acc", "value": 0.5, "regime": "finetune",
           "model": "gpt1", "seed": 1, "n_train_examples": 2490}
    (tmp_path / "results.jsonl").write_text(json.dumps(old) + "\n")
    (row,) = load_results([tmp_path])
    assert row["chance"] is None and row["k"] is None and row["n_train_examples"] == 2490
    with pytest.warns(UserWarning, match="1 of 1 result rows record no condition"):
        (cell,) = aggregate([row])
    assert cell.chance is None and cell.condition is None


def test_old_rows_without_a_condition_group_as_before_and_a_same_seed_repeat_is_flagged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # an ablation written before conditions existed: λ = 0 and 0.5 look alike, with one seed
    old = {"task": "rte", "split": "validation", "metric": "acc", "regime": "finetune", "model": "gpt-nano", "seed": 1}
    (tmp_path / "results.jsonl").write_text("".join(json.dumps({**old, "value": v}) + "\n" for v in (0.5, 0.6)))
    report_main([str(tmp_path)])
    out, err = capsys.readouterr()
    assert "gptlab-report: warning: 2 of 2 result rows record no condition" in err
    # one cell as before, but one run (n=1), not two seeds: the repeat is named
    assert "0.550 (n=1, +1 same-seed duplicate)" in out


def test_conditions_differing_in_a_swept_value_are_rows_of_their_own(tmp_path: Path) -> None:
    rows = [
        {**BASE, "task": "rte", "metric": "acc", "regime": "finetune", "n_train_examples": 2490, "seed": seed,
         "value": value, "condition": f"c{lam}", "config": {"regime.module.lm_lambda": lam, "regime.module.lr": 1e-4}}
        for lam, seed, value in [(0, 1, 0.5), (0, 2, 0.7), (0.5, 1, 0.6), (0.5, 2, 0.8), (0.5, 2, 0.8)]
    ]
    cells = aggregate(rows)
    assert [(c.params, c.n, c.duplicates, c.mean) for c in cells] == [
        ((("regime.module.lm_lambda", 0),), 2, 0, pytest.approx(0.6)),
        ((("regime.module.lm_lambda", 0.5),), 2, 1, pytest.approx(0.7)),
    ]
    header, body = comparison_table(cells)
    assert header == ["task", "split", "metric", "model", "lm_lambda", "finetune (N=2490)"]
    assert [line[4:] for line in body] == [
        ["0", "0.600 ± 0.141 (n=2)"],
        ["0.5", "0.700 ± 0.141 (n=2, +1 same-seed duplicate)"],
    ]
    with open(write_csv(cells, tmp_path / "results.csv"), newline="") as f:
        lines = list(csv.DictReader(f))
    assert [(line["regime.module.lm_lambda"], line["n"], line["duplicates"]) for line in lines] == [("0", "2", "0"), ("0.5", "2", "1")]


def test_a_swept_list_value_is_a_row_of_its_own() -> None:
    rows = [{**BASE, "task": "rte", "metric": "acc", "regime": "finetune", "seed": 1, "value": v,
             "condition": f"c{v}", "config": {"regime.module.betas": betas}}
            for v, betas in [(0.5, [0.9, 0.95]), (0.6, [0.9, 0.999])]]
    cells = aggregate(rows)
    assert [c.params for c in cells] == [(("regime.module.betas", (0.9, 0.95)),), (("regime.module.betas", (0.9, 0.999)),)]
    header, body = comparison_table(cells, cell_flags(cells))
    assert header[4] == "betas" and [line[4] for line in body] == ["(0.9, 0.95)", "(0.9, 0.999)"]


def test_a_single_run_shows_its_bootstrap_standard_error() -> None:
    row = {**BASE, "task": "rte", "metric": "acc", "regime": "zero_shot", "k": 0, "seed": 1, "value": 0.55,
           "stderr": 0.0312, "condition": "c", "config": {}}
    (cell,) = aggregate([row])
    assert comparison_table([cell])[1][0][-1] == "0.550 ± 0.031 SE (n=1)"
    (cell,) = aggregate([row, {**row, "seed": 2, "value": 0.65}])
    assert cell.stderr is None and cell.std == pytest.approx(0.0707107)  # two runs: the spread over seeds


def test_a_swept_value_is_plotted_on_x_and_an_unswept_key_is_refused(tmp_path: Path, capsys) -> None:
    for lr, seed, value in [(1e-5, 1, 0.5), (1e-5, 2, 0.6), (1e-4, 1, 0.7), (1e-3, 1, 0.4)]:
        write_run(tmp_path / "runs" / f"{lr}-{seed}", dict(task="rte", metric="acc", value=value, regime="finetune",
                                                          seed=seed, n_train_examples=100))
        path = next((tmp_path / "runs" / f"{lr}-{seed}").glob("results.jsonl"))
        row = json.loads(path.read_text())
        row["config"] = {"regime.module.lr": lr}
        row["condition"] = digest(row["config"])
        path.write_text(json.dumps(row) + "\n")
    report_main([str(tmp_path / "runs"), "--out", str(tmp_path / "report"), "--x", "regime.module.lr"])
    assert png_size(tmp_path / "report" / "plots" / "rte_vs_regime.module.lr.png")[0] > 0
    (cell,) = [c for c in aggregate(load_results([tmp_path / "runs"])) if dict(c.params)["regime.module.lr"] == 1e-5]
    assert (cell.n, cell.mean) == (2, pytest.approx(0.55))
    ax = sweep_figure(aggregate(load_results([tmp_path / "runs"])), "regime.module.lr").axes[0]
    assert ax.get_xscale() == "log"  # 1e-5 .. 1e-3
    (line,) = [bars.lines[0] for bars in ax.containers]
    assert list(line.get_xdata()) == [1e-5, 1e-4, 1e-3]
    assert list(line.get_ydata()) == pytest.approx([0.55, 0.7, 0.4])
    with pytest.raises(SystemExit, match="--x regime.module.lm_lambda: .*swept config values: regime.module.lr"):
        report_main([str(tmp_path / "runs"), "--x", "regime.module.lm_lambda"])


# --- aggregation ----------------------------------------------------------------------------


def test_aggregation_over_seeds_keeps_each_n_and_k_apart(sweep: Path) -> None:
    cells = aggregate(load_results([sweep]))
    topic = dict(task="demo_topic", metric="acc")
    n16 = find(cells, regime="finetune", n_train_examples=16, **topic)
    assert (n16.mean, n16.std, n16.n) == (pytest.approx(0.6), pytest.approx(0.1), 3)
    n400 = find(cells, regime="finetune", n_train_examples=400, **topic)
    # sample std of (0.8, 0.9): sqrt(0.005)
    assert (n400.mean, n400.std, n400.n) == (pytest.approx(0.85), pytest.approx(0.0707107), 2)
    zero = find(cells, regime="zero_shot", **topic)
    assert (zero.mean, zero.std, zero.n) == (pytest.approx(0.35), pytest.approx(0.0707107), 2)
    one = find(cells, regime="one_shot", **topic)
    assert (one.mean, one.std, one.n) == (pytest.approx(0.35), None, 1)
    # three few-shot sampling seeds: deviations -0.2, -0.1, 0.3 -> sqrt(0.14 / 2)
    few = find(cells, regime="few_shot", **topic)
    assert (few.k, few.mean, few.std, few.n) == (4, pytest.approx(0.6), pytest.approx(0.2645751), 3)
    # the loss rows of the same runs are a cell of their own
    loss = find(cells, task="demo_topic", metric="loss", n_train_examples=16)
    assert (loss.mean, loss.n) == (pytest.approx(3.0), 3)
    # demo_topic: 2 N × 2 metrics + 3 prompted; cola 2, stsb 2, conll 2 splits × 3, pretrain 2
    assert len(cells) == 7 + 2 + 2 + 6 + 2


def test_x_position_is_k_for_prompting_and_n_for_fine_tuning(sweep: Path) -> None:
    cells = aggregate(load_results([sweep]))
    x = {(c.regime, c.n_train_examples): c.labelled_examples for c in cells if c.task == "demo_topic" and c.metric == "acc"}
    assert x == {("finetune", 16): 16, ("finetune", 400): 400, ("zero_shot", None): 0, ("one_shot", None): 1, ("few_shot", None): 4}
    assert find(cells, task="demo_corpus", metric="ppl").labelled_examples is None
    # zero-/one-shot rows that do not record k still sit at 0 and 1
    row = {"task": "t", "split": "v", "metric": "acc", "value": 0.5, "regime": "one_shot", "k": None}
    assert aggregate([row])[0].labelled_examples == 1


def test_chance_level_comes_from_the_rows(sweep: Path) -> None:
    cells = aggregate(load_results([sweep]))
    assert {c.chance for c in cells if c.task == "demo_topic" and c.metric == "acc"} == {TOPIC_CHANCE}
    assert find(cells, task="cola", metric="mcc").chance == 0.0
    assert find(cells, task="stsb", metric="pearson").chance is None


@pytest.mark.parametrize(
    "metrics, expected",
    [
        ({"acc", "loss"}, "acc"),
        ({"mcc", "acc", "loss"}, "mcc"),
        ({"pearson", "spearman", "loss"}, "pearson"),
        ({"acc", "f1"}, "acc"),
        ({"exact_match", "f1", "n_truncated"}, "exact_match"),
        ({"precision", "recall", "f1", "loss"}, "f1"),
        ({"loss", "ppl"}, "ppl"),
        ({"loss", "bleu", "rouge"}, "bleu"),
        ({"loss"}, "loss"),
    ],
)
def test_primary_metric(metrics: set[str], expected: str) -> None:
    assert primary_metric(metrics) == expected


def test_metric_selection_and_override(sweep: Path) -> None:
    cells = aggregate(load_results([sweep]))
    chosen = {(c.task, c.metric) for c in select_metric(cells)}
    assert chosen == {("demo_topic", "acc"), ("cola", "mcc"), ("stsb", "pearson"), ("conll2003", "f1"), ("demo_corpus", "ppl")}
    assert {(c.task, c.metric) for c in select_metric(cells, "acc")} == {("demo_topic", "acc"), ("cola", "acc")}
    with pytest.raises(ValueError, match=r"'bleu' is in no results row; metrics in the results: acc, f1, loss, mcc"):
        select_metric(cells, "bleu")


# --- table and CSV ----------------------------------------------------------------------------


def test_markdown_table_layout(sweep: Path) -> None:
    cells = aggregate(load_results([sweep]))
    text = tables_markdown(cells)
    compared, pretrained = text.split("## Pre-training")
    lines = [line for line in compared.splitlines() if line.startswith("|")]
    assert set(lines[1]) <= {"|", "-"}
    table = parse_markdown("\n".join([lines[0], *lines[2:]]))
    header, rows = table[0], {(r[0], r[1]): dict(zip(table[0], r)) for r in table[1:]}
    # demo_topic has two N, so fine-tuning gets a column per N; one k, so few_shot names it
    assert header == ["task", "split", "metric", "model", "finetune (N=16)", "finetune (N=400)",
                      "finetune (N=5749)", "finetune (N=8551)", "finetune (N=14041)",
                      "zero_shot", "one_shot", "few_shot (k=4)", "chance"]
    topic = rows[("demo_topic", "validation")]
    assert topic["metric"] == "acc"
    assert topic["finetune (N=16)"] == "0.600 ± 0.100 (n=3)"
    assert topic["finetune (N=400)"] == "0.850 ± 0.071 (n=2)"
    assert topic["zero_shot"] == "0.350 ± 0.071 (n=2)"
    assert topic["one_shot"] == "0.350 (n=1)"
    assert topic["few_shot (k=4)"] == "0.600 ± 0.265 (n=3)"
    assert topic["chance"] == "0.250"
    assert topic["finetune (N=8551)"] == "–"
    cola = rows[("cola", "validation")]
    assert (cola["metric"], cola["finetune (N=8551)"], cola["zero_shot"], cola["chance"]) == ("mcc", "0.200 (n=1)", "–", "0.000")
    assert rows[("stsb", "validation")]["chance"] == "–"
    assert (rows[("conll2003", "test")]["metric"], rows[("conll2003", "test")]["finetune (N=14041)"]) == ("f1", "0.550 (n=1)")
    pre = parse_markdown("\n".join(line for line in pretrained.splitlines() if line.startswith("| ")))
    assert pre == [["task", "split", "metric", "model", "pretrain"], ["demo_corpus", "validation", "ppl", "gpt-micro", "148.400 (n=1)"]]


def test_one_setting_per_row_shares_one_column_whose_cells_name_it(sweep: Path) -> None:
    cells = [c for c in aggregate(load_results([sweep])) if not (c.task == "demo_topic" and c.n_train_examples == 16)]
    header, rows = comparison_table([c for c in select_metric(cells) if c.regime != "pretrain"])
    assert header[4:] == ["finetune", "zero_shot", "one_shot", "few_shot (k=4)", "chance"]
    by_task = {row[0]: dict(zip(header, row)) for row in rows if row[1] == "validation"}
    assert by_task["demo_topic"]["finetune"] == "0.850 ± 0.071 (n=2, N=400)"
    assert by_task["cola"]["finetune"] == "0.200 (n=1, N=8551)"


def test_runs_from_other_initial_weights_get_their_own_row() -> None:
    rows = [
        {"task": "rte", "split": "validation", "metric": "acc", "value": v, "regime": "finetune",
         "model": "gpt1", "init": init, "n_train_examples": 2490}
        for init, v in [("scratch", 0.5), ("gpt1.ckpt", 0.6)]
    ]
    header, body = comparison_table(aggregate(rows))
    assert header == ["task", "split", "metric", "model", "init", "finetune (N=2490)"]
    assert sorted(body) == [["rte", "validation", "acc", "gpt1", "gpt1.ckpt", "0.600 (n=1)"],
                            ["rte", "validation", "acc", "gpt1", "scratch", "0.500 (n=1)"]]


def test_several_prompts_of_one_regime_get_a_column_each() -> None:
    rows = [
        {"task": "rte", "split": "validation", "metric": "acc", "value": v, "regime": "zero_shot", "k": 0, "prompt": p}
        for p, v in [("lm-eval", 0.5), ("gpt3", 0.6)]
    ]
    header, body = comparison_table(aggregate(rows))
    assert header[-2:] == ["zero_shot (prompt=gpt3)", "zero_shot (prompt=lm-eval)"]
    assert body[0][-2:] == ["0.600 (n=1)", "0.500 (n=1)"]


def test_to_markdown_pads_columns() -> None:
    assert to_markdown(["a", "bbb"], [["xx", "y"]]) == "| a  | bbb |\n|----|-----|\n| xx | y   |"


def test_csv_has_one_line_per_cell_with_keys_and_statistics(sweep: Path, tmp_path: Path) -> None:
    cells = aggregate(load_results([sweep]))
    with open(write_csv(cells, tmp_path / "out" / "results.csv"), newline="") as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == 19
    assert list(lines[0]) == ["task", "split", "metric", "regime", "model", "init", "k", "n_train_examples",
                              "prompt", "condition", "labelled_examples", "mean", "std", "n", "duplicates",
                              "stderr", "chance"]
    few = [line for line in lines if line["regime"] == "few_shot"]
    assert len(few) == 1
    assert {k: few[0][k] for k in ("task", "metric", "k", "n_train_examples", "prompt", "labelled_examples", "n", "chance")} == {
        "task": "demo_topic", "metric": "acc", "k": "4", "n_train_examples": "", "prompt": "topic",
        "labelled_examples": "4", "n": "3", "chance": "0.25",
    }
    assert (float(few[0]["mean"]), float(few[0]["std"])) == (pytest.approx(0.6), pytest.approx(0.2645751))
    one = next(line for line in lines if line["regime"] == "one_shot")
    assert (one["std"], one["n"]) == ("", "1")
    ppl = next(line for line in lines if line["metric"] == "ppl")
    assert (ppl["regime"], ppl["init"], ppl["labelled_examples"], float(ppl["mean"])) == ("pretrain", "scratch", "", 148.4)


# --- plots ----------------------------------------------------------------------------------


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_task_figure_series_error_bars_and_chance_line(sweep: Path) -> None:
    cells = [c for c in aggregate(load_results([sweep])) if c.task == "demo_topic" and c.metric == "acc"]
    ax = task_figure(cells).axes[0]
    series = {bars.get_label(): bars for bars in ax.containers}
    finetune, prompting = series["fine-tuning"].lines[0], series["prompting"].lines[0]
    assert list(finetune.get_xdata()) == [16, 400]
    assert list(finetune.get_ydata()) == pytest.approx([0.6, 0.85])
    assert list(prompting.get_xdata()) == [0, 1, 4]
    assert list(prompting.get_ydata()) == pytest.approx([0.35, 0.35, 0.6])
    (chance,) = [line for line in ax.get_lines() if line.get_label() == "chance / majority class"]
    assert list(chance.get_ydata()) == [TOPIC_CHANCE, TOPIC_CHANCE] and chance.get_linestyle() == "--"
    # error bars: one vertical segment per point, ± std (0 for the single one-shot run)
    segments = series["prompting"].lines[2][0].get_segments()
    assert [(s[0][1], s[1][1]) for s in segments] == [
        pytest.approx((0.35 - 0.0707107, 0.35 + 0.0707107)), pytest.approx((0.35, 0.35)),
        pytest.approx((0.6 - 0.2645751, 0.6 + 0.2645751)),
    ]
    assert ax.get_xscale() == "symlog"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "4", "16", "400"]
    assert ax.get_title() == "demo_topic (validation): acc vs labelled examples"
    assert ax.get_ylabel() == "acc" and "labelled examples" in ax.get_xlabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["chance / majority class", "fine-tuning", "prompting"]


def test_plots_are_written_per_task_on_the_primary_split(sweep: Path, tmp_path: Path) -> None:
    cells = select_metric(aggregate(load_results([sweep])))
    paths = save_plots(cells, tmp_path / "plots")
    # the pre-training task has no labelled examples to plot
    assert sorted(paths) == ["cola", "conll2003", "demo_topic", "stsb"]
    for path in paths.values():
        width, height = png_size(path)
        assert (width, height) == (768, 504) and path.stat().st_size > 10_000
    conll = task_figure([c for c in cells if c.task == "conll2003"]).axes[0]
    assert conll.get_title().startswith("conll2003 (validation)")
    assert list(conll.get_lines()[0].get_ydata()) == [0.6]


# --- the command ----------------------------------------------------------------------------


def test_cli_prints_the_table_and_writes_report_csv_and_plots(sweep: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    report_main([str(sweep / "finetune"), str(sweep / "incontext"), "--out", str(out)])
    printed = capsys.readouterr().out
    assert "| demo_topic | validation | acc    | gpt-micro | 0.600 ± 0.100 (n=3)" in printed
    assert f"plot:   {out / 'plots' / 'demo_topic.png'}" in printed
    report = (out / "report.md").read_text()
    assert "0.600 ± 0.265 (n=3)" in report and "plots/demo_topic.png" in report
    assert len((out / "results.csv").read_text().splitlines()) == 1 + 7
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["demo_topic.png"]
    assert "Per-example predictions" not in report  # these runs wrote none


def test_report_lists_the_per_example_predictions_of_in_context_runs(sweep: Path, tmp_path: Path) -> None:
    run = sweep / "incontext" / "0"
    write_predictions(run, {"task": "demo_topic", "regime": "zero_shot", "k": 0}, {"validation": [
        {"index": 0, "chosen": "a", "gold": "b", "correct": False},
        {"index": 1, "chosen": "b", "gold": "b", "correct": True},
    ]})
    report_main([str(sweep), "--out", str(tmp_path / "report")])
    report = (tmp_path / "report" / "report.md").read_text()
    assert f"- {run}: demo_topic zero_shot k=0, 2 examples, 1 wrong" in report


def test_cli_writes_into_the_first_dir_by_default(sweep: Path, capsys) -> None:
    report_main([str(sweep), "--metric", "acc"])
    assert (sweep / "report.md").is_file() and (sweep / "results.csv").is_file()
    assert sorted(p.name for p in (sweep / "plots").iterdir()) == ["cola.png", "demo_topic.png"]
    assert "Pre-training" not in capsys.readouterr().out


def test_cli_on_pretraining_runs_writes_the_table_and_no_plots(sweep: Path, tmp_path: Path, capsys) -> None:
    report_main([str(sweep / "pretrain"), "--out", str(tmp_path / "lm")])
    assert "| demo_corpus | validation | ppl    | gpt-micro | 148.400 (n=1) |" in capsys.readouterr().out
    assert "148.400 (n=1)" in (tmp_path / "lm" / "report.md").read_text()
    assert not (tmp_path / "lm" / "plots").exists()


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda root: [str(root / "missing")], "missing: no such run directory"),
        (lambda root: [str(root / "empty")], r"empty: holds no results\.jsonl"),
        (lambda root: [str(root / "bad")], r"bad/results\.jsonl:1: not a JSON row"),
        (lambda root: [str(root / "bad"), "--metric", "acc"], r"bad/results\.jsonl:1"),
        (lambda root: [str(root / "good"), "--metric", "bleu"], "'bleu' is in no results row"),
    ],
)
def test_cli_bad_input_is_a_clear_error(tmp_path: Path, make_args, message: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.jsonl").write_text("{oops\n")
    write_run(tmp_path / "good", dict(task="rte", metric="acc", value=0.5, regime="finetune", seed=1))
    with pytest.raises(SystemExit, match=rf"gptlab-report: error: .*{message}"):
        report_main(make_args(tmp_path))


def test_wandb_logs_the_table_to_an_offline_run(sweep: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    report_main([str(sweep / "incontext"), "--out", str(tmp_path / "report"), "--wandb-project", "gptlab-test"])
    (run_dir,) = (tmp_path / "wb" / "wandb").glob("offline-run-*")
    assert f"wandb:  {run_dir}" in capsys.readouterr().out
    (table_file,) = (run_dir / "files" / "media" / "table" / "report").glob("comparison_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["task", "split", "metric", "model", "zero_shot", "one_shot", "few_shot (k=4)", "chance"]
    assert table["data"] == [["demo_topic", "validation", "acc", "gpt-micro", "0.350 ± 0.071 (n=2)", "0.350 (n=1)",
                              "0.600 ± 0.265 (n=3)", "0.250"]]
    assert list((run_dir / "files" / "media" / "images" / "report" / "plot").glob("demo_topic_*.png"))


# --- flags and the plain-language summary ----------------------------------------------------


def demo_rows() -> list[dict]:
    """demo_topic as `make demo` reported it before the demo was redesigned (issue 19's table):
    fine-tuned 0.45; every prompting run at chance, giving one answer to all 160 examples, the
    few-shot contexts all cut to the 128-token window."""
    base = {**BASE, "task": "demo_topic", "model": "gpt-micro", "seed": 1234, "n_eval": 160}
    rows = [{**base, "regime": "finetune", "n_train_examples": 400, "metric": "acc", "value": 0.45, "chance": 0.25},
            {**base, "regime": "finetune", "n_train_examples": 400, "metric": TOP_ANSWER_SHARE, "value": 0.6}]
    for regime, k, truncated in [("zero_shot", 0, 0), ("one_shot", 1, 12), ("few_shot", 4, 160)]:
        run = {**base, "regime": regime, "k": k, "prompt": "topic", "fewshot_seed": 1234}
        rows += [{**run, "metric": "acc", "value": 0.25, "chance": 0.25}, {**run, "metric": TOP_ANSWER_SHARE, "value": 1.0}]
        rows += [{**run, "metric": N_TRUNCATED, "value": truncated}] if truncated else []
    for row in rows:
        config = {"regime": row["regime"]}
        row.update(condition=digest(config), config=config)
    return rows


def test_the_current_demos_degenerate_rows_are_flagged_and_summarised() -> None:
    text = tables_markdown(aggregate(demo_rows()))
    (line,) = [line for line in text.splitlines() if line.startswith("| demo_topic")]
    finetune, zero, one, few, chance = parse_markdown(line)[0][4:]
    assert finetune == "0.450 (n=1)"  # its answers vary: no flag
    assert zero == one == "0.250 (n=1) ⚠ one answer for 100%"
    assert few == "0.250 (n=1) ⚠ one answer for 100% ⚠ 160/160 truncated"  # 12 of 160 cut is not most
    assert "⚠ one answer for X%: the model gave the same answer" in text  # the legend
    summary = text[text.index("## Summary"):]
    assert ("- **demo_topic** (acc): fine-tuning (N=400) 0.450, 0.200 above chance (0.250); best prompting: "
            "zero_shot 0.250, at chance (0.250) [one answer for 100%]. Fine-tuning leads by 0.200.") in summary
    assert "175B parameters trained on 300B tokens; the models here are gpt-micro ≈" in summary


def test_the_summary_says_when_neither_regime_leads_beyond_noise() -> None:
    rows = [r for r in demo_rows() if r["metric"] == "acc" and r["regime"] in ("finetune", "zero_shot")]
    for row, (value, stderr) in zip(rows, [(0.30, 0.036), (0.25, 0.034)]):
        row.update(value=value, stderr=stderr)
    summary = tables_markdown(aggregate(rows))
    # 0.05 apart, two standard errors of the difference 2·sqrt(0.036² + 0.034²) = 0.099
    assert "Neither leads beyond noise (difference 0.050, 2 standard errors 0.099)." in summary


def test_the_summary_judges_gpt1s_ablation_by_the_seed_spread() -> None:
    """The same fine-tuning from a checkpoint and from scratch, two seeds each: which init leads, and
    whether by more than the larger of the two seed spreads."""
    base = {**BASE, "task": "demo_topic", "model": "gpt-micro", "regime": "finetune", "metric": "acc",
            "n_train_examples": 600, "n_eval": 160, "chance": 0.25}
    rows = []
    for init, values in [("ckpt/last.ckpt", (0.60, 0.64)), ("scratch", (0.40, 0.46))]:
        for seed, value in zip((1, 2), values):
            config = {"model.init_from": None if init == "scratch" else init}
            rows.append({**base, "init": init, "seed": seed, "value": value, "condition": digest(config), "config": config})
    summary = tables_markdown(aggregate(rows))
    # means 0.62 and 0.43; sample std over seeds 0.028 and 0.042
    assert ("- **demo_topic** (acc, fine-tuning (N=600)), pre-training ablation: from ckpt/last.ckpt 0.620 (n=2), "
            "from scratch 0.430 (n=2); the pre-trained init leads by 0.190, more than the seed spread (0.042).") in summary
    assert "- **demo_topic** (acc, init scratch): fine-tuning (N=600) 0.430" in summary
    rows[1]["value"] = 0.44  # pre-trained 0.60 and 0.44: mean 0.52, spread 0.113
    summary = tables_markdown(aggregate(rows))
    assert "the pre-trained init leads by 0.090, no more than the seed spread (0.113)." in summary
    # single runs are judged by two standard errors of the difference: 2·sqrt(0.03² + 0.04²) = 0.1
    single = [dict(r, regime="zero_shot", k=0, n_train_examples=None) for r in rows if r["seed"] == 1]
    for row, stderr in zip(single, (0.03, 0.04)):
        row["stderr"] = stderr
    assert ("- **demo_topic** (acc, zero_shot), pre-training ablation: from ckpt/last.ckpt 0.600 (n=1), from "
            "scratch 0.400 (n=1); the pre-trained init leads by 0.200, more than two standard errors of the "
            "difference (0.100).") in tables_markdown(aggregate(single))


def test_descriptive_rows_are_never_a_tasks_headline_metric() -> None:
    assert primary_metric(["n_truncated", "top_answer_share", "spearman"]) == "spearman"
