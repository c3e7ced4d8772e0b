"""GPT-3 zero-shot suite (nine tasks), wall time: gptlab's ``eval_suite`` vs lm-evaluation-harness's ``hf`` backend.

gptlab: the real run path, what ``gptlab eval_suite=gpt3_zero_shot model=gpt-micro
model.init_from=<dir> paths.data_dir=<shared data> eval_suite.limit=500`` does: Hydra composes the
``train`` config (``conf/``) and ``gptlab.cli.suite.run_suite`` checks and reads every task's data
before any model runs, then runs each task as an ordinary in-context run (``train``: the model
built from ``init_from``, the task's DataModule and module, the Lightning Trainer), scoring each
task's first 500 examples, and writes each task's ``results.jsonl`` and per-example predictions and
the suite's score. The tasks and their settings are the shipped suite's
(``conf/eval_suite/gpt3_zero_shot.yaml``): hellaswag, lambada, piqa, winogrande, arc_easy (its test
split), arc_challenge and openbookqa (with lm-eval's unconditional normalisation, so
``acc_mutual_info`` too), storycloze and copa. 16 examples per batch, CSV logger, no progress bar.

Peer: lm-evaluation-harness's ``simple_evaluate`` with its ``hf`` backend, one call over the nine
tasks with ``limit=500`` (each task's first 500 documents), local task YAMLs
(``bench/lmeval_peer.py``) with lm-eval's own prompts and metrics over the same shared files, the
same model exported as a Hugging Face GPT-2 directory with GPT-2's tokenizer, batch size 16, fp32,
CPU, per-example samples logged (as gptlab writes its predictions). lm-eval computes the metrics
gptlab logs for each task: ``acc`` and ``acc_norm``, and ``acc_mutual_info`` (whose unconditional
requests lm-eval runs only when asked for it) where the suite asks gptlab for it; lambada ``acc``
and ``perplexity``. lm-eval cannot read hellaswag's six-line text layout nor copa's XML: for those
two it reads a JSON-lines copy of gptlab's own reading of the files (``load_split``: hellaswag
already cleaned by lm-eval's preprocess rules; copa's context ending in " because" / " therefore",
its choices lower-cased), with prompts that reproduce gptlab's (hellaswag: the context, each ending a
continuation; copa: super_glue's, each choice after its own leading space). So for those two tasks
the bench compares speed and scoring, not the reader.

Workload: the first 500 examples of each task (``--limit``) from the shared data folder, read in
place by both sides (each reads whole files and keeps the first examples). Model: a random-init
gpt-micro by default, the same weights both sides (the speed does not depend on them), or a trained
gptlab checkpoint (``--checkpoint``: gptlab reads the ``.ckpt``, lm-eval its export). Every metric
both sides report must be equal (absolute 1e-6; perplexity relative 1e-6), checked on every sample.
Each side's time is its whole call, warm-up then pairs alternating sides. Target: lm-eval's wall
time >= 5x gptlab's.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import itertools
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

import common
import lmeval_peer
from gptlab.cli.suite import run_suite, suite_runs
from gptlab.model.checkpoint import load_gpt_checkpoint
from gptlab.model.gpt import GPT, GPTConfig
from gptlab.report.predictions import read_predictions
from gptlab.report.results import read_results
from gptlab.tasks.spec import TaskSpec
from gptlab.tasks.suite import SuiteSpec

TARGET = 5.0
MAX_DIFF = 1e-6  # the largest metric difference allowed (accuracies: absolute; perplexity: relative)
PAIRS = 3  # each lm-eval sample takes minutes on 2 cores
MODEL, QUICK_MODEL = "gpt-micro", "gpt-nano"
LIMIT, QUICK_LIMIT = 500, 20
BATCH_SIZE = 16
SUITE = "gpt3_zero_shot"
# task -> the shared file(s) lm-eval reads: one file (the split of lmeval_peer.EVAL_SPLITS) or split
# -> file (lm-eval evaluates test where there is one). storycloze: gptlab trains on val.csv and
# evaluates test.csv as `validation`; lm-eval's storycloze_2016 calls them validation and test.
SHARED_FILES: dict[str, str | dict[str, str]] = {
    "lambada": "lambada/test.jsonl",
    "piqa": "piqa/validation.jsonl",
    "winogrande": "winogrande/dev.jsonl",
    "arc_easy": {"train": "arc_easy/train.jsonl", "validation": "arc_easy/dev.jsonl", "test": "arc_easy/test.jsonl"},
    "arc_challenge": "arc_challenge/test.jsonl",
    "openbookqa": "openbookqa/openbookqa.jsonl",
    "storycloze": {"validation": "storycloze/val.csv", "test": "storycloze/test.csv"},
}
NORMALISED = ("hellaswag", "copa")  # lm-eval reads gptlab's reading of these (lmeval_peer.write_normalised)
CHOICE_KINDS = ("multiple_choice", "multiple_input")
# GPTConfig fields that fix what the weights compute (dropout is off in evaluation)
SHAPE_FIELDS = tuple(f.name for f in dataclasses.fields(GPTConfig) if f.name not in ("name", "dropout"))

Metrics = dict[str, dict[str, float]]  # task -> metric -> value
Examples = dict[str, list[Any]]  # task -> per-example rows in example order


def suite_config(
    model: str, init_from: Path, data_dir: Path, limit: int, output_dir: Path, cache_dir: Path
) -> DictConfig:
    """The config of ``gptlab eval_suite=gpt3_zero_shot model=<model> model.init_from=<init_from>
    paths.data_dir=<data_dir> eval_suite.limit=<limit>``, batch 16, writing into ``output_dir``."""
    overrides = [
        f"eval_suite={SUITE}",
        f"eval_suite.limit={limit}",
        f"model={model}",
        f"model.init_from={init_from}",
        f"paths.data_dir={data_dir}",
    ]
    return common.evaluation_config(overrides, output_dir, cache_dir, BATCH_SIZE)


def checkpoint_model(path: Path) -> GPT:
    """The backbone of gptlab checkpoint ``path``, which the suite must be able to build from its
    registered size (``model=<name>``, the shape from ``conf/model/<name>.yaml``)."""
    model = load_gpt_checkpoint(path).eval()
    trained = model.config
    try:
        registered = GPTConfig.from_name(trained.name)
    except ValueError as err:
        raise SystemExit(f"--checkpoint {path}: its model {trained.name!r} is not a registered size ({err})")
    differ = [f"{f}={getattr(trained, f)!r}" for f in SHAPE_FIELDS if getattr(trained, f) != getattr(registered, f)]
    if differ:
        raise SystemExit(
            f"--checkpoint {path}: model {trained.name!r} with {', '.join(differ)} is not the shape of "
            f"conf/model/{trained.name}.yaml, which the suite builds"
        )
    return model


def lmeval_setup(cfg: DictConfig, shared: Path, root: Path) -> tuple[dict[str, Any], dict[str, tuple[str, ...]]]:
    """lm-eval's files for every task of the suite (writing hellaswag's and copa's copies under
    ``root``) and the metrics it computes for each multiple-choice task: those gptlab logs."""
    suite = SuiteSpec.from_config(OmegaConf.to_container(cfg.eval_suite, resolve=True))
    if list(suite.shots) != [0]:
        raise ValueError(f"suite_eval compares zero-shot runs; eval_suite {suite.name} has shots {suite.shots}")
    files: dict[str, Any] = {}
    choice_metrics: dict[str, tuple[str, ...]] = {}
    for run in suite_runs(cfg, suite):
        name, spec = run.task.name, TaskSpec.from_config(run.cfg.task)
        split = spec.eval_splits[0]
        if name in NORMALISED:
            files[name] = lmeval_peer.write_normalised(spec, split, root / name / f"{split}.jsonl")
        else:
            given = SHARED_FILES[name]
            files[name] = {s: shared / p for s, p in given.items()} if isinstance(given, dict) else shared / given
            scored = (files[name].get("test") or files[name]["validation"]) if isinstance(given, dict) else files[name]
            ours = Path(spec.data_dir) / spec.files[split]
            if scored.resolve() != ours.resolve():
                raise ValueError(f"{name}: lm-eval would score {scored}, gptlab scores {ours}")
        if spec.kind in CHOICE_KINDS:
            if run.task.mutual_info not in (None, "lm-eval"):
                raise ValueError(f"{name}: lm-eval has no mutual_info={run.task.mutual_info!r}")
            choice_metrics[name] = ("acc", "acc_norm", *(["acc_mutual_info"] if run.task.mutual_info else []))
    return files, choice_metrics


def gptlab_results(output_dir: Path, tasks: Sequence[str]) -> tuple[Metrics, Examples]:
    """Every metric of each task's run (its ``results.jsonl``) and its prediction rows in example order."""
    metrics, examples = {}, {}
    for task in tasks:
        run_dir = output_dir / "suite" / f"{task}_k0"
        rows = read_results(run_dir / "results.jsonl")
        metrics[task] = {row["metric"]: float(row["value"]) for row in rows}
        (split,) = {row["split"] for row in rows}
        examples[task] = sorted((r for r in read_predictions(run_dir) if r["split"] == split), key=lambda r: r["index"])
    return metrics, examples


