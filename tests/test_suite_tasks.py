"""The GPT-2/GPT-3 zero-shot suite's multiple-choice tasks over the shared files: HellaSwag, PIQA,
OpenBookQA, ARC-Challenge. Contexts are checked against lm-evaluation-harness's own task
definitions (its installed YAMLs and its hellaswag ``preprocess``), counts against MANIFEST.md."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import lm_eval
import pytest
import yaml
from lm_eval.tasks.hellaswag.utils import preprocess
from lm_eval.utils import apply_template

from gptlab.data.prompts import render
from gptlab.data.sources import load_split
from gptlab.data.sources.base import DataFormatError
from gptlab.tasks.spec import TaskSpec

LM_EVAL_TASKS = Path(lm_eval.__file__).parent / "tasks"
# task -> (eval split, examples, gold counts), as ../shared/data/MANIFEST.md gives them
MANIFEST = {
    "hellaswag": ("validation", 10_042, {0: 2_515, 1: 2_485, 2: 2_584, 3: 2_458}),
    "piqa": ("validation", 1_838, {0: 910, 1: 928}),
    "openbookqa": ("test", 500, {0: 138, 1: 126, 2: 132, 3: 104}),
    "arc_challenge": ("test", 1_172, {0: 261, 1: 306, 2: 311, 3: 294}),
}


def task(compose_config, name: str, shared_data: Path) -> tuple[TaskSpec, list[dict]]:
    spec = TaskSpec.from_config(compose_config(f"task={name}", f"paths.data_dir={shared_data}").task)
    return spec, load_split(spec, MANIFEST[name][0])


def lm_eval_doc_to_text(name: str) -> str:
    """``doc_to_text`` of lm-eval's installed task YAML (following its ``include``)."""
    path = next(LM_EVAL_TASKS.rglob(f"{name}.yaml"))
    config = yaml.safe_load(path.read_text())
    if "doc_to_text" not in config:
        config = yaml.safe_load((path.parent / config["include"]).read_text())
    return config["doc_to_text"]


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_suite_tasks_read_the_manifest_counts(compose_config, shared_data: Path, name: str) -> None:
    _, examples = task(compose_config, name, shared_data)
    _, count, gold = MANIFEST[name]
    assert len(examples) == count
    assert Counter(e["label"] for e in examples) == gold
    assert all(len(e["choices"]) == (2 if name == "piqa" else 4) for e in examples)


@pytest.mark.parametrize(("name", "field", "prefix", "suffix"), [
    ("piqa", "goal", "Question: ", "\n"),  # llm-foundry's query: "Question: {goal}\n"
    ("arc_challenge", "question", "Question: ", ""),  # "Question: {question}"
])
def test_contexts_are_lm_evals_doc_to_text(
    compose_config, shared_data: Path, name: str, field: str, prefix: str, suffix: str
) -> None:
    spec, examples = task(compose_config, name, shared_data)
    template = lm_eval_doc_to_text(name)
    for example in examples:
        query = example["context"]
        assert query.startswith(prefix) and query.endswith(suffix)
        doc = {field: query[len(prefix) : len(query) - len(suffix)]}
        assert render(spec.prompt_spec(), example) == apply_template(template, doc)


def test_openbookqa_context_is_the_question_stem(compose_config, shared_data: Path) -> None:
    spec, examples = task(compose_config, "openbookqa", shared_data)
    assert lm_eval_doc_to_text("openbookqa") == "question_stem"  # lm-eval: the doc's field, as is
    rows = [json.loads(line) for line in (shared_data / "openbookqa" / "openbookqa.jsonl").open()]
    assert [render(spec.prompt_spec(), e) for e in examples] == [row["query"] for row in rows]


def test_hellaswag_text_is_cleaned_by_lm_evals_preprocess(compose_config, shared_data: Path) -> None:
    spec, examples = task(compose_config, "hellaswag", shared_data)
    lines = (shared_data / "hellaswag" / "val_full.txt").read_text().splitlines()
    changed = 0
    for i, example in enumerate(examples):
        context, _, *endings = lines[6 * i : 6 * i + 6]
        assert render(spec.prompt_spec(), example) == preprocess(context)
        assert example["choices"] == [preprocess(ending) for ending in endings]
        changed += context != example["context"] or endings != example["choices"]
    assert changed >= 10  # the file keeps a few markers and double spaces that preprocess removes


def test_a_hellaswag_file_of_the_wrong_shape_names_the_problem(tmp_path: Path) -> None:
    spec = TaskSpec.from_config({
        "name": "h", "kind": "multiple_choice", "format": "hellaswag_txt", "data_dir": str(tmp_path),
        "files": {"validation": "h.txt"}, "eval_splits": ["validation"],
    })
    (tmp_path / "h.txt").write_text("ctx\n1\na\nb\nc\nd\nctx two\n")
    with pytest.raises(DataFormatError, match=r"h.txt: 7 lines, not a multiple of 6"):
        load_split(spec, "validation")
    (tmp_path / "h.txt").write_text("ctx\n7\na\nb\nc\nd\n")
    with pytest.raises(DataFormatError, match=r"h.txt, line 2: gold index '7', expected 0-3"):
        load_split(spec, "validation")
