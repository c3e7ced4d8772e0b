"""LAMBADA + TriviaQA zero-shot evaluation, wall time: gptlab's run vs lm-evaluation-harness's ``hf`` backend.

gptlab: the real run path, what ``gptlab regime=zero_shot task=<task> model=gpt-micro
model.init_from=<dir> ...`` does: Hydra composes the ``train`` config (``conf/``), and
``gptlab.cli.train.train`` builds the model from the exported directory, the
``GenerativeDataModule`` / ``GenerativeModule`` pair that ``regime.generate`` names, and the
Lightning Trainer, reads and tokenizes the task file, scores it (LAMBADA: the last word's
log-likelihood and greedy check, ``acc`` and ``perplexity``; TriviaQA: greedy generation until the
task's stop strings, ``exact_match``), and writes ``results.jsonl`` and the per-example predictions.
16 examples per batch, CSV logger, no progress bar.

Peer: lm-evaluation-harness's ``simple_evaluate`` with its ``hf`` backend (``bench/lmeval_peer.py``):
local task YAMLs over the same files with lm-eval's own ``lambada_openai`` and ``triviaqa``
definitions (TriviaQA's stop strings, ``max_gen_toks`` and matching options are the composed
gptlab task's ``generation``), the same model exported as a Hugging Face GPT-2 directory with
GPT-2's tokenizer, batch size 16, fp32, CPU, per-example samples logged (as gptlab writes its
predictions). Each side's time of a task is its whole call: building, reading, scoring, writing.

Workload: the first 1000 LAMBADA passages (``lambada/test.jsonl``) and the first 500 TriviaQA
questions (``triviaqa/validation_subset.jsonl``) of the shared data folder, written into a temporary
folder that both sides read: lm-eval on the full files would take hours on 2 cores. Model: a
random-init gpt-micro, the same weights both sides: the speed does not depend on them, and the
metrics must be equal for any weights (LAMBADA acc and perplexity, TriviaQA exact_match), which is
checked on every sample. A sample is one side's LAMBADA run then its TriviaQA run. Target: the
total wall time of lm-eval >= 3x gptlab's.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

import common
import lmeval_peer
from gptlab.cli.train import train
from gptlab.model.gpt import GPT
from gptlab.report.predictions import read_predictions
from gptlab.tasks.spec import GenerationSpec, TaskSpec

TARGET = 3.0
MAX_DIFF = 1e-6  # the largest metric difference allowed (acc, exact_match: absolute; perplexity: relative)
PAIRS = 3  # each sample takes minutes of lm-eval on 2 cores
MODEL, QUICK_MODEL = "gpt-micro", "gpt-nano"
BATCH_SIZE = 16
TASKS = ("lambada", "triviaqa")
LABELS = {"lambada": "LAMBADA", "triviaqa": "TriviaQA"}
# task -> (shared file, the task's file key (task.files.<key>), examples, quick examples)
SOURCES = {
    "lambada": ("lambada/test.jsonl", "test", 1000, 40),
    "triviaqa": ("triviaqa/validation_subset.jsonl", "validation", 500, 20),
}
LMEVAL_METRICS = {"lambada": {"acc": "acc,none", "perplexity": "perplexity,none"},
                  "triviaqa": {"exact_match": "exact_match,remove_whitespace"}}


def subset_files(root: Path, quick: bool) -> dict[str, Path]:
    """The first lines of each shared file, under their own names in ``root/<task>/``."""
    shared, files = common.shared_data_dir(), {}
    for task, (relative, _, lines, quick_lines) in SOURCES.items():
        files[task] = root / task / Path(relative).name
        files[task].parent.mkdir(parents=True)
        with open(shared / relative, "rb") as f:
            files[task].write_bytes(b"".join(itertools.islice(f, quick_lines if quick else lines)))
    return files


def run_config(task: str, model: str, model_dir: Path, data: Path, output_dir: Path, cache_dir: Path) -> DictConfig:
    """The config of ``gptlab regime=zero_shot task=<task> model=<model> model.init_from=<model_dir>``
    on the file ``data``, batch 16, writing into ``output_dir``."""
    overrides = [
        "regime=zero_shot",
        f"task={task}",
        f"model={model}",
        f"model.init_from={model_dir}",
        f"task.data_dir={data.parent}",
        f"task.files.{SOURCES[task][1]}={data.name}",
        *(["task.carve=null", "task.eval_splits=[validation]"] if task == "triviaqa" else []),  # lm-eval's split
    ]
    return common.evaluation_config(overrides, output_dir, cache_dir, BATCH_SIZE)


@dataclass
class Side:
    """One side's per-task times (every call, warm-up included) and its latest metrics and per-example rows."""

    run: Callable[[str], tuple[dict[str, float], list[Any]]]
    times: dict[str, list[float]] = field(default_factory=lambda: {t: [] for t in TASKS})
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    examples: dict[str, list[Any]] = field(default_factory=dict)
    threads: set[int] = field(default_factory=set)

    def sample(self) -> float:
        """LAMBADA then TriviaQA; the total seconds."""
        total = 0.0
        for task in TASKS:
            torch.set_num_threads(common.THREADS)
            start = time.perf_counter()
            self.metrics[task], self.examples[task] = self.run(task)
            seconds = time.perf_counter() - start
            self.threads.add(torch.get_num_threads())
            self.times[task].append(seconds)
            total += seconds
        return total


