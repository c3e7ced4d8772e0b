"""lm-evaluation-harness run on the same files and weights as gptlab: the reference of the exactness
tests (tests/test_lmeval_reference.py) and the peer of bench/generative_eval.py.

The tasks are local lm-eval task YAMLs over gptlab's data files (lm-eval's own definitions where
it has them: ``lambada_openai``'s prompt and metrics, ``triviaqa``'s stop strings, filter and
``exact_match`` options, ``wikitext``'s rolling log-likelihood with its default word and byte
counts); the model is a gptlab ``GPT`` exported as a Hugging Face GPT-2 directory with GPT-2's
tokenizer (``gptlab.model.hf``), read by lm-eval's ``hf`` backend. Nothing is downloaded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gptlab.model.gpt import GPT
from gptlab.model.hf import export_hf_gpt2, export_hf_tokenizer
from gptlab.tasks.spec import GenerationSpec


def _json_dataset(split: str, path: Path) -> dict[str, Any]:
    return {"dataset_path": "json", "dataset_kwargs": {"data_files": {split: str(path)}}, f"{split}_split": split}


def task_yamls(files: Mapping[str, Path], triviaqa: GenerationSpec) -> dict[str, dict[str, Any]]:
    """lm-eval task configs named ``gptlab_<task>`` for the tasks of ``files`` (any of lambada,
    triviaqa, wikitext2 -> its file)."""
    builders = {
        "lambada": lambda path: {
            **_json_dataset("test", path),
            "output_type": "loglikelihood",
            "doc_to_text": "{{text.split(' ')[:-1]|join(' ')}}",
            "doc_to_target": "{{' '+text.split(' ')[-1]}}",
            "metric_list": [
                {"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
                {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            ],
        },
        "triviaqa": lambda path: {
            **_json_dataset("validation", path),
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
        },
        "wikitext2": lambda path: {
            "dataset_path": "text",
            "dataset_kwargs": {"data_files": {"test": str(path)}},
            "test_split": "test",
            "output_type": "loglikelihood_rolling",
            "doc_to_text": "",
            "doc_to_target": "text",
            "metric_list": [{"metric": name} for name in ("word_perplexity", "byte_perplexity", "bits_per_byte")],
        },
    }
    return {f"gptlab_{name}": {"task": f"gptlab_{name}", **builders[name](path)} for name, path in files.items()}


def write_tasks(directory: Path, files: Mapping[str, Path], triviaqa: GenerationSpec) -> Path:
    """The task YAMLs (JSON is YAML) in ``directory``, for lm-eval's ``include_path``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, config in task_yamls(files, triviaqa).items():
        (directory / f"{name}.yaml").write_text(json.dumps(config, indent=2) + "\n")
    return directory


def export_model(model: GPT, directory: Path) -> Path:
    """``model`` as a Hugging Face GPT-2 directory that lm-eval (and gptlab's ``init_from``) reads."""
    export_hf_gpt2(model, directory)
    export_hf_tokenizer(directory)
    return directory


def run_lmeval(
    model_dir: Path, task_dir: Path, tasks: Sequence[str], batch_size: int = 1, num_fewshot: int = 0
) -> dict[str, Any]:
    """lm-eval's ``simple_evaluate`` with the ``hf`` backend on the CPU: its results and per-doc samples."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={model_dir},tokenizer={model_dir},dtype=float32",
        tasks=[f"gptlab_{name}" for name in tasks],
        num_fewshot=num_fewshot,
        batch_size=batch_size,
        device="cpu",
        task_manager=TaskManager(include_path=str(task_dir)),
        log_samples=True,
        bootstrap_iters=0,
    )