def lmeval_results(out: Mapping[str, Any], tasks: Sequence[str]) -> tuple[Metrics, Examples]:
    """Every metric of each task of one ``simple_evaluate`` result and its samples in document order."""
    metrics, examples = {}, {}
    for task in tasks:
        results = out["results"][f"gptlab_{task}"]
        metrics[task] = {
            key.split(",")[0]: float(value)
            for key, value in results.items()
            if key.endswith(",none") and "_stderr" not in key
        }
        examples[task] = sorted(out["samples"][f"gptlab_{task}"], key=lambda s: s["doc_id"])
    return metrics, examples


def difference(metric: str, ours: float | None, theirs: float | None) -> float:
    """How far apart two values of ``metric`` are (relative for perplexity); inf if one side lacks it."""
    if ours is None or theirs is None:
        return math.inf
    return abs(ours - theirs) / abs(theirs) if metric == "perplexity" else abs(ours - theirs)


def loglikelihood_difference(rows: Sequence[dict[str, Any]], samples: Sequence[dict[str, Any]]) -> float:
    """The largest relative difference between gptlab's and lm-eval's log-likelihood of any answer
    (and its unconditional one), example by example; inf if the examples or answers do not line up."""
    worst = 0.0
    if len(rows) != len(samples):
        return math.inf
    for row, sample in zip(rows, samples):
        theirs = [float(resp[0][0]) for resp in sample["resps"]]
        if "target_loglikelihood" in row:  # lambada
            ours = [row["target_loglikelihood"]]
        else:
            ours = [*row["loglikelihoods"], *(row.get("unconditional_loglikelihoods") or [])]
        if row["index"] != sample["doc_id"] or len(ours) != len(theirs):
            return math.inf
        worst = max(worst, *(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(ours, theirs)))
    return worst


