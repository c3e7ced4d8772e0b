"""Batched greedy generation, tokens/s: gptlab's ``greedy_until`` vs transformers' ``generate``.

gptlab: ``gptlab.model.greedy.greedy_until`` (what ``GenerativeModule`` decodes TriviaQA with), run
on left-padded prompts (pad id 0, ``prompt_mask`` 0 on the padding) with an ``answer_end`` that never
finds an end, so every row generates exactly ``max_new_tokens`` tokens: one forward over the
prompts fills its KV cache, then each step feeds one token per row through it and takes the argmax
over GPT-2's 50257 text tokens.

Peer: ``transformers.GPT2LMHeadModel`` (SDPA attention) with the same weights (gptlab's, exported
with ``export_hf_gpt2``), ``generate(..., do_sample=False, use_cache=True, max_new_tokens=N,
min_new_tokens=N)`` on the same prompts, left-padded with 50256 (GPT-2's end-of-text, the usual pad
id of a GPT-2) and the same attention mask; ``generate`` derives each row's positions from the
mask, as gptlab does.

Workload: the first 64 questions of the shared TriviaQA subset (``triviaqa/validation_subset.jsonl``,
field ``context``), GPT-2 tokens, sorted by length and batched 16 at a time, 32 new tokens per row.
Model: a random-init gpt-micro in eval mode, fp32, ``torch.inference_mode``, 2 threads both sides:
the speed does not depend on the weights, and two greedy decoders of the same weights must write
the same tokens for any weights (up to float rounding on exact ties), which is checked, row by row,
before timing. A sample is one pass over all the prompts. Target: generated tokens/s >= 2x
transformers'.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

import common
from gptlab.data.tokenizer import get_tokenizer
from gptlab.model.gpt import GPT
from gptlab.model.greedy import greedy_until
from gptlab.model.hf import export_hf_gpt2

TARGET = 2.0
MODEL, QUICK_MODEL = "gpt-micro", "gpt-nano"
PROMPTS, QUICK_PROMPTS = 64, 8
NEW_TOKENS, QUICK_NEW_TOKENS = 32, 8
BATCH_SIZE = 16
PAD_ID = 0  # gptlab's padding (masked, never read)
HF_PAD_ID = 50256  # GPT-2's end-of-text: the pad id transformers' GPT-2 users pass to generate


def never(text: str) -> None:
    """An ``answer_end`` that never finds the answer's end: every row runs ``max_new_tokens`` steps."""
    return None


@dataclass
class Batch:
    """Left-padded prompts: ``ids`` (gptlab's padding), ``hf_ids`` (transformers'), the shared ``mask``."""

    ids: torch.Tensor
    hf_ids: torch.Tensor
    mask: torch.Tensor


def prompts(count: int) -> list[list[int]]:
    """The GPT-2 tokens of the first ``count`` TriviaQA contexts."""
    encode = get_tokenizer().encode_ordinary
    path = common.shared_data_dir() / "triviaqa" / "validation_subset.jsonl"
    with open(path) as f:
        lines = [line for _, line in zip(range(count), f)]
    return [encode(json.loads(line)["context"]) for line in lines]


def batches(tokens: Sequence[list[int]], batch_size: int) -> list[Batch]:
    """Sorted by length (shortest first), ``batch_size`` a batch, left-padded to the batch's longest."""
    ordered = sorted(tokens, key=len)
    out = []
    for start in range(0, len(ordered), batch_size):
        chunk = ordered[start : start + batch_size]
        width = max(map(len, chunk))
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        ids = torch.full((len(chunk), width), PAD_ID, dtype=torch.long)
        for row, prompt in enumerate(chunk):
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        out.append(Batch(ids, ids.masked_fill(mask == 0, HF_PAD_ID), mask))
    return out


