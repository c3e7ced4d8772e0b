"""5-shot ARC-Easy + zero-shot HellaSwag through lm-evaluation-harness, wall time: ``--model gptlab`` vs ``--model hf``.

Both sides are lm-evaluation-harness 0.4.13's own ``simple_evaluate`` (``bench/lmeval_peer.py``'s
``run_lmeval``) on the same local task YAMLs, documents, few-shot demonstrations and weights; only the
backend differs. gptlab: ``--model gptlab`` (``gptlab.lmeval.backend.GptlabLM``, registered when
``gptlab.lmeval.backend`` is imported), ``pretrained=<the export>`` (or ``=<the .ckpt>`` with
``--checkpoint``): the answers of one question share one forward of their context
(prefix-shared scoring), and only the answer positions reach the LM head. Peer: lm-eval's ``hf``
backend (``pretrained=<the export>``, fp32): one forward per (context, answer) pair, padded, logits
over the whole window. Batch size 16 both sides, CPU, per-document samples logged.

Workloads, each one ``simple_evaluate`` call, timed separately: ARC-Easy 5-shot, the first 100
questions of ``arc_easy/test.jsonl`` (``limit``), demonstrations drawn by lm-eval from
``arc_easy/train.jsonl`` with its default few-shot seed, so both sides get the same prompts by
construction (checked: every request's context and continuation are equal); HellaSwag zero-shot,
the first 200 examples, from a JSON-lines copy of gptlab's reading of ``hellaswag/val_full.txt``
(``lmeval_peer.write_normalised``: lm-eval cannot read the shared six-line text layout). The tasks
read local copies of the shared files in a temporary folder. Metrics ``acc`` and ``acc_norm`` only
(no ``acc_mutual_info``, whose unconditional requests would add work to both sides).

``--whole``: each task as a user runs it, every document (ARC-Easy's 2,376 test questions,
HellaSwag's 10,042 validation examples), one pair by default (an hf sample takes ~17 minutes),
after a warm-up pair at ``--quick``'s sizes. lm-eval's own per-call work, the same whichever backend
(its environment report runs ``pip list``; the task build reads every document), is ~0.9 s; on the
first 200 HellaSwag examples that is a third of gptlab's time, on the whole task ~1%.

Model: a random-init gpt-micro with a 1024-token context (a 5-shot ARC prompt is 300-500 tokens:
with gpt-micro's 256 both sides would cut contexts, and cut contexts share no prefix), exported as
a Hugging Face GPT-2 directory (``export_model``) that both sides read; or ``--checkpoint CKPT``, a
gptlab checkpoint that gptlab reads directly and ``hf`` reads exported. Checks, on every sample:
``acc`` and ``acc_norm`` equal (absolute 1e-6), the per-sample verdicts that differ (a log-likelihood
tie that flipped), each answer's log-likelihood (relative 1e-5). Target: per workload, lm-eval's
wall time with ``hf`` >= 5x its wall time with ``gptlab``.
"""

from __future__ import annotations

import argparse
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

import common
import lmeval_peer
from gptlab.data.prompts import encode_pairs
from gptlab.model.checkpoint import load_gpt_checkpoint
from gptlab.model.gpt import GPT
from gptlab.resources import config_dir
from gptlab.tasks.spec import TaskSpec

TARGET = 5.0
MAX_DIFF = 1e-6  # acc, acc_norm: absolute
MAX_LOGLIK_DIFF = 1e-5  # an answer's log-likelihood: relative
PAIRS = 3  # each hf sample takes minutes on 2 cores
WHOLE_PAIRS = 1  # --whole: each hf sample takes ~17 minutes
MODEL, QUICK_MODEL = "gpt-micro", "gpt-nano"
BLOCK_SIZE = 1024
BATCH_SIZE = 16
METRICS = ("acc", "acc_norm")
BACKENDS = ("gptlab", "hf")


@dataclass(frozen=True)
class Workload:
    task: str  # lmeval_peer's task name (lm-eval's gptlab_<task>)
    label: str
    shots: int
    limit: int  # the first documents scored (--whole: all)
    quick_limit: int


WORKLOADS = (
    Workload("arc_easy", "ARC-Easy 5-shot", 5, 100, 16),
    Workload("hellaswag", "HellaSwag 0-shot", 0, 200, 16),
)


def documents(limit: int | None, count: int | None = None) -> str:
    """How many documents a workload scores: its first ``limit`` (lm-eval's ``limit``), or all (``count``)."""
    if limit is not None:
        return f"first {limit} documents"
    return "every document" if count is None else f"all {count} documents"


