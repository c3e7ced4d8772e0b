"""lm-evaluation-harness run on the same files and weights as gptlab: the reference of the exactness
tests (tests/test_lmeval_reference.py, tests/test_lmeval_choice.py) and the peer of
bench/generative_eval.py.

The tasks are local lm-eval task YAMLs over gptlab's data files, with lm-eval's own definitions
where it has them: ``lambada_openai``'s prompt and metrics, ``triviaqa``'s stop strings, filter and
``exact_match`` options, ``wikitext``'s rolling log-likelihood with its default word and byte
counts, and for the multiple-choice tasks (piqa, openbookqa, arc_challenge, arc_easy, winogrande,
storycloze) lm-eval's ``doc_to_text`` / ``doc_to_choice`` / ``doc_to_target`` mapped onto these
files' fields (llm-foundry's layout, the official ARC JSON lines, the Story Cloze CSV), its default
target delimiter " " and few-shot delimiter "\\n\\n", and the metrics ``acc``, ``acc_norm`` and
``acc_mutual_info`` (winogrande: no ``acc_mutual_info``). The model is a gptlab ``GPT`` exported
as a Hugging Face GPT-2 directory with GPT-2's tokenizer (``gptlab.model.hf``), read by lm-eval's
``hf`` backend. Nothing is downloaded.

lm-eval cannot read copa's and hellaswag's shared files as documents: ``datasets``' ``xml`` builder
gives a whole XML file as one row, and its ``text`` builder one row per line where a HellaSwag
example is six lines; reading them would need a Python ``process_docs`` re-implementing gptlab's
own reader (and HellaSwag's layout has lost the ``ctx_a`` / ``ctx_b`` split that lm-eval's
``preprocess`` capitalises at). So the tests leave them out. For a speed comparison,
``write_normalised`` writes gptlab's own reading of them (``load_split``: ``context``, ``choices``,
``label``) as JSON lines, and ``hellaswag`` / ``copa`` read those with lm-eval's prompts
(hellaswag: the context, each ending a continuation; copa: super_glue's, each choice after its own
leading space): lm-eval then scores gptlab's text, which compares scoring, not reading.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gptlab.data.sources import load_split
from gptlab.model.gpt import GPT
from gptlab.model.hf import export_hf_gpt2, export_hf_tokenizer
from gptlab.tasks.spec import GenerationSpec, TaskSpec

# The lm-eval split a task's file is when it is given as one path: the split lm-eval evaluates
# (its test split where the task has one, else validation). A task can instead take split -> file
# (train, validation, test), e.g. arc_easy's three files, or storycloze's val.csv and test.csv as
# lm-eval's storycloze_2016 names them (validation, test): lm-eval evaluates test when there is
# one and draws demonstrations from train, else validation.
EVAL_SPLITS = {
    "lambada": "test",
    "triviaqa": "validation",
    "wikitext2": "test",
    "piqa": "validation",
    "openbookqa": "test",
    "arc_challenge": "test",
    "arc_easy": "test",
    "winogrande": "validation",
    "storycloze": "test",
    "hellaswag": "validation",  # write_normalised's copies of gptlab's eval split
    "copa": "validation",
}
_SPLIT_KEYS = {"train": "training_split", "validation": "validation_split", "test": "test_split"}
CHOICE_METRICS = ("acc", "acc_norm", "acc_mutual_info")


def _dataset(builder: str, files: Mapping[str, Path]) -> dict[str, Any]:
    """``datasets``' ``builder`` (json, csv, text) over split -> file, each split declared to lm-eval."""
    return {
        "dataset_path": builder,
        "dataset_kwargs": {"data_files": {split: str(path) for split, path in files.items()}},
        **{_SPLIT_KEYS[split]: split for split in files},
    }


def _metric_list(metrics: Sequence[str]) -> list[dict[str, Any]]:
    return [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in metrics]


def _multiple_choice(text: str, choice: str, target: str, metrics: Sequence[str] = CHOICE_METRICS) -> dict[str, Any]:
    """An lm-eval ``multiple_choice`` task: each choice a continuation after ``text`` (or, where
    ``text`` gives an int, each choice a context before the one ``target``: multiple input), with
    lm-eval's default delimiters. ``acc_mutual_info`` adds each choice's log-likelihood after an
    empty context."""
    return {
        "output_type": "multiple_choice",
        "doc_to_text": text,
        "doc_to_choice": choice,
        "doc_to_target": target,
        "target_delimiter": " ",
        "fewshot_delimiter": "\n\n",
        "metric_list": _metric_list(metrics),
    }


