"""SST-2 fine-tuning throughput: gptlab's FinetuneModule vs transformers' GPT2ForSequenceClassification.

Both sides train on the real SST-2 (``sst2/train.tsv``, a seeded subset of ``train_limit`` examples,
from the shared data folder) with the same batches in the same order: the training batches of
``LabeledDataModule`` (GPT-1 input ``[start] text [extract]``, length-bucketed, padded to the longest
in the batch). gptlab takes them as they are, through ``FinetuneModule.training_step`` with
``lm_lambda=0`` (classification loss only); transformers gets the same token ids padded to 128, as
``run_glue.py`` pads by default (``max_seq_length=128``, ``pad_to_max_length``), and pools the last
non-pad token, which is the ``[extract]`` token gptlab's head reads. Model: gpt-mini's shape (6 layers,
6 heads, 192 wide) at context 128, dropout 0 everywhere, the same initial weights (gptlab's, exported
with ``export_hf_gpt2``, plus its special-token rows and its head), the same AdamW groups and settings
and gradient clipping at 1.0. Both start from the same random init (no weights download).

The training run is the timing run: a sample is the next ``STEPS_PER_SAMPLE`` batches, and the two
sides alternate, so after the last pair both have trained on exactly the same examples. Both are then
scored on the 872 dev examples. The two models compute the same function, so only float rounding
separates their runs, and training amplifies it; to show how much, a third run (untimed) trains
gptlab again on the same batches with ``NOISE_PAD`` more padding tokens, which changes nothing but
the kernels' shapes. Targets: gptlab's examples/s >= 3x transformers'; dev accuracy within 1 point
of transformers'.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
from omegaconf import OmegaConf

import common
from gptlab.data.labeled import LabeledDataModule
from gptlab.data.tokenizer import GPT2_VOCAB_SIZE, PAD_ID
from gptlab.lit.finetune import FinetuneModule
from gptlab.lit.base import param_groups
from gptlab.model.gpt import GPT, GPTConfig
from gptlab.model.hf import export_hf_gpt2
from gptlab.resources import config_dir

TARGET = 3.0
ACCURACY_POINTS = 1.0  # the largest dev-accuracy difference allowed, in points
HF_LENGTH = 128  # run_glue.py's max_seq_length, every input padded to it
BLOCK_SIZE = 128
BATCH_SIZE = 32  # GPT-1's fine-tuning batch (conf/regime/finetune.yaml)
STEPS_PER_SAMPLE = 16
# Examples each side trains on (the warm-up pair's included): enough to leave chance well behind.
TRAIN_EXAMPLES = 16384
NOISE_PAD = 8  # extra padding of the rounding-noise run
# A random init at GPT-1's fine-tuning rate (6.25e-5, meant for a pre-trained model) barely leaves
# chance in a few thousand examples; from scratch a small model needs a larger step.
LR = 1e-3
CLIP = 1.0  # conf/regime/finetune.yaml: trainer.gradient_clip_val


def sst2_task(data_root: Any, train_limit: int) -> dict[str, Any]:
    """The shipped SST-2 task spec, pointed at the shared files, train split cut to ``train_limit``."""
    spec = OmegaConf.to_container(OmegaConf.load(config_dir() / "task" / "sst2.yaml"), resolve=False)
    spec.update(data_dir=str(data_root / "sst2"), train_limit=train_limit)
    return spec


def finetune_settings() -> dict[str, Any]:
    """FinetuneModule's optimizer settings from conf/regime/finetune.yaml (the rate is ``LR``)."""
    module = OmegaConf.to_container(OmegaConf.load(config_dir() / "regime" / "finetune.yaml"))["regime"]["module"]
    return {"weight_decay": module["weight_decay"], "betas": tuple(module["betas"]), "eps": module["eps"]}


def adamw(module: nn.Module) -> torch.optim.AdamW:
    """AdamW as FinetuneModule builds it on the CPU (fused), and as transformers' Trainer does by default."""
    hp = finetune_settings()
    return torch.optim.AdamW(
        param_groups(module, hp["weight_decay"]), lr=LR, betas=hp["betas"], eps=hp["eps"], fused=True
    )


def hf_twin(module: FinetuneModule):
    """A ``GPT2ForSequenceClassification`` (SDPA) computing ``module``'s function with its weights.

    ``export_hf_gpt2`` writes GPT-2's 50257 rows; the embedding is then grown to gptlab's padded size
    and given gptlab's special-token rows, so both sides read the very same token ids. HF's score
    layer has no bias; it gets one, so both train the same parameters.
    """
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    model, head = module.model, module.head
    with tempfile.TemporaryDirectory() as tmp:
        export_hf_gpt2(model, tmp)
        hf = transformers.GPT2ForSequenceClassification.from_pretrained(
            tmp, num_labels=head.linear.out_features, pad_token_id=PAD_ID, attn_implementation="sdpa"
        )
    assert hf.config._attn_implementation == "sdpa"
    hf.resize_token_embeddings(model.config.vocab_size, mean_resizing=False)
    hf.score = nn.Linear(model.config.n_embd, head.linear.out_features, bias=True)
    with torch.no_grad():
        hf.transformer.wte.weight[GPT2_VOCAB_SIZE:] = model.wte.weight[GPT2_VOCAB_SIZE:]
        hf.score.weight.copy_(head.linear.weight)
        hf.score.bias.copy_(head.linear.bias)
    return hf.train()


