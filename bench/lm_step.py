"""LM training step (forward + backward + AdamW) of gptlab's backbone vs transformers' GPT-2.

Both models have gpt-mini's shape (6 layers, 6 heads, 192 wide, context 256), batch 8, dropout 0,
the same initial weights (the HF model is gptlab's, exported with ``export_hf_gpt2``) and the same
AdamW groups and settings. gptlab computes its loss with the chunked fused LM-head cross-entropy
(``GPT.lm_loss``); transformers with ``labels=`` (its standard path: full fp32 logits, shift,
``cross_entropy``), attention through SDPA. Target: gptlab's tokens/s >= 1.10x transformers'.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence

import torch

import common
from gptlab.model.gpt import GPT
from gptlab.model.hf import GPT2_VOCAB_SIZE, export_hf_gpt2

TARGET = 1.10
STEPS_PER_SAMPLE = 1


def hf_twin(model: GPT):
    """A ``transformers.GPT2LMHeadModel`` (SDPA attention) with ``model``'s shape and weights."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        export_hf_gpt2(model, tmp)
        hf = transformers.GPT2LMHeadModel.from_pretrained(tmp, attn_implementation="sdpa")
    assert hf.config._attn_implementation == "sdpa"
    assert hf.lm_head.weight is hf.transformer.wte.weight  # tied, as in gptlab
    return hf.train()


def hf_train_step(hf, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> None:
    loss = hf(input_ids=x, labels=x).loss  # transformers shifts the labels itself
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main(argv: Sequence[str] | None = None) -> common.Report:
    args = common.parse_args(__doc__.splitlines()[0], argv, warmup=2, pairs=11)
    common.setup_torch()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    config, batch_size = common.bench_config(args.quick)
    model = GPT(config).train()
    hf = hf_twin(model)
    opt_ours, opt_hf = common.adamw(model), common.adamw(hf)
    x, y = common.token_windows(batch_size, config.block_size)[0]
    # Same starting loss: the two models compute the same function.
    with torch.no_grad():
        ours0, hf0 = model.lm_loss(model.hidden_states(x), y).item(), hf(input_ids=x, labels=x).loss.item()

    def ours() -> None:
        for _ in range(STEPS_PER_SAMPLE):
            common.gptlab_train_step(model, opt_ours, x, y)

    def theirs() -> None:
        for _ in range(STEPS_PER_SAMPLE):
            hf_train_step(hf, opt_hf, x)

    print(f"lm_step: {common.shape(config, batch_size)}")
    pairs = common.alternate(
        common.wall(ours), common.wall(theirs), args.pairs, args.warmup, names=("gptlab s", "transformers s")
    )
    tokens = STEPS_PER_SAMPLE * batch_size * config.block_size
    target = common.Target("tokens/s gptlab / transformers", pairs.ratio, TARGET)
    report = common.Report(
        key="lm_step",
        title="LM training step: gptlab vs transformers GPT2LMHeadModel (sdpa)",
        headers=("", "gptlab", "transformers"),
        rows=[
            ("median step time (s)", *(f"{t / STEPS_PER_SAMPLE:.3f}" for t in (pairs.median_a, pairs.median_b))),
            ("tokens/s (median)", f"{tokens / pairs.median_a:,.0f}", f"{tokens / pairs.median_b:,.0f}"),
            ("parameters", f"{model.num_params():,}", f"{sum(p.numel() for p in hf.parameters()):,}"),
            ("vocabulary rows", f"{config.vocab_size:,} (padded)", f"{GPT2_VOCAB_SIZE:,}"),
            ("loss at init", f"{ours0:.4f}", f"{hf0:.4f}"),
            ("ratio per pair (min–max)", pairs.spread(), ""),
        ],
        loads=pairs.loads,
        targets=[target],
        notes=[
            f"{len(pairs.a)} alternating pairs after {args.warmup} warm-up samples per side; a sample is "
            f"{STEPS_PER_SAMPLE} step(s) of {batch_size}x{config.block_size} tokens (random ids, the same batch "
            "both sides).",
            f"Model: gpt-mini shape ({config.n_layer} layers, {config.n_head} heads, {config.n_embd} wide), "
            "dropout 0 both, same initial weights, tied embeddings both. Vocabulary: gptlab pads to 50304 "
            "(47 extra rows: more head FLOPs for gptlab), transformers keeps 50257.",
            "Loss: gptlab `GPT.lm_loss` (chunked fused LM-head cross-entropy over T targets); transformers "
            "`labels=x` (full logits in fp32, T-1 shifted targets). Both count B·T tokens per step.",
            "Optimizer: `torch.optim.AdamW` over `param_groups` (decay on >= 2-D tensors), lr/betas/eps/"
            "weight decay from conf/regime/pretrain.yaml, fused (as gptlab's modules build it on the CPU, and "
            "as transformers' Trainer does by default: `adamw_torch_fused`) both sides.",
        ],
    )
    if not target.met or args.quick:
        ours = common.torch_profile(lambda: common.gptlab_train_step(model, opt_ours, x, y))
        theirs = common.torch_profile(lambda: hf_train_step(hf, opt_hf, x))
        report.notes.append(
            f"Profile of one step each (target {'met' if target.met else 'missed'}): matmul ops take "
            f"{100 * ours.matmul_share:.0f}% of gptlab's self CPU time and {100 * theirs.matmul_share:.0f}% of "
            f"transformers'. Largest non-matmul ops, gptlab: {ours.others}; transformers: {theirs.others}."
        )
        report.profiles += [
            ("Top ops of one gptlab step (self CPU time):", ours.table),
            ("Top ops of one transformers step (self CPU time):", theirs.table),
        ]
    report.publish("lm_step.py", args)
    return report


if __name__ == "__main__":
    main()
