"""gptlab's in-context multiple-choice scoring against lm-evaluation-harness itself (``hf`` backend).

The reference model of tests/test_lmeval_reference.py, exported as a Hugging Face directory, is
scored by lm-eval (local task YAMLs with lm-eval's own prompts, ``bench/lmeval_peer.py``) and by
gptlab (``init_from`` that directory) on the first 24 examples of the shared files of the zero-shot
suite's multiple-choice tasks that lm-eval can read (copa's XML and hellaswag's six-line text it
cannot; see bench/lmeval_peer.py). Zero-shot, with ``regime.mutual_info=lm-eval``: every answer's
log-likelihood, and its unconditional one (after lm-eval's empty context), equal to 1e-5; ``acc``,
``acc_norm`` and ``acc_mutual_info`` equal, per example and over the split. Few-shot: arc_easy with
two demonstrations from its train split (lm-eval's sampler, seed 1234), log-likelihoods and picks.
One lm-eval run serves all the zero-shot cases selected. The whole file takes 20-25 s on 2 idle CPU
cores (about 55 s beside another busy process), so ``make test`` runs two cheap zero-shot cases
(openbookqa: short answers, with acc_mutual_info; winogrande: multiple input) and the rest is
marked slow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gptlab.cli.train import train
from gptlab.report.predictions import read_predictions
from test_lmeval_reference import _peer, reference_model
from test_train import make_cfg

LINES = 24
# task -> (gptlab's eval split, lm-eval split -> shared file). Each file is copied under its own
# name, so gptlab's task YAML reads it unchanged. storycloze: gptlab trains on val.csv and
# evaluates test.csv as `validation`; lm-eval's storycloze_2016 calls them validation and test.
TASKS: dict[str, tuple[str, dict[str, str]]] = {
    "piqa": ("validation", {"validation": "piqa/validation.jsonl"}),
    "openbookqa": ("test", {"test": "openbookqa/openbookqa.jsonl"}),
    "arc_challenge": ("test", {"test": "arc_challenge/test.jsonl"}),
    "arc_easy": (
        "test", {"train": "arc_easy/train.jsonl", "validation": "arc_easy/dev.jsonl", "test": "arc_easy/test.jsonl"}
    ),
    "winogrande": ("validation", {"validation": "winogrande/dev.jsonl"}),
    "storycloze": ("validation", {"validation": "storycloze/val.csv", "test": "storycloze/test.csv"}),
}
# lm-eval's acc_mutual_info scores each choice as a continuation of an empty context; winogrande's
# choices are contexts, so neither side scores it there
MUTUAL_INFO = {name for name in TASKS if name != "winogrande"}
CHEAP = ("openbookqa", "winogrande")  # the cases `make test` runs
FEW_SHOT = ("arc_easy", 2)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict[str, Any]:
    """The first LINES examples of each task's files (a CSV keeps its header), the exported model
    and lm-eval's task YAMLs."""
    root = tmp_path_factory.mktemp("lmeval_choice")
    files: dict[str, dict[str, Path]] = {}
    for name, (_, splits) in TASKS.items():
        files[name] = {}
        for split, relative in splits.items():
            target = files[name][split] = root / "data" / name / Path(relative).name
            target.parent.mkdir(parents=True, exist_ok=True)
            lines = LINES + 1 if relative.endswith(".csv") else LINES  # a CSV's header line
            with open(shared_data / relative, "rb") as f:
                target.write_bytes(b"".join(f.readline() for _ in range(lines)))
    return {
        "root": root,
        "model": _peer().export_model(reference_model(), root / "hf"),
        "tasks": _peer().write_tasks(root / "tasks", files),
    }


def lmeval_run(setup: dict[str, Any], tasks: list[str], num_fewshot: int = 0) -> dict[str, tuple[dict, list[dict]]]:
    """task -> (lm-eval's metrics, its samples in doc order), from one lm-eval run over ``tasks``."""
    out = _peer().run_lmeval(setup["model"], setup["tasks"], tasks, batch_size=8, num_fewshot=num_fewshot)
    runs = {}
    for task in tasks:
        name = f"gptlab_{task}"
        results = out["results"][name]
        metrics = {key.split(",")[0]: v for key, v in results.items() if key.endswith(",none") and "_stderr" not in key}
        runs[task] = metrics, sorted(out["samples"][name], key=lambda s: s["doc_id"])
    return runs


