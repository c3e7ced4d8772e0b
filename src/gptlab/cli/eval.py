"""``gptlab-eval``: any lm-evaluation-harness task on a gptlab checkpoint, scored by gptlab's backend
(``gptlab.lmeval.backend``), its scores appended to ``results.jsonl`` for ``gptlab-report``.

    gptlab-eval runs/demo/checkpoints/last.ckpt --tasks hellaswag,lambada_openai --num_fewshot 0
    gptlab-eval gpt2 --tasks my_task --include_path my_tasks/ --limit 100 --out runs/gpt2-eval

Every lm-eval metric of every task becomes one row (task, metric, value, k = ``--num_fewshot``,
regime zero_shot / one_shot / few_shot, model = the checkpoint's size, init = the checkpoint,
prompt ``lm-eval``); lm-eval's table is printed and its per-sample output is not kept. Bad input (an
unknown task, a checkpoint that is not a model, a batch size that is not a positive integer or does
not fit the device's memory) ends with one line naming the argument.
"""

from __future__ import annotations

import argparse
import difflib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gptlab.conditions import Condition
from gptlab.report.results import ResultRow, append_results
from gptlab.tasks.kinds import regime_for_k

PROMPT = "lm-eval"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gptlab-eval", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a gptlab checkpoint (.ckpt), a Hugging Face GPT-2 directory or a Hub id")
    parser.add_argument("--tasks", required=True, help="comma-separated lm-eval task names")
    parser.add_argument("--num_fewshot", type=int, default=0, help="demonstrations per example (default 0)")
    parser.add_argument("--batch_size", default="16", help="examples per forward (default 16)")
    parser.add_argument("--limit", type=int, default=None, help="score only each task's first N examples")
    parser.add_argument("--include_path", default=None, help="a directory of extra lm-eval task YAMLs")
    parser.add_argument("--device", default="cpu", help="where the model runs (default cpu)")
    parser.add_argument("--seed", type=int, default=1234, help="lm-eval's seeds (demonstration sampling)")
    parser.add_argument("--out", default=None, help="the run directory whose results.jsonl gets the rows (default: gptlab-eval)")
    return parser.parse_args(argv)


def check_tasks(names: list[str], include_path: str | None) -> Any:
    """lm-eval's task index; an unknown task name is an error naming it and its nearest names.
    When ``include_path`` holds every task, lm-eval's own thousands are not indexed (seconds)."""
    from lm_eval.tasks import TaskManager

    if include_path is not None:
        local = TaskManager(include_path=include_path, include_defaults=False)
        if set(names) <= set(local.all_tasks):
            return local
    manager = TaskManager(include_path=include_path)
    known = set(manager.all_tasks)
    for name in names:
        if name not in known:
            near = difflib.get_close_matches(name, sorted(known), n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise ValueError(f"--tasks: unknown lm-eval task {name!r}{hint} (lm-eval ls tasks lists them)")
    return manager


# what defines a gptlab-eval run besides its seed; batch size, device and output dir do not
CONDITION_ARGS = ("checkpoint", "num_fewshot", "limit", "include_path")


def result_rows(results: dict[str, Any], args: argparse.Namespace, model_name: str) -> list[ResultRow]:
    """One row per (task, metric) of lm-eval's ``results``; metric keys ``name,filter`` keep the
    filter unless it is ``none``; lm-eval's standard error of a metric is the row's ``stderr``.
    The condition is the evaluation's arguments and the task (``CONDITION_ARGS``)."""
    rows = []
    for task, metrics in results["results"].items():
        n_eval = results.get("n-samples", {}).get(task, {}).get("effective")
        condition = Condition.from_values(
            {"lm_eval.task": task, **{f"lm_eval.{arg}": getattr(args, arg) for arg in CONDITION_ARGS}}
        )
        for key, value in metrics.items():
            name, _, filter_name = key.partition(",")
            if not filter_name or name.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            metric = name if filter_name == "none" else f"{name},{filter_name}"
            stderr = metrics.get(f"{name}_stderr,{filter_name}")
            rows.append(
                ResultRow(
                    task=task, split="lm-eval", metric=metric, value=float(value), regime=regime_for_k(args.num_fewshot),
                    model=model_name, seed=args.seed, init=args.checkpoint, k=args.num_fewshot, n_eval=n_eval,
                    fewshot_seed=args.seed if args.num_fewshot else None, prompt=PROMPT, condition=condition.hash,
                    config=condition.values, stderr=float(stderr) if isinstance(stderr, (int, float)) else None,
                )
            )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        import lm_eval
        from lm_eval.utils import make_table

        from gptlab.lmeval.backend import GptlabLM
    except ImportError as err:
        raise SystemExit(f"gptlab-eval: error: lm-evaluation-harness is not installed ({err}): pip install 'gptlab[eval]'")
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    tasks = [name for name in args.tasks.split(",") if name]
    try:
        model = GptlabLM(args.checkpoint, batch_size=args.batch_size, device=args.device)
        manager = check_tasks(tasks, args.include_path)
    except (OSError, ValueError, RuntimeError) as err:
        raise SystemExit(f"gptlab-eval: error: {err}") from None
    try:
        results = lm_eval.simple_evaluate(
            model=model, tasks=tasks, num_fewshot=args.num_fewshot, limit=args.limit, task_manager=manager,
            random_seed=args.seed, numpy_random_seed=args.seed, torch_random_seed=args.seed,
            fewshot_random_seed=args.seed, log_samples=False,
        )
    except MemoryError as err:  # torch.OutOfMemoryError subclasses RuntimeError; both mean the same here
        raise SystemExit(f"gptlab-eval: error: --batch_size {args.batch_size} does not fit in memory ({err})") from None
    except RuntimeError as err:
        if "out of memory" in str(err).lower():
            raise SystemExit(f"gptlab-eval: error: --batch_size {args.batch_size} does not fit in memory") from None
        raise
    print(make_table(results))
    out = Path(args.out or "gptlab-eval")
    path = append_results(out, result_rows(results, args, model.model.config.name))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