@dataclass
class Side:
    """One side: its call (timed), the reading of its results (not timed), and the latest results."""

    call: Callable[[], Any]
    collect: Callable[[Any], tuple[Metrics, Examples]]
    metrics: Metrics = field(default_factory=dict)
    examples: Examples = field(default_factory=dict)
    threads: set[int] = field(default_factory=set)

    def sample(self) -> float:
        """One whole suite; its seconds."""
        torch.set_num_threads(common.THREADS)
        start = time.perf_counter()
        handle = self.call()
        seconds = time.perf_counter() - start
        self.threads.add(torch.get_num_threads())
        self.metrics, self.examples = self.collect(handle)
        return seconds


def main(argv: Sequence[str] | None = None) -> common.Report:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--checkpoint", type=Path, default=None)
    extra.add_argument("--limit", type=int, default=None)
    extra.add_argument("--model", default=None)
    opts, rest = extra.parse_known_args(argv)
    args = common.parse_args(
        __doc__.splitlines()[0] + " Also: --checkpoint CKPT (a trained gptlab checkpoint; default a random "
        f"{MODEL}), --model NAME (a random model of that registered size instead), --limit N (examples per "
        f"task; default {LIMIT}, quick {QUICK_LIMIT}).",
        rest, warmup=1, pairs=PAIRS, min_pairs=PAIRS, quick_pairs=1,
    )
    common.setup_torch()
    for name in (
        "transformers", "lightning", "lightning.pytorch", "lightning.fabric", "lm-eval", "lm_eval", "datasets", "gptlab"
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    import lm_eval  # imported here, before timing: both sides' imports are outside the samples
    import lm_eval.models.huggingface  # noqa: F401
    import lm_eval.tasks  # noqa: F401

    limit = opts.limit or (QUICK_LIMIT if args.quick else LIMIT)
    shared = common.shared_data_dir()
    root = Path(tempfile.mkdtemp(prefix="suite_eval-"))
    try:
        model = checkpoint_model(opts.checkpoint) if opts.checkpoint else GPT.from_name(
            opts.model or (QUICK_MODEL if args.quick else MODEL)
        ).eval()
        name = model.config.name
        model_dir = lmeval_peer.export_model(model, root / "hf")
        init_from = opts.checkpoint.resolve() if opts.checkpoint else model_dir
        runs = itertools.count()

        def config(output_dir: Path) -> DictConfig:
            return suite_config(name, init_from, shared, limit, output_dir, root / "cache")

        files, choice_metrics = lmeval_setup(config(root / "unused"), shared, root / "normalised")
        tasks = list(files)
        task_dir = lmeval_peer.write_tasks(root / "tasks", files, choice_metrics=choice_metrics)

        def gptlab_call() -> Path:
            output_dir = root / "runs" / f"gptlab-{next(runs)}"
            with contextlib.redirect_stdout(io.StringIO()):  # the suite's table, printed at its end
                run_suite(config(output_dir))
            return output_dir

        def lmeval_call() -> dict[str, Any]:
            return lmeval_peer.run_lmeval(model_dir, task_dir, tasks, batch_size=BATCH_SIZE, limit=limit)

        ours = Side(gptlab_call, lambda output_dir: gptlab_results(output_dir, tasks))
        theirs = Side(lmeval_call, lambda out: lmeval_results(out, tasks))
        print(f"suite_eval: {name}, {len(tasks)} tasks, first {limit} examples each, batch {BATCH_SIZE}", flush=True)
        pairs = common.alternate(ours.sample, theirs.sample, args.pairs, args.warmup, names=("gptlab s", "lm-eval s"))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    # Agreement, on the last sample of each side: the examples scored and every metric lm-eval reports
    # (gptlab must report it too); gptlab's own counts (n_truncated) are shown, not compared.
    values: list[tuple[str, str, float | None, float | None, float | None]] = []  # (task, what, ours, theirs, diff)
    for task in tasks:
        a, b = ours.metrics[task], theirs.metrics[task]
        scored = (float(len(ours.examples[task])), float(len(theirs.examples[task])))
        values.append((task, "examples scored", *scored, difference("examples", *scored)))
        values += [(task, m, a.get(m), b[m], difference(m, a.get(m), b[m])) for m in sorted(b)]
        values += [(task, f"{m} (gptlab only)", a[m], None, None) for m in sorted(a.keys() - b.keys())]
    max_diff = max(diff for *_, diff in values if diff is not None)
    loglik_diff = max(loglikelihood_difference(ours.examples[t], theirs.examples[t]) for t in tasks)

    def cell(value: float | None) -> str:
        return "—" if value is None else f"{value:.6g}"

    speed = common.Target(f"total wall time lm-eval / gptlab ({len(tasks)} tasks)", pairs.ratio, TARGET)
    equal = common.Target(
        "max metric difference gptlab vs lm-eval (accuracies and examples absolute; perplexity relative; "
        "a metric lm-eval reports and gptlab does not: inf)",
        max_diff, MAX_DIFF, at_most=True, fmt=".1e",
    )
    threads = ", ".join(map(str, sorted(ours.threads | theirs.threads)))
    weights = f"the checkpoint `{opts.checkpoint}`" if opts.checkpoint else "random init"
    report = common.Report(
        # one section per model size: the ratio depends on how much of the work is the LM head
        key="suite_eval" if name == MODEL else f"suite_eval_{name}",
        title=f"Zero-shot suite `{SUITE}` ({len(tasks)} tasks, first {limit} examples each) evaluation wall "
        "time: gptlab `eval_suite` vs lm-evaluation-harness `hf`",
        headers=("", "gptlab", "lm-eval", "difference (perplexity: relative)"),
        rows=[
            (
                f"total time, {len(tasks)} tasks in one call (s, median)",
                f"{pairs.median_a:.1f}", f"{pairs.median_b:.1f}", "",
            ),
            ("ratio lm-eval / gptlab per pair (min–max)", pairs.spread(), "", ""),
            *(
                (
                    f"{task} {what}" + (" **differs**" if diff is not None and diff > MAX_DIFF else ""),
                    cell(a), cell(b), "" if diff is None else f"{diff:.1e}",
                )
                for task, what, a, b, diff in values
            ),
            ("max relative difference of any answer's log-likelihood (all tasks)", f"{loglik_diff:.1e}", "", ""),
        ],
        loads=pairs.loads,
        targets=[speed, equal],
        notes=[
            f"{len(pairs.a)} alternating pairs after {args.warmup} warm-up pair(s): fewer than the usual "
            f"{common.MIN_PAIRS}, because one lm-eval sample takes minutes of both cores; the per-pair "
            "ratios show the spread. A side's time is its whole call. gptlab: Hydra's composition of the run "
            "config + `run_suite(cfg)` (every task's config checked and data read before any model runs, then "
            "per task the model built from `init_from`, the examples tokenized and scored by `trainer.validate`, "
            "`results.jsonl` and the predictions written, into a fresh directory; the suite's score and table). "
            "lm-eval: one `simple_evaluate` over all the tasks with `limit` (its task index and YAMLs, the model "
            "and tokenizer loaded by `hf`, the files read by `datasets` (its cache is reused after the first "
            "read), requests built and run, samples logged). Both sides' imports happen before timing; reading "
            "the results back happens after.",
            f"Data: the shared data folder, read in place by both sides, each task's first {limit} examples "
            "scored (`eval_suite.limit` / lm-eval's `limit`). lm-eval computes what gptlab logs per task: "
            "`acc`, `acc_norm`, and `acc_mutual_info` for "
            + ", ".join(t for t, m in choice_metrics.items() if "acc_mutual_info" in m)
            + " (the suite's `mutual_info: lm-eval`); lambada `acc` and `perplexity`. hellaswag and copa: "
            "lm-eval reads a JSON-lines copy of gptlab's own reading of `hellaswag/val_full.txt` and "
            "`copa/test.xml` (lm-eval cannot read the six-line text layout nor the XML), so for those two "
            "the bench compares speed and scoring, not the reader.",
            f"Model: {name} ({model.config.n_layer} layers, {model.config.n_head} heads, {model.config.n_embd} "
            f"wide, context {model.config.block_size}), {weights}, exported with `export_model` (weights + "
            "GPT-2 tokenizer), which lm-eval reads with `pretrained=`; gptlab reads "
            + ("the checkpoint" if opts.checkpoint else "the export")
            + f" with `model.init_from`. Batch {BATCH_SIZE} both sides, fp32, CPU, torch threads during the "
            f"runs: {threads}.",
        ],
    )
    options = [f"--checkpoint {opts.checkpoint}"] if opts.checkpoint else []
    options += [f"--model {opts.model}"] if opts.model else []
    options += [f"--limit {limit}"] if opts.limit else []
    report.publish("suite_eval.py", args, options)
    return report


if __name__ == "__main__":
    main()
