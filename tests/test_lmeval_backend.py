"""gptlab as an lm-evaluation-harness backend (``--model gptlab``): equal to lm-eval's ``hf`` backend
on the exported weights for a multiple-choice, a rolling-perplexity and a generate-until task (local
task YAMLs over the shared files), GPT-1 (post-LN) and GPT-3 (alternating attention) checkpoints
that have no HF path, ``gptlab-eval``'s rows, and its errors for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from test_lmeval_reference import _peer, reference_model
from test_train import make_cfg

from gptlab.cli.eval import main as gptlab_eval
from gptlab.cli.train import train
from gptlab.model.checkpoint import CONFIG_KEY
from gptlab.model.gpt import GPT
from gptlab.report.predictions import read_predictions
from gptlab.report.results import read_results
from gptlab.tasks.spec import GenerationSpec

# task -> (shared file, lines): lm-eval's test split of each
FILES = {"arc_easy": ("arc_easy/test.jsonl", 24), "wikitext2": ("wikitext2/test.nonempty-crlf.raw", 30),
         "triviaqa": ("triviaqa/validation_subset.jsonl", 16)}
TRIVIAQA = GenerationSpec(until=("\n", ".", ","), max_gen_toks=12)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("backend")
    files = {}
    for task, (relative, lines) in FILES.items():
        files[task] = root / "data" / task / Path(relative).name
        files[task].parent.mkdir(parents=True)
        files[task].write_text("".join((shared_data / relative).read_text().splitlines(keepends=True)[:lines]))
    model_dir = _peer().export_model(reference_model(), root / "hf")
    return {"root": root, "files": files, "model_dir": model_dir,
            "tasks": _peer().write_tasks(root / "tasks", files, TRIVIAQA)}


@pytest.fixture(scope="module")
def both(setup: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """lm-eval's results with each backend, every task in one call each."""
    return {backend: _peer().run_lmeval(setup["model_dir"], setup["tasks"], list(FILES), batch_size=4, backend=backend)
            for backend in ("hf", "gptlab")}


def samples(out: dict[str, Any], task: str) -> list[dict[str, Any]]:
    return sorted(out["samples"][f"gptlab_{task}"], key=lambda s: s["doc_id"])


def test_multiple_choice_equals_the_hf_backend(both: dict[str, dict[str, Any]]) -> None:
    hf, ours = (samples(both[b], "arc_easy") for b in ("hf", "gptlab"))
    assert len(hf) == len(ours) == 24
    for a, b in zip(hf, ours):
        assert [float(r[0][0]) for r in b["resps"]] == pytest.approx([float(r[0][0]) for r in a["resps"]], rel=1e-5, abs=1e-5)
        assert [r[0][1] for r in b["resps"]] == [r[0][1] for r in a["resps"]]
    for metric in ("acc,none", "acc_norm,none"):
        assert both["gptlab"]["results"]["gptlab_arc_easy"][metric] == both["hf"]["results"]["gptlab_arc_easy"][metric]


def test_rolling_perplexity_equals_the_hf_backend(both: dict[str, dict[str, Any]]) -> None:
    hf, ours = (both[b]["results"]["gptlab_wikitext2"] for b in ("hf", "gptlab"))
    for metric in ("word_perplexity,none", "byte_perplexity,none", "bits_per_byte,none"):
        assert ours[metric] == pytest.approx(hf[metric], rel=1e-6)


def test_generate_until_equals_the_hf_backend(both: dict[str, dict[str, Any]]) -> None:
    hf, ours = (samples(both[b], "triviaqa") for b in ("hf", "gptlab"))
    assert [s["resps"][0][0] for s in ours] == [s["resps"][0][0] for s in hf]
    assert len({len(s["resps"][0][0]) for s in ours}) > 2, "generations should stop at different places"
    key = "exact_match,remove_whitespace"
    assert both["gptlab"]["results"]["gptlab_triviaqa"][key] == both["hf"]["results"]["gptlab_triviaqa"][key]