def local_files(shared: Path, root: Path) -> dict[str, dict[str, Path]]:
    """Each workload's split -> file under ``root``: ARC-Easy's train (the demonstrations) and test
    copied, HellaSwag's validation split as gptlab reads it, written as JSON lines."""
    arc = {}
    for split in ("train", "test"):
        arc[split] = root / "arc_easy" / f"{split}.jsonl"
        arc[split].parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared / "arc_easy" / f"{split}.jsonl", arc[split])
    spec = OmegaConf.to_container(OmegaConf.load(config_dir() / "task" / "hellaswag.yaml"), resolve=False)
    spec.update(data_dir=str(shared / "hellaswag"))
    hellaswag = root / "hellaswag" / "validation.jsonl"
    lmeval_peer.write_normalised(TaskSpec.from_config(spec), "validation", hellaswag)
    return {"arc_easy": arc, "hellaswag": {"validation": hellaswag}}


@dataclass
class Side:
    """One backend: its per-workload times (every call, warm-up included) and latest ``simple_evaluate`` output."""

    backend: str
    pretrained: Path
    task_dir: Path
    limits: Mapping[str, int | None]  # task -> documents scored (None: all)
    times: dict[str, list[float]] = field(default_factory=lambda: {w.task: [] for w in WORKLOADS})
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    threads: set[int] = field(default_factory=set)

    def sample(self) -> float:
        """Every workload, one ``simple_evaluate`` each; the total seconds."""
        total = 0.0
        for w in WORKLOADS:
            torch.set_num_threads(common.THREADS)
            start = time.perf_counter()
            out = lmeval_peer.run_lmeval(
                self.pretrained, self.task_dir, [w.task], batch_size=BATCH_SIZE, num_fewshot=w.shots,
                limit=self.limits[w.task], backend=self.backend,
            )
            seconds = time.perf_counter() - start
            self.threads.add(torch.get_num_threads())
            self.outputs[w.task] = out
            self.times[w.task].append(seconds)
            total += seconds
        return total


@dataclass
class Agreement:
    """How one workload's samples of the two sides compare."""

    documents: tuple[int, int]  # (gptlab, hf)
    same_requests: bool  # every document's (context, continuation) pairs equal, in order
    metrics: dict[str, tuple[float, float]]  # metric -> (gptlab, hf)
    flipped: dict[str, int]  # metric -> documents whose per-sample value differs
    loglik_diff: float  # the largest relative difference of an answer's log-likelihood
    answers: int
    cut: int  # answers whose context + answer exceed the model's window (lm-eval cuts the context)

    @property
    def max_diff(self) -> float:
        return max(abs(a - b) for a, b in self.metrics.values())


def samples(out: Mapping[str, Any], task: str) -> list[dict[str, Any]]:
    return sorted(out["samples"][f"gptlab_{task}"], key=lambda s: s["doc_id"])


def compare(ours: Mapping[str, Any], theirs: Mapping[str, Any], task: str, block_size: int) -> Agreement:
    a, b = samples(ours, task), samples(theirs, task)
    results = (ours["results"][f"gptlab_{task}"], theirs["results"][f"gptlab_{task}"])
    aligned = len(a) == len(b) and all(x["doc_id"] == y["doc_id"] for x, y in zip(a, b))
    same_requests = aligned and all(
        [tuple(r) for r in x["arguments"]] == [tuple(r) for r in y["arguments"]] for x, y in zip(a, b)
    )
    loglik_diff = max(
        (
            abs(float(rx[0][0]) - float(ry[0][0])) / max(abs(float(ry[0][0])), 1e-12)
            for x, y in zip(a, b)
            for rx, ry in zip(x["resps"], y["resps"])
        ),
        default=0.0,
    ) if same_requests else math.inf
    requests = [tuple(r) for y in b for r in y["arguments"]]
    encoded = encode_pairs([context for context, _ in requests], [[answer] for _, answer in requests])
    return Agreement(
        documents=(len(a), len(b)),
        same_requests=same_requests,
        metrics={m: (float(results[0][f"{m},none"]), float(results[1][f"{m},none"])) for m in METRICS},
        flipped={m: sum(x[m] != y[m] for x, y in zip(a, b)) if aligned else len(b) for m in METRICS},
        loglik_diff=loglik_diff,
        answers=len(requests),
        cut=sum(len(head) + len(tail) > block_size + 1 for head, (tail,) in encoded),
    )


