"""SFT examples/s and peak memory: gptlab's SFT batches vs transformers' usual SFT recipe (issue 14).

Data: the first ``--examples`` (256) examples of Alpaca's carved ``train`` split (conf/task/alpaca.yaml,
its template) as ``gptlab.data.sft.sft_examples`` makes them (prompt + response + ``<|endoftext|>``),
the same token sequences on every side, cut to at most ``--block-size`` (1024) tokens, one fewer
than SFT's window: transformers reads a whole sequence (it shifts the labels itself) and must fit its
``n_positions``. 1024, GPT-2's context, holds nearly every Alpaca example whole; their lengths vary
from a few dozen to about a thousand tokens, which is what bucketing and packing are for (at 256
most examples are cut to the same length, and every batch is full whichever way it is made).

Sides, one epoch each over those examples at batch ``--batch-size`` (8):

* **gptlab**: ``SFTDataModule``'s batches (its ``BucketBatchSampler``'s length-bucketed order,
  ``SFTCollator(pack=False)``), ``SFTModule.training_step``'s loss (``hidden_states`` + ``lm_loss``);
* **gptlab packed**: the same batches through ``SFTCollator(pack=True)``;
* **transformers**: ``GPT2LMHeadModel`` (SDPA) with the same weights (``export_hf_gpt2``), a seeded
  random order, each batch right-padded to its longest with ``<|endoftext|>``, ``attention_mask`` 0
  on padding, ``labels`` = the ids with -100 on the prompt and padding.

Same model (``--model``, gpt-micro, GPT-2's 50257 tokens on both sides, dropout 0, fp32, train mode)
and fused ``torch.optim.AdamW`` (conf/regime/finetune.yaml's SFT settings, decay on >= 2-D tensors).
Each run is a fresh subprocess (every one imports torch, transformers and gptlab): it builds its
model, optimizer and batches, takes one untimed warm-up step (the first batch), then times the
epoch; examples/s = examples / seconds. Memory: the process's peak resident set (``ru_maxrss``) and
its rise over the resident set once everything was built. A round runs the three sides one after
the other, the order reversing every round; a ratio is the median over rounds. Before timing, both
sides' losses on one identical padded batch must agree. Target: examples/s gptlab / transformers >= 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

import common
from gptlab.data.sft import SFTCollator, SFTDataModule, SFTExample, sft_examples
from gptlab.data.sources import load_task
from gptlab.data.tokenizer import EOT_ID, GPT2_VOCAB_SIZE
from gptlab.model.gpt import GPT, GPTConfig
from gptlab.model.hf import export_hf_gpt2

TARGET = 2.0
LOSS_TOLERANCE = 1e-4  # relative
MODEL, QUICK_MODEL = "gpt-micro", "gpt-nano"
BLOCK_SIZE, QUICK_BLOCK_SIZE = 1024, 256  # > the task's max_gen_toks (128), which needs room for a prompt
EXAMPLES, QUICK_EXAMPLES = 256, 4
BATCH_SIZE, QUICK_BATCH_SIZE = 8, 2  # --quick: 2 timed steps
# A sample is a whole epoch in a fresh process (three per round): the minimum pairs, not the default.
PAIRS = common.MIN_PAIRS
SIDES = ("gptlab", "gptlab packed", "transformers")


def quiet_transformers() -> None:
    """Imports transformers (every run does, so the imports weigh the same) without its warnings."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def rss_mib() -> float:
    """The resident set now (Linux ``/proc``), in MiB."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mib() -> float:
    """This process's peak resident set (``ru_maxrss``), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def hf_batch(examples: Sequence[SFTExample]) -> dict[str, torch.Tensor]:
    """transformers' SFT batch: right-padded with EOT, labels aligned with the ids (the model shifts
    them), -100 on the prompt and padding."""
    width = max(len(ex.ids) for ex in examples)
    input_ids = torch.full((len(examples), width), EOT_ID, dtype=torch.long)
    labels = torch.full_like(input_ids, -100)
    attention_mask = torch.zeros_like(input_ids)
    for row, ex in enumerate(examples):
        n = len(ex.ids)
        input_ids[row, :n] = torch.tensor(ex.ids)
        labels[row, ex.prompt_tokens : n] = input_ids[row, ex.prompt_tokens : n]
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def side_batches(side: str, examples: Sequence[SFTExample], order: list[list[int]], block_size: int) -> list[dict]:
    """``side``'s batches of ``examples``, batch ``i`` holding the indices ``order[i]``."""
    collate = hf_batch if side == "transformers" else SFTCollator(side == "gptlab packed", block_size)
    return [collate([examples[i] for i in indices]) for indices in order]