def task_yamls(
    files: Mapping[str, Path | Mapping[str, Path]],
    triviaqa: GenerationSpec | None = None,
    choice_metrics: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, dict[str, Any]]:
    """lm-eval task configs named ``gptlab_<task>`` for the tasks of ``files`` (task -> its file,
    read as the split of ``EVAL_SPLITS``, or split -> file). ``triviaqa``: the generation settings
    of the TriviaQA task, needed only for it. ``choice_metrics``: task -> the metrics of a
    multiple-choice task in place of its default ones (e.g. without ``acc_mutual_info``, whose
    unconditional requests lm-eval runs only when that metric is asked for)."""

    def triviaqa_task(data: Mapping[str, Path]) -> dict[str, Any]:
        if triviaqa is None:
            raise ValueError("task_yamls: triviaqa needs its generation settings (the triviaqa argument)")
        return {
            **_dataset("json", data),
            "output_type": "generate_until",
            "doc_to_text": "{{context}}",
            "doc_to_target": "{{[answer] + aliases}}",
            "target_delimiter": " ",
            "generation_kwargs": {
                "until": list(triviaqa.until),
                "do_sample": False,
                "temperature": 0.0,
                "max_gen_toks": triviaqa.max_gen_toks,
            },
            "filter_list": [
                {"name": "remove_whitespace", "filter": [{"function": "remove_whitespace"}, {"function": "take_first"}]}
            ],
            "metric_list": [
                {
                    "metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                    "ignore_case": triviaqa.ignore_case, "ignore_punctuation": triviaqa.ignore_punctuation,
                }
            ],
        }

    builders = {
        "lambada": lambda data: {
            **_dataset("json", data),
            "output_type": "loglikelihood",
            "doc_to_text": "{{text.split(' ')[:-1]|join(' ')}}",
            "doc_to_target": "{{' '+text.split(' ')[-1]}}",
            "metric_list": [
                {"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
                {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            ],
        },
        "triviaqa": triviaqa_task,
        "wikitext2": lambda data: {
            **_dataset("text", data),
            "output_type": "loglikelihood_rolling",
            "doc_to_text": "",
            "doc_to_target": "text",
            "metric_list": [{"metric": name} for name in ("word_perplexity", "byte_perplexity", "bits_per_byte")],
        },
        # llm-foundry's query is "Question: {goal}\n": lm-eval's "Question: {{goal}}\nAnswer:"
        "piqa": lambda data: {**_dataset("json", data), **_multiple_choice("{{query}}Answer:", "choices", "gold")},
        # lm-eval's doc_to_text is the field question_stem, which llm-foundry's query is
        "openbookqa": lambda data: {**_dataset("json", data), **_multiple_choice("query", "choices", "gold")},
        # llm-foundry's query is "Question: {question}": lm-eval's "Question: {{question}}\nAnswer:"
        "arc_challenge": lambda data: {
            **_dataset("json", data), **_multiple_choice("{{query}}\nAnswer:", "choices", "gold")
        },
        # the official ARC JSON lines: the Hub's question / choices.text / choices.label are
        # question.stem and question.choices[].text / .label
        "arc_easy": lambda data: {
            **_dataset("json", data),
            **_multiple_choice(
                "Question: {{question.stem}}\nAnswer:",
                "{{question.choices|map(attribute='text')|list}}",
                "{{(question.choices|map(attribute='label')|list).index(answerKey)}}",
            ),
        },
        # lm-eval's winogrande (partial evaluation): doc_to_text gives the gold index (an int, so
        # multiple input), each choice a context (sentence up to the blank, with the option), the
        # target the shared continuation (sentence after the blank, stripped): llm-foundry's
        # context_options and continuation. lm-eval's winogrande reports acc only; acc_norm is its
        # formula all the same (per character of the context option, gptlab logs it too), while
        # acc_mutual_info would score the contexts as continuations after an empty one.
        "winogrande": lambda data: {
            **_dataset("json", data), **_multiple_choice("gold", "context_options", "continuation", ("acc", "acc_norm"))
        },
        # lm-eval's storycloze_2016 over the Rochester CSV's column names
        "storycloze": lambda data: {
            **_dataset("csv", data),
            **_multiple_choice(
                "{{[InputSentence1, InputSentence2, InputSentence3, InputSentence4]|join(' ')}}",
                "{{[RandomFifthSentenceQuiz1, RandomFifthSentenceQuiz2]}}",
                "{{AnswerRightEnding - 1}}",
            ),
        },
        # write_normalised's JSON lines. hellaswag: lm-eval's (the query, each ending a continuation);
        # copa: super_glue's, whose choices carry their own leading space on top of the target
        # delimiter (gptlab's choice_prefix " ")
        "hellaswag": lambda data: {
            **_dataset("json", data), **_multiple_choice("context", "choices", "label", ("acc", "acc_norm"))
        },
        "copa": lambda data: {
            **_dataset("json", data),
            **_multiple_choice("context", "{{[' ' + choices[0], ' ' + choices[1]]}}", "label", ("acc",)),
        },
    }
    if unknown := sorted(set(files) - set(builders)):
        raise ValueError(f"task_yamls: no lm-eval task for {unknown}; tasks: {sorted(builders)}")
    configs = {}
    for name, given in files.items():
        config = builders[name](dict(given) if isinstance(given, Mapping) else {EVAL_SPLITS[name]: given})
        if choice_metrics and name in choice_metrics:
            if config["output_type"] != "multiple_choice":
                raise ValueError(f"task_yamls: choice_metrics for {name!r}, which is not a multiple-choice task")
            config["metric_list"] = _metric_list(choice_metrics[name])
        configs[f"gptlab_{name}"] = {"task": f"gptlab_{name}", **config}
    return configs


def write_tasks(
    directory: Path,
    files: Mapping[str, Path | Mapping[str, Path]],
    triviaqa: GenerationSpec | None = None,
    choice_metrics: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """The task YAMLs (JSON is YAML) in ``directory``, for lm-eval's ``include_path``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, config in task_yamls(files, triviaqa, choice_metrics).items():
        (directory / f"{name}.yaml").write_text(json.dumps(config, indent=2) + "\n")
    return directory


def write_normalised(spec: TaskSpec, split: str, path: Path) -> Path:
    """gptlab's reading of a multiple-choice task's split (``load_split``: every example's
    ``context``, ``choices`` and ``label``) as JSON lines at ``path``, for the hellaswag and copa
    tasks above."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for example in load_split(spec, split):
            row = {key: example[key] for key in ("context", "choices", "label")}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def export_model(model: GPT, directory: Path) -> Path:
    """``model`` as a Hugging Face GPT-2 directory that lm-eval (and gptlab's ``init_from``) reads."""
    export_hf_gpt2(model, directory)
    export_hf_tokenizer(directory)
    return directory


def run_lmeval(
    model_dir: Path,
    task_dir: Path,
    tasks: Sequence[str],
    batch_size: int = 1,
    num_fewshot: int = 0,
    limit: int | None = None,
    backend: str = "hf",
) -> dict[str, Any]:
    """lm-eval's ``simple_evaluate`` with its ``hf`` backend (or ``backend="gptlab"``, gptlab's, which
    reads ``model_dir`` or a gptlab checkpoint) on the CPU: its results and per-doc samples. Only
    ``task_dir``'s tasks are indexed (they include none of lm-eval's own, whose indexing would take
    seconds). ``limit``: each task's first ``limit`` documents only."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    if backend == "gptlab":
        import gptlab.lmeval.backend  # noqa: F401  (registers --model gptlab)
    model_args = {"hf": f"pretrained={model_dir},tokenizer={model_dir},dtype=float32", "gptlab": f"pretrained={model_dir}"}
    return lm_eval.simple_evaluate(
        model=backend,
        model_args=model_args[backend],
        tasks=[f"gptlab_{name}" for name in tasks],
        num_fewshot=num_fewshot,
        batch_size=batch_size,
        device="cpu",
        task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
        log_samples=True,
        bootstrap_iters=0,
        limit=limit,
    )