def main(argv: Sequence[str] | None = None) -> common.Report:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--checkpoint", type=Path, default=None)
    extra.add_argument("--whole", action="store_true")
    opts, rest = extra.parse_known_args(argv)
    pairs = WHOLE_PAIRS if opts.whole else PAIRS
    args = common.parse_args(
        __doc__.splitlines()[0] + " Also: --checkpoint CKPT (a gptlab checkpoint: gptlab reads it, hf its "
        f"export; default a random {MODEL} with context {BLOCK_SIZE}); --whole (every document of both "
        "tasks, one pair, warm-up at --quick's sizes).",
        rest, warmup=1, pairs=pairs, min_pairs=pairs, quick_pairs=1,
    )
    common.setup_torch()
    for name in ("transformers", "lm-eval", "lm_eval", "datasets", "gptlab"):
        logging.getLogger(name).setLevel(logging.ERROR)  # lm-eval warns per call (e.g. no fewshot_split)
    import lm_eval  # imported here, before timing: both sides' imports are outside the samples
    import lm_eval.models.huggingface  # noqa: F401
    import lm_eval.tasks  # noqa: F401

    import gptlab.lmeval.backend  # noqa: F401  (registers --model gptlab)

    quick_limits = {w.task: w.quick_limit for w in WORKLOADS}
    limits = quick_limits if args.quick else {w.task: None if opts.whole else w.limit for w in WORKLOADS}
    root = Path(tempfile.mkdtemp(prefix="lmeval_backend-"))
    try:
        model = (
            load_gpt_checkpoint(opts.checkpoint) if opts.checkpoint
            else GPT.from_name(QUICK_MODEL if args.quick else MODEL, block_size=BLOCK_SIZE)
        ).eval()
        config = model.config
        try:
            model_dir = lmeval_peer.export_model(model, root / "hf")
        except ValueError as err:  # an architecture GPT2LMHeadModel cannot hold
            raise SystemExit(f"--checkpoint {opts.checkpoint}: the hf side needs an HF GPT-2 export: {err}")
        task_dir = lmeval_peer.write_tasks(
            root / "tasks", local_files(common.shared_data_dir(), root / "data"),
            choice_metrics={w.task: METRICS for w in WORKLOADS},
        )
        ours = Side("gptlab", opts.checkpoint.resolve() if opts.checkpoint else model_dir, task_dir, limits)
        theirs = Side("hf", model_dir, task_dir, limits)
        print(
            f"lmeval_backend: {config.name} context {config.block_size}, "
            + ", ".join(f"{w.label} {documents(limits[w.task])}" for w in WORKLOADS) + f", batch {BATCH_SIZE}",
            flush=True,
        )
        warmup = args.warmup
        if opts.whole:  # warm up at the quick sizes: datasets' first read of each file is the same
            for side in (ours, theirs):
                for _ in range(warmup):
                    Side(side.backend, side.pretrained, task_dir, quick_limits).sample()
            warmup = 0
        pairs = common.alternate(ours.sample, theirs.sample, args.pairs, warmup, names=("gptlab s", "hf s"))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    per_workload = {
        w.task: common.Pairs(ours.times[w.task][warmup:], theirs.times[w.task][warmup:], pairs.loads)
        for w in WORKLOADS
    }
    agree = {
        w.task: compare(ours.outputs[w.task], theirs.outputs[w.task], w.task, config.block_size) for w in WORKLOADS
    }
    rows: list[Sequence[Any]] = [
        ("total time, both workloads (s, median)", f"{pairs.median_a:.1f}", f"{pairs.median_b:.1f}", ""),
        ("total: ratio hf / gptlab per pair (min–max)", pairs.spread(), "", ""),
    ]
    for w in WORKLOADS:
        p, g = per_workload[w.task], agree[w.task]
        rows += [
            (f"{w.label} time (s, median)", f"{p.median_a:.1f}", f"{p.median_b:.1f}", ""),
            (
                f"{w.label} ratio hf / gptlab: median over pairs; per pair (min–max)",
                f"{p.ratio:.2f}; {p.spread()}", "", "",
            ),
            *(
                (
                    f"{w.label} {m}" + (" **differs**" if abs(a - b) > MAX_DIFF else ""),
                    f"{a:.6g}", f"{b:.6g}", f"{abs(a - b):.1e}",
                )
                for m, (a, b) in g.metrics.items()
            ),
            (f"{w.label} documents scored", *map(str, g.documents), ""),
            (
                f"{w.label} the same requests (every context and answer) both sides",
                "yes" if g.same_requests else "**no**", "", "",
            ),
            (
                f"{w.label} documents whose acc / acc_norm differ (a log-likelihood tie flipped)",
                " / ".join(str(g.flipped[m]) for m in METRICS), "", "",
            ),
            (f"{w.label} max relative difference of an answer's log-likelihood", f"{g.loglik_diff:.1e}", "", ""),
            (
                f"{w.label} answers cut to the {config.block_size}-token window (of {g.answers})",
                str(g.cut), "", "",
            ),
        ]
    targets = [
        common.Target(
            f"wall time lm-eval hf / gptlab, {w.label} ({documents(limits[w.task], agree[w.task].documents[1])})",
            per_workload[w.task].ratio, TARGET,
        )
        for w in WORKLOADS
    ]
    targets += [
        common.Target(
            "max acc / acc_norm difference gptlab vs hf (absolute, both workloads)",
            max(g.max_diff for g in agree.values()), MAX_DIFF, at_most=True, fmt=".1e",
        ),
        common.Target(
            "max relative difference of an answer's log-likelihood gptlab vs hf (both workloads; inf if the "
            "requests differ)",
            max(g.loglik_diff for g in agree.values()), MAX_LOGLIK_DIFF, at_most=True, fmt=".1e",
        ),
    ]
    threads = ", ".join(map(str, sorted(ours.threads | theirs.threads)))
    weights = f"the checkpoint `{opts.checkpoint}`" if opts.checkpoint else "random init"
    default_shape = (config.name, config.block_size) == (MODEL, BLOCK_SIZE)
    # one section per model shape (the ratio depends on the model's size and window) and per extent
    key = "lmeval_backend" if default_shape else f"lmeval_backend_{config.name}_{config.block_size}"
    report = common.Report(
        key=key + "_whole" if opts.whole else key,
        title="lm-evaluation-harness wall time, 5-shot ARC-Easy and zero-shot HellaSwag"
        + (", every document" if None in limits.values() else "") + ": `--model gptlab` vs `--model hf`",
        headers=("", "gptlab", "hf", "difference"),
        rows=rows,
        loads=pairs.loads,
        targets=targets,
        notes=[
            f"{len(pairs.a)} alternating pair(s) after {args.warmup} warm-up pair(s)"
            + (" at `--quick`'s sizes" if opts.whole else "") + f": fewer than the usual {common.MIN_PAIRS}, "
            "because one hf sample takes minutes of both cores" + (
                f" ({pairs.median_b / 60:.0f} minutes: each sample lasts long enough to average the machine's "
                "fast and slow phases)"
                if opts.whole else "; the per-pair ratios show the spread"
            ) + ". A side's sample is one `simple_evaluate` per workload (`run_lmeval`: lm-eval's task "
            "index over the local YAMLs, the model loaded by the backend, the documents read by `datasets` "
            "(its cache reused after the first read), few-shot prompts built, requests run, samples logged), "
            "each timed on its own; the warm-up pays `datasets`' first read. Imports (lm-eval, its hf backend, "
            "gptlab's backend) happen before timing.",
            "Data: local copies of `arc_easy/train.jsonl` (the demonstrations, drawn by lm-eval with its "
            "default few-shot seed: identical both sides) and `arc_easy/test.jsonl` "
            f"({documents(limits['arc_easy'], agree['arc_easy'].documents[1])} scored); gptlab's reading of "
            "`hellaswag/val_full.txt` as JSON lines "
            f"({documents(limits['hellaswag'], agree['hellaswag'].documents[1])} scored). Prompts are lm-eval's (ARC: "
            "`Question: ...\\nAnswer:`, each choice a continuation; HellaSwag: the context, each ending a "
            "continuation); metrics `acc` and `acc_norm` only.",
            f"Model: {config.name} ({config.n_layer} layers, {config.n_head} heads, {config.n_embd} wide, "
            f"context {config.block_size}), {weights}, exported with `export_model` (weights + GPT-2 "
            "tokenizer): hf reads the export (`pretrained=`, `dtype=float32`), gptlab "
            + ("the checkpoint" if opts.checkpoint else "the export")
            + f" (`pretrained=`). Batch {BATCH_SIZE} both sides, CPU, torch threads during the runs: {threads}.",
        ],
    )
    options = [*([f"--checkpoint {opts.checkpoint}"] if opts.checkpoint else []), *(["--whole"] if opts.whole else [])]
    report.publish("lmeval_backend.py", args, options)
    return report


if __name__ == "__main__":
    main()