def loss_of(side: str, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The training loss: ``SFTModule.training_step``'s for gptlab, ``labels=`` for transformers."""
    if side == "transformers":
        return model(**batch).loss
    hidden = model.hidden_states(
        batch["input_ids"], batch.get("attention_mask"), batch.get("position_ids"), segment_ids=batch.get("segment_ids")
    )
    return model.lm_loss(hidden, batch["targets"])


def load_model(side: str, work_dir: Path) -> torch.nn.Module:
    """gptlab's model from its state dict, or its ``export_hf_gpt2`` twin; train mode."""
    if side == "transformers":
        import transformers

        model = transformers.GPT2LMHeadModel.from_pretrained(work_dir / "hf", attn_implementation="sdpa")
        assert next(model.parameters()).dtype == torch.float32
    else:
        work = json.loads((work_dir / "work.json").read_text())
        model = GPT(GPTConfig.from_dict(work["config"]))
        model.load_state_dict(torch.load(work_dir / "gptlab.pt"))
    return model.train()


def child(side: str, work_dir: Path) -> dict[str, Any]:
    """One side's epoch in this (fresh) process: its seconds and memory."""
    quiet_transformers()
    common.setup_torch()
    work = json.loads((work_dir / "work.json").read_text())
    examples = [SFTExample(**ex) for ex in work["examples"]]
    model = load_model(side, work_dir)
    hp = work["hp"]
    params = [p for p in model.parameters() if p.requires_grad]
    # param_groups' split (weights of linear layers and embeddings) by shape: HF's Conv1D is no nn.Linear
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in params if p.ndim >= 2], "weight_decay": hp["weight_decay"]},
         {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
        lr=hp["lr"], betas=tuple(hp["betas"]), eps=hp["eps"], fused=True,
    )
    batches = side_batches(side, examples, work["orders"][side], work["block_size"])
    # the resident set now, not the high-water mark: the imports' transient peak can exceed training's
    built_mib = rss_mib()

    def step(batch: dict[str, torch.Tensor]) -> None:
        loss_of(side, model, batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(batches[0])  # warm-up: gradients, AdamW's state and first-touch pages, not timed
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "peak_mib": peak_rss_mib(),
        "built_mib": built_mib,
        "rows": sum(len(b["input_ids"]) for b in batches),
        "positions": sum(b["input_ids"].numel() for b in batches),
    }


