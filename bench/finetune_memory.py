"""Peak memory of GPT-1-style fine-tuning of gpt2 (124M) on the CPU: gptlab vs transformers' GPT2DoubleHeadsModel.

The setting is GPT-1's multiple-choice fine-tuning (Story Cloze: two endings per story) at batch 8
and context 128: 8 examples x 2 choices x 128 tokens, loss = multiple-choice loss + 0.5 x LM loss.
gptlab: ``FinetuneModule`` (gpt2 backbone, multiple-choice head, ``lm_lambda=0.5``) through its
``training_step``. transformers: ``GPT2DoubleHeadsModel`` (LM head + multiple-choice head, SDPA
attention), ``mc_loss + 0.5 * loss``. Both from a random init (no weights download) with GPT-2's
dropout 0.1, the same random token ids at full length (no padding), and fused ``torch.optim.AdamW`` over
``param_groups`` with conf/regime/finetune.yaml's settings; a run takes ``STEPS`` training steps
(forward, backward, AdamW step): the first allocates the gradients and AdamW's state, the second has
them all live while its activations are.

Each side runs in a fresh subprocess that imports the same modules (torch, transformers, gptlab and
Lightning) before it builds its model, so the imports weigh the same on both sides; the figure is
the process's peak resident set (``ru_maxrss``). Subprocesses alternate, the side that goes first
swapping every pair. Target: gptlab's peak below transformers' (ratio transformers / gptlab > 1).
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common

TARGET = 1.0
STEPS = 2
BATCH_SIZE = 8
CHOICES = 2
CONTEXT = 128
QUICK_BATCH, QUICK_CONTEXT = 2, 16  # --quick: a toy model on a few tokens
LM_LAMBDA = 0.5  # GPT-1's auxiliary LM weight
SIDES = ("gptlab", "transformers")
# A run's peak is set by the sizes of what it allocates, not by timing, so it barely varies from run
# to run; each run costs a minute of two cores, so fewer pairs than the timing scripts' default.
PAIRS = 3


def _rss_mib() -> float:
    """The resident set now (Linux ``/proc``), in MiB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(side: str, quick: bool) -> dict[str, Any]:
    """One side's run in this (fresh) process: what it measured, as a dict."""
    import warnings

    import torch
    import transformers
    from omegaconf import OmegaConf

    from gptlab.data.tokenizer import EXTRACT_ID
    from gptlab.lit.finetune import FinetuneModule
    from gptlab.lit.base import param_groups
    from gptlab.model.gpt import GPT, GPTConfig
    from gptlab.resources import config_dir
    from gptlab.tasks.spec import TaskSpec

    common.setup_torch()
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*self.trainer. reference is not registered.*")
    hp = OmegaConf.to_container(OmegaConf.load(config_dir() / "regime" / "finetune.yaml"))["regime"]["module"]
    shape = dict(n_layer=2, n_head=2, n_embd=64) if quick else {}
    config = GPTConfig.from_name("gpt2", **shape)  # dropout 0.1, as GPT-2
    batch_size, context = (QUICK_BATCH, QUICK_CONTEXT) if quick else (BATCH_SIZE, CONTEXT)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 50257, (batch_size, CHOICES, context), generator=gen)
    ids[..., -1] = EXTRACT_ID if side == "gptlab" else 50256  # the token the choice head reads
    labels = torch.randint(0, CHOICES, (batch_size,), generator=gen)
    rss_after_imports = _rss_mib()

    if side == "gptlab":
        task = OmegaConf.to_container(OmegaConf.load(config_dir() / "task" / "storycloze.yaml"), resolve=False)
        module = FinetuneModule(GPT(config), task, lm_lambda=LM_LAMBDA)
        module.configure_task(TaskSpec.from_config(task), ["validation"])
        module.train()
        lm_targets = torch.cat([ids[..., 1:], torch.full_like(ids[..., :1], -100)], dim=-1)
        batch = {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "extract_index": torch.full((batch_size, CHOICES), context - 1),
            "sequence_mask": torch.ones(batch_size, CHOICES, dtype=torch.bool),
            "lm_targets": lm_targets,
            "labels": labels,
        }

        def loss() -> torch.Tensor:
            return module.training_step(batch, 0)
    else:
        hf_config = transformers.GPT2Config(
            n_layer=config.n_layer,
            n_head=config.n_head,
            n_embd=config.n_embd,
            n_positions=config.block_size,
            attn_implementation="sdpa",
        )
        module = transformers.GPT2DoubleHeadsModel(hf_config).train()
        assert module.config._attn_implementation == "sdpa"
        mc_token_ids = torch.full((batch_size, CHOICES), context - 1)

        def loss() -> torch.Tensor:
            out = module(input_ids=ids, mc_token_ids=mc_token_ids, labels=ids, mc_labels=labels)
            return out.mc_loss + LM_LAMBDA * out.loss

    optimizer = torch.optim.AdamW(  # fused: as gptlab builds it on the CPU, and transformers' Trainer by default
        param_groups(module, hp["weight_decay"]), lr=hp["lr"], betas=tuple(hp["betas"]), eps=hp["eps"], fused=True
    )
    rss_model = _rss_mib()
    start = time.perf_counter()
    for _ in range(STEPS):
        loss().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return {
        "side": side,
        "peak_mib": _peak_rss_mib(),
        "after_imports_mib": rss_after_imports,
        "with_model_mib": rss_model,
        "parameters": sum(p.numel() for p in module.parameters()),
        "seconds": time.perf_counter() - start,
    }