@pytest.fixture(scope="module")
def lmeval_zero_shot(request: pytest.FixtureRequest, setup: dict[str, Any]) -> dict[str, tuple[dict, list[dict]]]:
    """lm-eval zero-shot on every task this session's selected zero-shot cases compare: one run,
    as lm-eval's start-up (model, datasets) would otherwise be paid per task."""
    tasks = {
        item.callspec.params["task"]
        for item in request.session.items
        if getattr(item, "module", None) is request.module
        and getattr(item, "originalname", None) == "test_zero_shot_scores_equal_lm_eval"
    }
    return lmeval_run(setup, sorted(tasks))


def gptlab_run(
    setup: dict[str, Any], tmp_path: Path, task: str, *overrides: str, regime: str = "zero_shot"
) -> tuple[dict, list[dict]]:
    """gptlab's metrics and its eval split's prediction rows in example order."""
    split = TASKS[task][0]
    cfg = make_cfg(
        tmp_path, f"regime={regime}", f"task={task}", "model=gpt-nano", f"model.init_from={setup['model']}",
        f"task.data_dir={setup['root'] / 'data' / task}", f"task.eval_splits=[{split}]",
        "regime.batch_size=8", "regime.global_batch_size=8", *overrides,
    )
    metrics = train(cfg)
    rows = sorted((r for r in read_predictions(tmp_path / "run") if r["split"] == split), key=lambda r: r["index"])
    return metrics, rows


def same_value(ours: float, theirs: float) -> bool:
    """Exactly equal: at lm-eval's float64, or at the float32 of gptlab's metric states."""
    return ours in (theirs, float(np.float32(theirs)))


def loglikelihoods(sample: dict, answers: int) -> tuple[list[float], list[float]]:
    """lm-eval's (conditional, unconditional) log-likelihoods of a sample's answers: its requests
    are one per answer, then (acc_mutual_info) one per answer after the empty context."""
    values = [float(resp[0][0]) for resp in sample["resps"]]
    assert len(values) in (answers, 2 * answers)
    return values[:answers], values[answers:]


def assert_rows_equal(rows: list[dict], samples: list[dict], mutual_info: bool) -> None:
    """gptlab's prediction rows and lm-eval's samples: same log-likelihoods, same picks."""
    assert len(rows) == len(samples) == LINES
    for row, sample in zip(rows, samples):
        example = row["index"]
        assert example == sample["doc_id"]
        conditional, unconditional = loglikelihoods(sample, len(row["loglikelihoods"]))
        assert row["loglikelihoods"] == pytest.approx(conditional, rel=1e-5, abs=1e-5), example
        assert float(row["correct"]) == sample["acc"], example
        assert float(row["chosen_norm"] == row["gold"]) == sample["acc_norm"], example
        if mutual_info:
            assert row["unconditional_loglikelihoods"] == pytest.approx(unconditional, rel=1e-5, abs=1e-5), example
            assert float(row["chosen_mutual_info"] == row["gold"]) == sample["acc_mutual_info"], example


@pytest.mark.parametrize(
    "task", [name if name in CHEAP else pytest.param(name, marks=pytest.mark.slow) for name in TASKS]
)
def test_zero_shot_scores_equal_lm_eval(
    setup: dict[str, Any], lmeval_zero_shot: dict[str, tuple[dict, list[dict]]], tmp_path: Path, task: str
) -> None:
    mutual_info = task in MUTUAL_INFO
    ours, rows = gptlab_run(setup, tmp_path, task, *(["regime.mutual_info=lm-eval"] if mutual_info else []))
    theirs, samples = lmeval_zero_shot[task]
    assert 0 < sum(row["correct"] for row in rows) < LINES, "the check needs both outcomes"
    assert_rows_equal(rows, samples, mutual_info)
    metrics = ["acc", "acc_norm", *(["acc_mutual_info"] if mutual_info else [])]
    assert sorted(theirs) == sorted(metrics)
    for metric in metrics:
        assert same_value(ours[f"val/{metric}"], theirs[metric]), (metric, ours[f"val/{metric}"], theirs[metric])
    assert ours["val/n_truncated"] == 0


@pytest.mark.slow
def test_few_shot_scores_equal_lm_eval(setup: dict[str, Any], tmp_path: Path) -> None:
    task, k = FEW_SHOT
    ours, rows = gptlab_run(setup, tmp_path, task, f"regime.k={k}", regime="few_shot")
    theirs, samples = lmeval_run(setup, [task], num_fewshot=k)[task]
    assert 0 < sum(row["correct"] for row in rows) < LINES, "the check needs both outcomes"
    assert_rows_equal(rows, samples, mutual_info=False)
    for metric in ("acc", "acc_norm"):
        assert same_value(ours[f"val/{metric}"], theirs[metric]), (metric, ours[f"val/{metric}"], theirs[metric])
    assert ours["val/n_truncated"] == 0