def hf_twin(model: GPT):
    """A ``transformers.GPT2LMHeadModel`` with ``model``'s weights, SDPA attention, eval mode."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        export_hf_gpt2(model, tmp)
        hf = transformers.GPT2LMHeadModel.from_pretrained(tmp, attn_implementation="sdpa")
    assert hf.config._attn_implementation == "sdpa"
    return hf.eval()


def main(argv: Sequence[str] | None = None) -> common.Report:
    args = common.parse_args(__doc__.splitlines()[0], argv, warmup=1, pairs=9)
    common.setup_torch()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="transformers")
    name = QUICK_MODEL if args.quick else MODEL
    n_prompts, new_tokens = (QUICK_PROMPTS, QUICK_NEW_TOKENS) if args.quick else (PROMPTS, NEW_TOKENS)
    model = GPT.from_name(name).eval()
    hf = hf_twin(model)
    work = batches(prompts(n_prompts), BATCH_SIZE)
    rows = sum(len(b.ids) for b in work)

    def ours() -> list[list[int]]:
        out: list[list[int]] = []
        for b in work:
            out += greedy_until(model, b.ids, b.mask, new_tokens, never)
        return out

    def theirs() -> list[list[int]]:
        out: list[list[int]] = []
        with torch.inference_mode():
            for b in work:
                generated = hf.generate(
                    b.hf_ids,
                    attention_mask=b.mask,
                    max_new_tokens=new_tokens,
                    min_new_tokens=new_tokens,
                    do_sample=False,
                    use_cache=True,
                    pad_token_id=HF_PAD_ID,
                )
                out += generated[:, b.hf_ids.size(1) :].tolist()
        return out

    ours_tokens, hf_tokens = ours(), theirs()
    assert all(len(t) == new_tokens for t in ours_tokens + hf_tokens), "a row stopped before max_new_tokens"
    agree = sum(a == b for a, b in zip(ours_tokens, hf_tokens))
    first_diff = [next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None) for a, b in zip(ours_tokens, hf_tokens)]
    diverged = sorted(i for i in first_diff if i is not None)
    print(
        f"greedy_generation: {name}, {rows} prompts in {len(work)} batches, {new_tokens} new tokens; "
        f"rows equal {agree}/{rows}",
        flush=True,
    )
    pairs = common.alternate(
        common.wall(ours), common.wall(theirs), args.pairs, args.warmup, names=("gptlab s", "transformers s")
    )
    generated = rows * new_tokens
    speed = common.Target("generated tokens/s gptlab / transformers", pairs.ratio, TARGET)
    equal = common.Target("rows whose tokens differ, gptlab vs transformers", rows - agree, 0, at_most=True, fmt="d")
    widths = [b.ids.size(1) for b in work]
    prompt_tokens = sum(int(b.mask.sum()) for b in work)
    agreement = f"{agree} of {rows}" + (
        f" (the others first differ at new token {', '.join(map(str, diverged))})" if diverged else ""
    )
    report = common.Report(
        key="greedy_generation",
        title=f"Batched greedy generation ({rows} TriviaQA prompts x {new_tokens} tokens): gptlab `greedy_until` "
        "vs transformers `generate` (sdpa)",
        headers=("", "gptlab", "transformers"),
        rows=[
            (f"median time of one pass over {rows} prompts (s)", f"{pairs.median_a:.3f}", f"{pairs.median_b:.3f}"),
            (
                "generated tokens/s (median)",
                f"{generated / pairs.median_a:,.0f}",
                f"{generated / pairs.median_b:,.0f}",
            ),
            ("ratio per pair (min–max)", pairs.spread(), ""),
            ("rows with the same tokens", agreement, ""),
            (
                "prompts",
                f"{prompt_tokens} tokens, batches of {BATCH_SIZE} padded to {min(widths)}–{max(widths)}",
                "the same",
            ),
            ("padding", f"left, id {PAD_ID}, masked", f"left, id {HF_PAD_ID}, masked"),
        ],
        loads=pairs.loads,
        targets=[speed, equal],
        notes=[
            f"{len(pairs.a)} alternating pairs after {args.warmup} warm-up pair(s); a sample is one pass over "
            f"the first {rows} contexts of `triviaqa/validation_subset.jsonl`, sorted by length, {BATCH_SIZE} "
            f"a batch, {new_tokens} new tokens per row on both sides (gptlab: an `answer_end` that never "
            "ends; transformers: `min_new_tokens = max_new_tokens`), tokens/s = rows x new tokens / seconds.",
            f"Model: {name} ({model.config.n_layer} layers, {model.config.n_head} heads, {model.config.n_embd} "
            f"wide, context {model.config.block_size}), random init, eval mode, fp32, the same weights both "
            "sides (exported with `export_hf_gpt2`, read with `attn_implementation=\"sdpa\"`), "
            "`torch.inference_mode`. Both sides pick among GPT-2's 50257 tokens.",
        ],
    )
    if not speed.met or args.quick:
        ours_profile, theirs_profile = common.python_profile(ours), common.python_profile(theirs)
        ours_ops, theirs_ops = common.torch_profile(ours), common.torch_profile(theirs)
        report.notes.append(
            f"Profile of one pass each (target {'met' if speed.met else 'missed'}). Own time by package, "
            f"gptlab: {ours_profile.by_package}; transformers: {theirs_profile.by_package}. Matmul ops take "
            f"{100 * ours_ops.matmul_share:.0f}% of gptlab's self CPU time and {100 * theirs_ops.matmul_share:.0f}% "
            f"of transformers'. Largest non-matmul ops, gptlab: {ours_ops.others}; transformers: {theirs_ops.others}."
        )
        report.profiles += [
            ("Top functions of one gptlab pass (cProfile own time):", ours_profile.table),
            ("Top functions of one transformers pass (cProfile own time):", theirs_profile.table),
        ]
    report.publish("greedy_generation.py", args)
    return report


if __name__ == "__main__":
    main()