def run_child(side: str, quick: bool) -> dict[str, Any]:
    """``child(side)`` in a fresh interpreter; its JSON line back."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", side, *(["--quick"] if quick else [])]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"finetune_memory child {side} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> common.Report | None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--child"]:
        print(json.dumps(child(argv[1], quick="--quick" in argv)), flush=True)
        return None
    args = common.parse_args(__doc__.splitlines()[0], argv, warmup=0, pairs=PAIRS, min_pairs=PAIRS, quick_pairs=1)
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}

    def measure(side: str):
        def sample() -> float:
            run = run_child(side, args.quick)
            runs[side].append(run)
            return run["peak_mib"]

        return sample

    tokens = f"{QUICK_BATCH}x{CHOICES}x{QUICK_CONTEXT}" if args.quick else f"{BATCH_SIZE}x{CHOICES}x{CONTEXT}"
    print(f"finetune_memory: gpt2{' (toy size)' if args.quick else ''}, {tokens} tokens")
    pairs = common.alternate(
        measure("gptlab"), measure("transformers"), args.pairs, warmup=0, names=("gptlab MiB", "transformers MiB")
    )
    ours, theirs = runs["gptlab"], runs["transformers"]
    median = statistics.median

    def med(side: list[dict[str, Any]], key: str) -> str:
        return f"{median(run[key] for run in side):,.0f}"

    def each(side: list[dict[str, Any]], key: str) -> str:
        return ", ".join(f"{run[key]:,.0f}" for run in side)

    target = common.Target("peak RSS transformers / gptlab", pairs.ratio, TARGET)
    for run in ours + theirs:
        run["training_mib"] = run["peak_mib"] - run["after_imports_mib"]
    report = common.Report(
        key="finetune_memory",
        title="Peak memory of fine-tuning gpt2 (124M), batch 8, context 128, CPU: gptlab vs "
        "GPT2DoubleHeadsModel",
        headers=("", "gptlab (FinetuneModule, multiple choice, λ 0.5)", "transformers (GPT2DoubleHeadsModel)"),
        rows=[
            ("peak RSS (MiB, median)", f"{pairs.median_a:,.0f}", f"{pairs.median_b:,.0f}"),
            ("peak RSS per run (MiB)", each(ours, "peak_mib"), each(theirs, "peak_mib")),
            *(
                (f"{what} (MiB, median)", med(ours, key), med(theirs, key))
                for what, key in (
                    ("RSS after the imports", "after_imports_mib"),
                    ("RSS with model + optimizer built", "with_model_mib"),
                    ("peak above the imports: training", "training_mib"),
                )
            ),
            ("parameters", f"{ours[0]['parameters']:,}", f"{theirs[0]['parameters']:,}"),
            (f"time of {STEPS} steps (s, median)", med(ours, "seconds"), med(theirs, "seconds")),
            ("ratio per pair (min–max)", pairs.spread(), ""),
        ],
        loads=pairs.loads,
        targets=[target],
        notes=[
            f"{len(pairs.a)} alternating pairs of fresh subprocesses (the side that goes first swaps every "
            f"pair), no warm-up: a run's peak is set by the sizes it allocates, not by timing or load, so "
            "it varies little (see the per-run peaks), and each run takes minutes of both cores.",
            f"Each run: {STEPS} training steps (forward, backward, AdamW step) on {BATCH_SIZE} examples x "
            f"{CHOICES} choices x {CONTEXT} tokens, random ids, no padding; loss = multiple-choice loss + "
            f"{LM_LAMBDA} x LM loss on both sides. gpt2 shape (12 layers, 12 heads, 768 wide, 1024 "
            "positions), dropout 0.1 (embeddings, attention, residuals, and the choice head's input), "
            "random init. gptlab pads its vocabulary to 50304 rows (47 more than transformers).",
            "gptlab's LM loss is the chunked fused LM-head cross-entropy (`gptlab.model.loss`): no (B, T, V) "
            "logits tensor; transformers' DoubleHeads computes the full fp32 logits for every position, "
            "then a shifted contiguous copy and the cross-entropy's log-softmax, and their gradients.",
            "Peak RSS: `resource.getrusage(RUSAGE_SELF).ru_maxrss` of the subprocess at its end; both import "
            "torch, transformers, Lightning and gptlab before building anything.",
        ],
    )
    report.publish("finetune_memory.py", args)
    return report


if __name__ == "__main__":
    main()
