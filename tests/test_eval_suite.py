"""Evaluation suites: one command scores every task of a suite on one checkpoint, writes each
task's run and the suite's centered score, the report shows the suite's table, and bad input is
refused before any model runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_incontext import saved_checkpoint
from test_train import make_cfg

from gptlab.cli.report import main as report_main
from gptlab.cli.suite import run_suite
from gptlab.report.predictions import read_predictions
from gptlab.report.results import read_results
from gptlab.schema import ConfigError
from gptlab.tasks.suite import SuiteSpec

TASKS = "eval_suite.tasks=[winogrande,{name:arc_challenge,metric:acc_norm,mutual_info:lm-eval},lambada]"


def suite_cfg(tmp_path: Path, data_dir: Path, *overrides: str):
    ckpt = saved_checkpoint(tmp_path / "nano.ckpt")
    return make_cfg(
        tmp_path, "eval_suite=gpt3_zero_shot", TASKS, "eval_suite.limit=12", f"model.init_from={ckpt}",
        f"paths.data_dir={data_dir}", "regime.batch_size=4", "regime.global_batch_size=4", *overrides,
    )


def test_a_suite_scores_every_task_and_its_centered_mean(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture
) -> None:
    metrics = run_suite(suite_cfg(tmp_path, shared_data, "eval_suite.shots=[0,2]"))
    run = tmp_path / "run"
    contributions = {}
    for task, metric in (("winogrande", "acc"), ("arc_challenge", "acc_norm"), ("lambada", "acc")):
        for k in (0, 2):
            rows = read_results(run / "suite" / f"{task}_k{k}" / "results.jsonl")
            assert {r["k"] for r in rows} == {k} and all(r["n_eval"] == 12 for r in rows)
            (marked,) = [r for r in rows if r["suite"] == "gpt3_zero_shot"]
            assert marked["metric"] == metric
            contributions[task, k] = marked
            assert len(read_predictions(run / "suite" / f"{task}_k{k}")) == 12
    assert "acc_mutual_info" in {r["metric"] for r in read_results(run / "suite" / "arc_challenge_k0" / "results.jsonl")}
    scores = {r["k"]: r["value"] for r in read_results(run / "results.jsonl")}
    for k in (0, 2):
        by_hand = [(r["value"] - (r["chance"] or 0)) / (1 - (r["chance"] or 0))
                   for (_, shots), r in contributions.items() if shots == k]
        assert scores[k] == pytest.approx(sum(by_hand) / 3)
        assert metrics[f"suite/k{k}/score"] == pytest.approx(scores[k])
    assert contributions["winogrande", 0]["chance"] == 0.5 and contributions["lambada", 0]["chance"] is None
    assert "score (mean centered, k=2)" in capsys.readouterr().out
    report_main([str(run)])
    report = (run / "report.md").read_text()
    assert "### gpt3_zero_shot: gpt-nano" in report
    assert f"| **score**     | centered mean | {scores[0]:.3f}" in report


def test_the_shipped_suite_names_valid_tasks_and_metrics(compose_config) -> None:
    from omegaconf import OmegaConf

    cfg = compose_config("eval_suite=gpt3_zero_shot")
    suite = SuiteSpec.from_config(OmegaConf.to_container(cfg.eval_suite))
    assert [t.name for t in suite.tasks] == [
        "hellaswag", "lambada", "piqa", "winogrande", "arc_easy", "arc_challenge", "openbookqa", "storycloze", "copa"
    ]
    assert cfg.regime.name == "zero_shot" and cfg.optimized_metric == "suite/score"


@pytest.mark.parametrize("node, message", [
    ({"name": "s", "tasks": ["hellaswagg"]}, r"eval_suite=s: unknown task 'hellaswagg'; valid tasks: .*hellaswag"),
    ({"name": "s", "tasks": [{"name": "piqa", "metrc": "acc"}]}, r"task piqa: unknown key\(s\) \['metrc'\]"),
    ({"name": "s", "tasks": [{"metric": "acc"}]}, r"a task entry \{'metric': 'acc'\} has no name"),
    ({"name": "s", "tasks": [{"name": "piqa", "mutual_info": "gpt-3"}]}, r"mutual_info='gpt-3'; valid: null, lm-eval, gpt3"),
    ({"name": "s", "tasks": ["piqa"], "shots": [-1]}, r"shots must be a non-empty list"),
    ({"name": "s", "tasks": []}, r"tasks must be a non-empty list"),
])
def test_bad_suites_are_named(node: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SuiteSpec.from_config(node)


def test_a_malformed_line_stops_the_suite_before_any_model_runs(tmp_path: Path, shared_data: Path) -> None:
    data = tmp_path / "data"
    for name, relative, lines in (("winogrande", "dev.jsonl", 12), ("piqa", "validation.jsonl", 12)):
        (data / name).mkdir(parents=True)
        head = (shared_data / name / relative).read_text().splitlines(keepends=True)[:lines]
        if name == "piqa":
            head[6] = '{"query": "Question: a broken line\\n", "choices": ["a", "b"]\n'
        (data / name / relative).write_text("".join(head))
    cfg = suite_cfg(tmp_path, data, "eval_suite.tasks=[winogrande,{name:piqa,metric:acc_norm}]")
    with pytest.raises(ConfigError, match=r"eval_suite=gpt3_zero_shot, task piqa \(k=0\): .*validation.jsonl.*line 7"):
        run_suite(cfg)
    assert not (tmp_path / "run" / "suite" / "winogrande_k0").exists()  # winogrande, first, never ran


def test_a_suite_metric_the_task_does_not_log_is_refused(tmp_path: Path, shared_data: Path) -> None:
    cfg = suite_cfg(tmp_path, shared_data, "eval_suite.tasks=[{name:piqa,metric:acc_mutual_info}]")
    with pytest.raises(ConfigError, match=r"task piqa \(k=0\): metric 'acc_mutual_info' is not one the task logs"):
        run_suite(cfg)