def task_pairs(ours: Side, theirs: Side, task: str, warmup: int, loads: list[float]) -> common.Pairs:
    return common.Pairs(ours.times[task][warmup:], theirs.times[task][warmup:], loads)


def main(argv: Sequence[str] | None = None) -> common.Report:
    args = common.parse_args(__doc__.splitlines()[0], argv, warmup=1, pairs=PAIRS, min_pairs=PAIRS, quick_pairs=1)
    common.setup_torch()
    for name in ("transformers", "lightning", "lightning.pytorch", "lm-eval", "lm_eval", "datasets", "gptlab"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import lm_eval  # imported here, before timing: both sides' imports are outside the samples
    import lm_eval.models.huggingface  # noqa: F401
    import lm_eval.tasks  # noqa: F401

    name = QUICK_MODEL if args.quick else MODEL
    root = Path(tempfile.mkdtemp(prefix="generative_eval-"))
    try:
        files = subset_files(root / "data", args.quick)
        model = GPT.from_name(name).eval()
        model_dir = lmeval_peer.export_model(model, root / "hf")
        cache_dir, runs = root / "cache", itertools.count()
        composed = run_config("triviaqa", name, model_dir, files["triviaqa"], root / "unused", cache_dir)
        generation: GenerationSpec = TaskSpec.from_config(composed.task).generation_spec
        task_dir = lmeval_peer.write_tasks(root / "tasks", files, generation)

        def gptlab_run(task: str) -> tuple[dict[str, float], list[Any]]:
            output_dir = root / "runs" / f"{task}-{next(runs)}"
            metrics = train(run_config(task, name, model_dir, files[task], output_dir, cache_dir))
            return metrics, sorted(read_predictions(output_dir), key=lambda row: row["index"])

        def lmeval_run(task: str) -> tuple[dict[str, float], list[Any]]:
            out = lmeval_peer.run_lmeval(model_dir, task_dir, [task], batch_size=BATCH_SIZE)
            results = out["results"][f"gptlab_{task}"]
            metrics = {metric: float(results[key]) for metric, key in LMEVAL_METRICS[task].items()}
            return metrics, sorted(out["samples"][f"gptlab_{task}"], key=lambda s: s["doc_id"])

        ours, theirs = Side(gptlab_run), Side(lmeval_run)
        counts = {task: sum(1 for _ in open(path)) for task, path in files.items()}
        print(
            f"generative_eval: {name}, {counts['lambada']} LAMBADA passages, {counts['triviaqa']} TriviaQA "
            f"questions, batch {BATCH_SIZE}",
            flush=True,
        )
        pairs = common.alternate(ours.sample, theirs.sample, args.pairs, args.warmup, names=("gptlab s", "lm-eval s"))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    # Agreement, on the last sample of each side.
    values = {
        f"{LABELS[task]} {metric}": (ours.metrics[task][f"val/{metric}"], theirs.metrics[task][metric])
        for task, metrics in LMEVAL_METRICS.items()
        for metric in metrics
    }
    diffs = {
        what: abs(a - b) / abs(b) if what.endswith("perplexity") else abs(a - b) for what, (a, b) in values.items()
    }
    max_diff = max(diffs.values())
    loglik_diff = max(
        abs(row["target_loglikelihood"] - float(sample["resps"][0][0][0]))
        for row, sample in zip(ours.examples["lambada"], theirs.examples["lambada"])
    )
    same_generations = sum(
        row["generation"] == sample["resps"][0][0]
        for row, sample in zip(ours.examples["triviaqa"], theirs.examples["triviaqa"])
    )
    per_task = {task: task_pairs(ours, theirs, task, args.warmup, pairs.loads) for task in TASKS}
    speed = common.Target("total wall time lm-eval / gptlab (LAMBADA + TriviaQA)", pairs.ratio, TARGET)
    equal = common.Target(
        "max metric difference gptlab vs lm-eval (acc, exact_match absolute; perplexity relative)",
        max_diff, MAX_DIFF, at_most=True, fmt=".1e",
    )
    threads = ", ".join(map(str, sorted(ours.threads | theirs.threads)))
    report = common.Report(
        key="generative_eval",
        title=f"Zero-shot LAMBADA ({counts['lambada']} passages) + TriviaQA ({counts['triviaqa']} questions) "
        "evaluation wall time: gptlab run vs lm-evaluation-harness `hf`",
        headers=("", "gptlab", "lm-eval"),
        rows=[
            ("total time, LAMBADA + TriviaQA (s, median)", f"{pairs.median_a:.1f}", f"{pairs.median_b:.1f}"),
            ("ratio lm-eval / gptlab per pair (min–max), total", pairs.spread(), ""),
            *itertools.chain.from_iterable(
                (
                    (f"{LABELS[task]} time (s, median)", f"{p.median_a:.1f}", f"{p.median_b:.1f}"),
                    (
                        f"{LABELS[task]} ratio lm-eval / gptlab: median over pairs; per pair (min–max)",
                        f"{p.ratio:.2f}; {p.spread()}",
                        "",
                    ),
                )
                for task, p in per_task.items()
            ),
            *((what, f"{a:.6g}", f"{b:.6g}") for what, (a, b) in values.items()),
            ("LAMBADA: max |per-passage log-likelihood difference|", f"{loglik_diff:.1e}", ""),
            (
                "TriviaQA: the same generation (before the whitespace filter)",
                f"{same_generations} of {counts['triviaqa']}",
                "",
            ),
        ],
        loads=pairs.loads,
        targets=[speed, equal],
        notes=[
            f"{len(pairs.a)} alternating pairs after {args.warmup} warm-up pair(s): fewer than the usual "
            f"{common.MIN_PAIRS}, because one lm-eval sample takes minutes of both cores; the per-pair "
            "ratios show the spread. A sample is one side's LAMBADA run then its TriviaQA run; a task's time "
            "is its whole call. gptlab: Hydra's composition of the run config + `train(cfg)` (model built "
            "from the exported directory, data read and tokenized, scored by `trainer.validate`, "
            "`results.jsonl` and the predictions written, each run into a fresh directory). lm-eval: "
            "`simple_evaluate` (its task index and YAMLs, the model and tokenizer loaded by `hf`, the JSON "
            "file read by `datasets` (its cache is reused after the first read), requests built and run, "
            "samples logged). Both sides' imports happen before timing.",
            f"Data: the first {counts['lambada']} lines of `lambada/test.jsonl` and the first "
            f"{counts['triviaqa']} of `triviaqa/validation_subset.jsonl`, copied into a temporary folder that "
            "both sides read (`task.files.<split>` / the lm-eval YAML's `data_files`). TriviaQA decoding "
            f"(until {list(generation.until)!r}, max_gen_toks {generation.max_gen_toks}, ignore_case "
            f"{generation.ignore_case}, ignore_punctuation {generation.ignore_punctuation}) is the composed "
            "`task=triviaqa`'s `generation`, written into lm-eval's YAML.",
            f"Model: {name} ({model.config.n_layer} layers, {model.config.n_head} heads, {model.config.n_embd} "
            f"wide, context {model.config.block_size}), random init, exported once with `export_model` "
            "(weights + GPT-2 tokenizer); gptlab reads it with `model.init_from`, lm-eval with "
            f"`pretrained=`. Batch {BATCH_SIZE} both sides, fp32, CPU, torch threads during the runs: {threads}. "
            "A random model rarely writes a stop string, so most TriviaQA generations run to max_gen_toks "
            "and exact_match is near 0: the check is that both sides agree, not the score.",
        ],
    )
    report.publish("generative_eval.py", args)
    return report


if __name__ == "__main__":
    main()