def run_child(side: str, work_dir: Path) -> dict[str, Any]:
    """``child(side)`` in a fresh interpreter; its JSON line back."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", side, str(work_dir)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"sft_throughput child {side!r} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def prepare(work_dir: Path, data_dir: Path, model_name: str, count: int, block_size: int, batch_size: int) -> dict:
    """Writes what every run reads into ``work_dir`` (examples, batch orders, settings, weights)."""
    from hydra import compose, initialize_config_dir

    from gptlab.resources import config_dir

    overrides = ["task=alpaca", "regime=finetune", f"paths.data_dir={data_dir}"]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    datamodule = SFTDataModule(cfg.task, block_size, batch_size, seed=cfg.seed)
    spec, data = load_task(datamodule.spec, seed=datamodule.seed)
    # block_size - 1: a sequence of at most block_size tokens, which transformers reads whole
    examples = sft_examples(datamodule.prompt, data[spec.train_split][:count], block_size - 1)
    bucketed = list(datamodule.bucket_sampler([ex.length for ex in examples], batch_size))
    shuffled = np.random.default_rng(datamodule.seed).permutation(len(examples)).tolist()
    random_order = [shuffled[i : i + batch_size] for i in range(0, len(shuffled), batch_size)]
    config = GPTConfig.from_name(model_name, block_size=block_size, vocab_size=GPT2_VOCAB_SIZE, dropout=0.0)
    model = GPT(config)
    torch.save(model.state_dict(), work_dir / "gptlab.pt")
    export_hf_gpt2(model, work_dir / "hf")
    hp = OmegaConf.to_container(cfg.regime.generate.module, resolve=True)
    work = {
        "config": config.to_dict(),
        "block_size": block_size,
        "examples": [dataclasses.asdict(ex) for ex in examples],
        "orders": {"gptlab": bucketed, "gptlab packed": bucketed, "transformers": random_order},
        "hp": {k: hp[k] for k in ("lr", "weight_decay", "betas", "eps")},
        "bucket_size": datamodule.bucket_size,
        "seed": datamodule.seed,
        "cut_responses": sum(ex.response_cut for ex in examples),
    }
    (work_dir / "work.json").write_text(json.dumps(work))
    return work


def loss_check(work_dir: Path, work: dict) -> tuple[float, float, str]:
    """Both sides' losses on the same padded batch (gptlab's first), and transformers' attention."""
    examples = [SFTExample(**ex) for ex in work["examples"]]
    first = [work["orders"]["gptlab"][0]]
    models = {side: load_model(side, work_dir) for side in ("gptlab", "transformers")}
    with torch.no_grad():
        ours, theirs = (
            loss_of(side, model, side_batches(side, examples, first, work["block_size"])[0]).item()
            for side, model in models.items()
        )
    return ours, theirs, models["transformers"].config._attn_implementation