def extra_padding(batch: dict[str, torch.Tensor], extra: int) -> dict[str, torch.Tensor]:
    """``batch`` with ``extra`` more padding positions: the same function, other kernel shapes."""
    pad = {"input_ids": PAD_ID, "attention_mask": 0, "lm_targets": -100}
    return {k: torch.nn.functional.pad(v, (0, extra), value=pad[k]) if k in pad else v for k, v in batch.items()}


def padded(batch: dict[str, torch.Tensor], length: int) -> dict[str, torch.Tensor]:
    """A classification batch's one sequence per example, right-padded to ``length`` with PAD_ID."""
    ids, mask = batch["input_ids"][:, 0], batch["attention_mask"][:, 0]
    extra = length - ids.size(1)
    return {
        "input_ids": torch.nn.functional.pad(ids, (0, extra), value=PAD_ID),
        "attention_mask": torch.nn.functional.pad(mask, (0, extra), value=0),
        "labels": batch["labels"],
    }


def train_step(loss: Callable[[], torch.Tensor], module: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    loss().backward()
    torch.nn.utils.clip_grad_norm_(module.parameters(), CLIP)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def accuracy(predict: Callable[[dict[str, torch.Tensor]], torch.Tensor], batches: list[dict[str, Any]]) -> float:
    right = sum(int((predict(b) == b["labels"]).sum()) for b in batches)
    return right / sum(len(b["labels"]) for b in batches)


def finetune(module: FinetuneModule, batches: list[dict[str, torch.Tensor]]) -> None:
    optimizer = adamw(module)
    for i, batch in enumerate(batches):
        train_step(lambda: module.training_step(batch, i), module, optimizer)


def gptlab_accuracy(module: FinetuneModule, dev: list[dict[str, torch.Tensor]]) -> float:
    module.eval()
    return accuracy(lambda b: module.head.predict(module(b)[0]), dev)


def main(argv: Sequence[str] | None = None) -> common.Report:
    args = common.parse_args(
        __doc__.splitlines()[0], argv, warmup=1, pairs=TRAIN_EXAMPLES // (STEPS_PER_SAMPLE * BATCH_SIZE) - 1
    )
    common.setup_torch()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    # training_step logs through self.log, which has no Trainer to write to here: a no-op.
    warnings.filterwarnings("ignore", message=".*self.trainer. reference is not registered.*")
    steps = 2 if args.quick else STEPS_PER_SAMPLE
    samples = args.warmup + args.pairs
    shape = dict(n_layer=2, n_head=2, n_embd=32) if args.quick else {}
    config = GPTConfig.from_name("gpt-mini", block_size=BLOCK_SIZE, dropout=0.0, **shape)
    task = sst2_task(common.shared_data_dir(), train_limit=samples * steps * BATCH_SIZE)
    datamodule = LabeledDataModule(task, block_size=BLOCK_SIZE, batch_size=BATCH_SIZE, eval_batch_size=64)
    datamodule.setup()
    module = FinetuneModule(GPT(config), task, lm_lambda=0.0, classifier_dropout=0.0)
    module.configure_task(datamodule.spec, datamodule.eval_splits)
    module.train()
    initial_state = copy.deepcopy(module.state_dict())
    hf = hf_twin(module)
    opt_ours, opt_hf = adamw(module), adamw(hf)

    # The first epoch's batches, collated once: data loading is timed on neither side.
    batches = list(datamodule.train_dataloader())
    assert len(batches) == samples * steps, (len(batches), samples * steps)
    hf_batches = [padded(b, HF_LENGTH) for b in batches]
    dev = list(datamodule.val_dataloader()[0])
    hf_dev = [padded(b, HF_LENGTH) for b in dev]
    # Same function at the start: the same scores for the first batch (dropout is 0 on both sides).
    with torch.no_grad():
        ours0 = module(batches[0])[0]
        theirs0 = hf(input_ids=hf_batches[0]["input_ids"], attention_mask=hf_batches[0]["attention_mask"]).logits
    start_diff = float((ours0 - theirs0).abs().max())
    assert start_diff < 1e-4, f"the two models disagree at init by {start_diff}"

    cursor = {"ours": 0, "theirs": 0}

    def ours() -> None:
        for i in range(cursor["ours"], cursor["ours"] + steps):
            train_step(lambda: module.training_step(batches[i], i), module, opt_ours)
        cursor["ours"] += steps

    def theirs() -> None:
        for i in range(cursor["theirs"], cursor["theirs"] + steps):
            train_step(lambda: hf(**hf_batches[i]).loss, hf, opt_hf)
        cursor["theirs"] += steps

    examples = steps * BATCH_SIZE
    real_tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    sides = {"ours": batches, "theirs": hf_batches}
    tokens = {side: sum(b["input_ids"].numel() for b in side_batches) for side, side_batches in sides.items()}
    print(f"finetune_sst2: {common.shape(config, BATCH_SIZE)}, {examples} examples per sample")
    pairs = common.alternate(
        common.wall(ours), common.wall(theirs), args.pairs, args.warmup, names=("gptlab s", "transformers s")
    )
    assert cursor["ours"] == cursor["theirs"] == len(batches)

    acc_ours = gptlab_accuracy(module, dev)
    hf.eval()
    acc_theirs = accuracy(
        lambda b: hf(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.argmax(-1), hf_dev
    )
    gap = 100 * abs(acc_ours - acc_theirs)
    # The rounding-noise run: gptlab again from the same init on the same batches, padded further.
    module.load_state_dict(initial_state)
    module.train()
    finetune(module, [extra_padding(b, NOISE_PAD) for b in batches])
    acc_noise = gptlab_accuracy(module, dev)
    n_train = len(batches) * BATCH_SIZE
    speed = common.Target("examples/s gptlab / transformers", pairs.ratio, TARGET)
    close = common.Target("dev accuracy gap |gptlab - transformers| (points)", gap, ACCURACY_POINTS, at_most=True)
    report = common.Report(
        key="finetune_sst2",
        title="SST-2 fine-tuning: gptlab FinetuneModule vs transformers GPT2ForSequenceClassification "
        "(padded to 128)",
        headers=("", "gptlab", "transformers"),
        rows=[
            (f"median time of {steps} steps (s)", f"{pairs.median_a:.3f}", f"{pairs.median_b:.3f}"),
            ("examples/s (median)", f"{examples / pairs.median_a:,.1f}", f"{examples / pairs.median_b:,.1f}"),
            ("ratio per pair (min–max)", pairs.spread(), ""),
            (
                f"tokens per example, padding included (real: {real_tokens / n_train:.1f})",
                f"{tokens['ours'] / n_train:.1f}",
                f"{tokens['theirs'] / n_train:.0f} ({tokens['theirs'] / tokens['ours']:.1f}x)",
            ),
            (
                f"dev accuracy after {n_train:,} examples (872 dev)",
                f"{100 * acc_ours:.2f}%",
                f"{100 * acc_theirs:.2f}%",
            ),
            ("dev accuracy difference (points)", f"{100 * (acc_ours - acc_theirs):+.2f}", ""),
            (
                f"rounding noise: gptlab rerun with {NOISE_PAD} more padding tokens",
                f"{100 * acc_noise:.2f}% ({100 * (acc_noise - acc_ours):+.2f} points)",
                "",
            ),
        ],
        loads=pairs.loads,
        targets=[speed, close],
        notes=[
            f"{len(pairs.a)} alternating pairs after {args.warmup} warm-up pair(s); a sample is the next "
            f"{steps} training steps of {BATCH_SIZE} examples, so each side trains on {n_train:,} SST-2 "
            f"examples in all (`train_limit={n_train}`, a seeded subset of train.tsv), the same batches in "
            "the same order; the warm-up samples train too.",
            "gptlab: `FinetuneModule.training_step` (backbone, head at the `[extract]` token, cross-entropy; "
            "`lm_lambda=0`, so no LM head) on `LabeledDataModule`'s length-bucketed batches. transformers: "
            f"`GPT2ForSequenceClassification(..., labels=)`, SDPA attention, the same ids padded to {HF_LENGTH} "
            "with the pad id, pooling the last non-pad token (the same `[extract]`).",
            f"Model: gpt-mini shape ({config.n_layer} layers, {config.n_head} heads, {config.n_embd} wide), "
            f"context {BLOCK_SIZE}, dropout 0 (backbone and head) on both sides, the same random init "
            f"(largest score difference at init {start_diff:.1e}). HF's score layer was given a bias like "
            "gptlab's head.",
            f"Optimizer: `torch.optim.AdamW(fused=True)` over `param_groups` (as FinetuneModule builds it on the "
            "CPU; transformers' Trainer defaults to `adamw_torch_fused`), lr "
            f"{LR:g} (constant; GPT-1's 6.25e-5 is for a pre-trained model), betas/eps/weight decay from "
            f"conf/regime/finetune.yaml, `clip_grad_norm_` {CLIP:g}, both sides. Batches are collated before "
            "timing on both sides.",
            "Only float rounding separates the two runs (padding changes the kernels' shapes), and training "
            f"amplifies it: the rounding-noise row is gptlab trained again from the same init on the same "
            f"batches with {NOISE_PAD} more padding positions each (the same function, untimed); its distance "
            "from gptlab's first run is the accuracy difference that rounding alone makes at this point of "
            "training.",
        ],
    )
    report.publish("finetune_sst2.py", args)
    return report


if __name__ == "__main__":
    main()