@pytest.mark.parametrize("architecture", [{"norm": "post"}, {"attention": "alternating", "local_window": 8}])
def test_checkpoints_without_an_hf_path_score_as_gptlab_does(
    setup: dict[str, Any], tmp_path: Path, architecture: dict[str, Any]
) -> None:
    torch.manual_seed(3)
    model = GPT.from_name("gpt-nano", **architecture)
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                CONFIG_KEY: model.config.to_dict()}, ckpt)
    theirs = samples(_peer().run_lmeval(ckpt, setup["tasks"], ["arc_easy"], batch_size=4, backend="gptlab"), "arc_easy")
    data = setup["files"]["arc_easy"]
    train(make_cfg(tmp_path, "regime=zero_shot", "task=arc_easy", "model=gpt-nano", f"model.init_from={ckpt}",
                   *(f"++model.{k}={v}" for k, v in architecture.items()), f"task.data_dir={data.parent}",
                   "task.files.test=test.jsonl", "task.eval_splits=[test]", "~task.files.train", "~task.files.validation"))
    ours = sorted(read_predictions(tmp_path / "run"), key=lambda p: p["index"])
    assert len(ours) == len(theirs) == 24
    for prediction, sample in zip(ours, theirs):  # (lm-eval's unconditional requests follow: acc_mutual_info)
        conditional = sample["resps"][: len(prediction["loglikelihoods"])]
        assert [float(r[0][0]) for r in conditional] == pytest.approx(prediction["loglikelihoods"], rel=1e-5, abs=1e-5)


def test_gptlab_eval_appends_rows_for_the_report(setup: dict[str, Any], tmp_path: Path) -> None:
    gptlab_eval([str(setup["model_dir"]), "--tasks", "gptlab_arc_easy", "--include_path", str(setup["tasks"]),
                 "--batch_size", "4", "--out", str(tmp_path)])
    rows = read_results(tmp_path / "results.jsonl")
    assert {r["metric"] for r in rows} == {"acc", "acc_norm", "acc_mutual_info"}
    assert all((r["task"], r["k"], r["regime"], r["n_eval"], r["prompt"]) == ("gptlab_arc_easy", 0, "zero_shot", 24, "lm-eval")
               for r in rows)
    # one condition (the evaluation's arguments), and lm-eval's standard error of each accuracy:
    # that of a proportion of 24 examples
    assert len({r["condition"] for r in rows}) == 1 and rows[0]["config"]["lm_eval.checkpoint"] == str(setup["model_dir"])
    for r in rows:
        assert r["stderr"] == pytest.approx((r["value"] * (1 - r["value"]) / 23) ** 0.5)


@pytest.mark.parametrize("args, message", [
    # (it indexes lm-eval's thousands of tasks to look for the name: ~9 s)
    pytest.param(["--tasks", "gptlab_arc_eazy"], r"--tasks: unknown lm-eval task 'gptlab_arc_eazy'; did you mean gptlab_arc_easy",
                 marks=pytest.mark.slow),
    (["--tasks", "gptlab_arc_easy", "--batch_size", "auto"], r"batch_size='auto': expected a positive integer"),
    (["--tasks", "gptlab_arc_easy", "--batch_size", "0"], r"batch_size='0': expected a positive integer"),
])
def test_gptlab_eval_names_bad_arguments(setup: dict[str, Any], args: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=r"^gptlab-eval: error: " + message):
        gptlab_eval([str(setup["model_dir"]), "--include_path", str(setup["tasks"]), *args])


def test_gptlab_eval_names_a_checkpoint_that_is_not_a_model(setup: dict[str, Any], tmp_path: Path) -> None:
    bogus = tmp_path / "notes.ckpt"
    bogus.write_text("not a model")
    with pytest.raises(SystemExit, match=r"gptlab-eval: error: checkpoint .*notes.ckpt is truncated or not a torch checkpoint"):
        gptlab_eval([str(bogus), "--tasks", "gptlab_arc_easy", "--include_path", str(setup["tasks"])])


def test_importing_the_backend_keeps_lm_evals_own_backends() -> None:
    """lm-eval lists its own backends only when a lookup finds its model registry empty: registering
    gptlab must not hide ``--model hf``. A fresh interpreter, as the registry lives for a process."""
    code = (
        "import gptlab.lmeval.backend\n"
        "from lm_eval.api.registry import get_model\n"
        "print(get_model('hf').__name__, get_model('gptlab').__name__)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["HFLM", "GptlabLM"]