def main(argv: Sequence[str] | None = None) -> common.Report | None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--child"]:
        print(json.dumps(child(argv[1], Path(argv[2]))), flush=True)
        return None
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--examples", type=int, default=None)
    extra.add_argument("--model", default=None)
    extra.add_argument("--batch-size", type=int, default=None)
    extra.add_argument("--block-size", type=int, default=None)
    extra.add_argument("--data-dir", type=Path, default=None)
    opts, rest = extra.parse_known_args(argv)
    args = common.parse_args(
        __doc__.splitlines()[0] + " Also: --examples N, --model NAME, --batch-size B, --block-size T, --data-dir DIR.",
        rest, warmup=0, pairs=PAIRS, min_pairs=PAIRS, quick_pairs=1,
    )
    common.setup_torch()
    quiet_transformers()
    name = opts.model or (QUICK_MODEL if args.quick else MODEL)
    count = opts.examples or (QUICK_EXAMPLES if args.quick else EXAMPLES)
    batch_size = opts.batch_size or (QUICK_BATCH_SIZE if args.quick else BATCH_SIZE)
    block_size = opts.block_size or (QUICK_BLOCK_SIZE if args.quick else BLOCK_SIZE)
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory() as tmp:
        work_dir = Path(tmp)
        work = prepare(work_dir, opts.data_dir or common.shared_data_dir(), name, count, block_size, batch_size)
        ours_loss, hf_loss, attention = loss_check(work_dir, work)
        print(f"sft_throughput: {name}, {count} Alpaca examples, batch {batch_size}; loss at init on the same "
              f"batch: gptlab {ours_loss:.6f}, transformers {hf_loss:.6f}", flush=True)
        loads = [common.load_average()]
        for i in range(args.pairs):
            for side in SIDES if i % 2 == 0 else SIDES[::-1]:
                runs[side].append(run_child(side, work_dir))
            loads.append(common.load_average())
            print(f"  round {i + 1}/{args.pairs}: " + ", ".join(
                f"{side} {count / runs[side][-1]['seconds']:.2f} examples/s" for side in SIDES), flush=True)

    def seconds(side: str) -> list[float]:
        return [run["seconds"] for run in runs[side]]

    def median(side: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[side])

    plain = common.Pairs(seconds("gptlab"), seconds("transformers"), loads)
    packed = common.Pairs(seconds("gptlab packed"), seconds("transformers"), loads)
    relative = abs(ours_loss - hf_loss) / abs(hf_loss)
    real = sum(len(ex["ids"]) - 1 for ex in work["examples"])
    report = common.Report(
        key="sft_throughput",
        title="SFT throughput (issue 14)",
        headers=("", "gptlab", "gptlab packed", "transformers"),
        rows=[
            ("examples/s (median)", *(f"{count / statistics.median(seconds(side)):.2f}" for side in SIDES)),
            ("ratio to transformers: median (rounds)",
             *(f"{p.ratio:.2f} ({min(p.pair_ratios()):.2f}–{max(p.pair_ratios()):.2f})" for p in (plain, packed)), ""),
            ("peak RSS (MiB, median)", *(f"{median(side, 'peak_mib'):,.0f}" for side in SIDES)),
            ("training: peak above the RSS once model, optimizer and batches were built (MiB, median)",
             *(f"{median(side, 'peak_mib') - median(side, 'built_mib'):,.0f}" for side in SIDES)),
            (f"token positions read per epoch (rows); {real:,} are tokens",
             *(f"{runs[side][0]['positions']:,} ({runs[side][0]['rows']})" for side in SIDES)),
            ("loss at init, the same padded batch", f"{ours_loss:.6f}", "", f"{hf_loss:.6f}"),
            ("batch order", f"length-bucketed (`BucketBatchSampler`, bucket {work['bucket_size']}, seed "
             f"{work['seed']})", f"the same, packed into rows of {block_size}", f"random (seed {work['seed']})"),
        ],
        loads=loads,
        targets=[
            common.Target("SFT examples/s gptlab / transformers", plain.ratio, TARGET),
            common.Target("relative difference of the init loss on one batch, gptlab vs transformers",
                          relative, LOSS_TOLERANCE, at_most=True, fmt=".1e"),
        ],
        notes=[
            f"{args.pairs} round(s) of three fresh subprocesses (one per side, the order reversing every round); "
            f"each trains one epoch of {count} examples after one untimed warm-up step. 1-minute load average "
            f"at the start {loads[0]:.1f}, at the end {loads[-1]:.1f}.",
            f"Data: the first {count} examples of Alpaca's carved `train` split, prompt + response + EOT of "
            f"`sft_examples` at most {block_size} tokens ({work['cut_responses']} responses cut); gptlab reads "
            "all but the last token of each, transformers all of them (its last logits unused).",
            f"Model: {name} shape ({work['config']['n_layer']} layers, {work['config']['n_head']} heads, "
            f"{work['config']['n_embd']} wide, context {block_size}), 50257-token vocabulary both sides, the same "
            f"random init, dropout 0, fp32, 2 threads; transformers' attention: `{attention}`. AdamW fused, lr "
            f"{work['hp']['lr']:g}, weight decay {work['hp']['weight_decay']:g} on >= 2-D tensors, no schedule.",
            "Memory: `ru_maxrss` of each run's process at its end; the rise is over the resident set (`/proc`) "
            "once model, optimizer and batches were built. Every run imports torch, transformers and gptlab.",
        ],
    )
    extras = [f"--examples {count}"] if opts.examples else []
    extras += [f"--model {name}"] if opts.model else []
    extras += [f"--batch-size {batch_size}"] if opts.batch_size else []
    extras += [f"--block-size {block_size}"] if opts.block_size else []
    extras += [f"--pairs {args.pairs}"] if args.pairs != args.default_pairs else []
    text = report.markdown(" ".join(["python bench/sft_throughput.py", *(["--quick"] if args.quick else []), *extras]))
    print("\n" + text + "\n", flush=True)
    if not args.no_write:
        common.write_section(report.key, text)
        print(f"updated {common.BENCHMARKS_MD.relative_to(common.REPO)} section {report.key!r}")
    return report


if __name__ == "__main__":
    main()
