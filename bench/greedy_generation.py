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

Two workloads on the same prompts. **Fixed length** (the equal-work comparison): every row
generates exactly N tokens, as above. **Until a stop string** (what an evaluation runs): each row
stops at its first stop string, as lm-evaluation-harness's ``generate_until`` runs it: the peer
is ``generate`` with lm-eval's own stopping criteria (``stop_sequences_criteria``, which end the
batch once every row has written a stop string; finished rows keep being computed), gptlab's
``greedy_until`` drops each finished row from the batch. The stop strings are TriviaQA's
(newline, period, comma) and two token strings that at least half of the fixed-length run's rows
write, nearest its middle step (a random model rarely writes a newline), so rows end at varied
steps; the
generations, cut at their stop strings, must be equal, and tokens/s counts each row's tokens up to
its stop.

Workload: the first 64 questions of the shared TriviaQA subset (``triviaqa/validation_subset.jsonl``,
field ``context``), GPT-2 tokens, sorted by length and batched 16 at a time, 32 new tokens per row.
Model: a random-init gpt-micro in eval mode, fp32, ``torch.inference_mode``, 2 threads both sides:
the speed does not depend on the weights, and two greedy decoders of the same weights must write
the same tokens for any weights (up to float rounding on exact ties), which is checked, row by row,
before timing. A sample is one pass over all the prompts. Target: generated tokens/s >= 2x
transformers' on both workloads. A random model's rows end at very uneven steps (most at their first
token, a few never): the table gives the spread of the rows' lengths until a stop string.
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

import common
from gptlab.data.tokenizer import get_tokenizer
from gptlab.model.gpt import GPT
from gptlab.model.generate import PACK_AFTER_STEPS
from gptlab.model.greedy import greedy_until
from gptlab.model.hf import export_hf_gpt2, export_hf_tokenizer
from gptlab.tasks.answers import answer_end, cut_answer
from gptlab.tasks.spec import GenerationSpec

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
    """A ``transformers.GPT2LMHeadModel`` with ``model``'s weights (SDPA attention, eval mode) and
    GPT-2's tokenizer."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        export_hf_gpt2(model, tmp)
        export_hf_tokenizer(tmp)
        hf = transformers.GPT2LMHeadModel.from_pretrained(tmp, attn_implementation="sdpa")
        tokenizer = transformers.AutoTokenizer.from_pretrained(tmp)
    assert hf.config._attn_implementation == "sdpa"
    return hf.eval(), tokenizer


def stop_strings(rows: list[list[int]], count: int = 2) -> list[str]:
    """``count`` token strings that end the rows halfway, at varied steps: among the strings at least
    half of the rows write (their first token aside), those whose median first step is nearest the
    middle of the rows."""
    decode = get_tokenizer().decode
    steps: dict[str, list[int]] = {}
    for row in rows:
        seen: dict[str, int] = {}
        for step, token in enumerate(row[1:], 1):
            seen.setdefault(decode([token]), step)
        for text, step in seen.items():
            if text.strip() and "\ufffd" not in text:
                steps.setdefault(text, []).append(step)
    middle = len(rows[0]) / 2
    common_ = [text for text, found in steps.items() if len(found) >= len(rows) / 2]
    return sorted(common_, key=lambda text: abs(statistics.median(steps[text]) - middle))[:count]


def main(argv: Sequence[str] | None = None) -> common.Report:
    args = common.parse_args(__doc__.splitlines()[0], argv, warmup=1, pairs=9)
    common.setup_torch()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="transformers")
    name = QUICK_MODEL if args.quick else MODEL
    n_prompts, new_tokens = (QUICK_PROMPTS, QUICK_NEW_TOKENS) if args.quick else (PROMPTS, NEW_TOKENS)
    model = GPT.from_name(name).eval()
    hf, tokenizer = hf_twin(model)
    work = batches(prompts(n_prompts), BATCH_SIZE)
    rows = sum(len(b.ids) for b in work)

    def ours() -> list[list[int]]:
        out: list[list[int]] = []
        for b in work:
            out += greedy_until(model, b.ids, b.mask, new_tokens, never)
        return out

    def hf_generate(b: Batch, **options) -> list[list[int]]:
        """transformers' greedy continuation tokens of one batch (each row's new tokens)."""
        with torch.inference_mode():
            generated = hf.generate(
                b.hf_ids, attention_mask=b.mask, max_new_tokens=new_tokens, do_sample=False, use_cache=True,
                pad_token_id=HF_PAD_ID, **options,
            )
        return generated[:, b.hf_ids.size(1):].tolist()

    def theirs() -> list[list[int]]:
        return [row for b in work for row in hf_generate(b, min_new_tokens=new_tokens)]

    ours_tokens, hf_tokens = ours(), theirs()
    assert all(len(t) == new_tokens for t in ours_tokens + hf_tokens), "a row stopped before max_new_tokens"
    agree = sum(a == b for a, b in zip(ours_tokens, hf_tokens))
    # the first new token at which each disagreeing row differs
    diverged = sorted(
        next(i for i, (x, y) in enumerate(zip(a, b)) if x != y) for a, b in zip(ours_tokens, hf_tokens) if a != b
    )
    print(
        f"greedy_generation: {name}, {rows} prompts in {len(work)} batches, {new_tokens} new tokens; "
        f"rows equal {agree}/{rows}",
        flush=True,
    )
    pairs = common.alternate(
        common.wall(ours), common.wall(theirs), args.pairs, args.warmup, names=("gptlab s", "transformers s")
    )

    # until a stop string (lm-eval's generate_until)
    from lm_eval.models.utils import postprocess_generated_text
    from lm_eval.models.utils_hf import stop_sequences_criteria

    rules = GenerationSpec(until=("\n", ".", ",", *stop_strings(hf_tokens)), max_gen_toks=new_tokens)
    stops = [*rules.until, tokenizer.decode([HF_PAD_ID], skip_special_tokens=False)]
    decode = get_tokenizer().decode

    def ours_until() -> list[str]:
        out: list[str] = []
        for b in work:
            rows = greedy_until(model, b.ids, b.mask, new_tokens, lambda text: answer_end(text, rules))
            out += [cut_answer(decode(row), rules) for row in rows]
        return out

    def theirs_until() -> list[str]:
        out: list[str] = []
        for b in work:
            criteria = stop_sequences_criteria(tokenizer, stops, b.hf_ids.size(1), len(b.hf_ids))
            rows = hf_generate(b, stopping_criteria=criteria)
            out += [postprocess_generated_text(tokenizer.decode(row), stops, None) for row in rows]
        return out

    ours_answers, hf_answers = ours_until(), theirs_until()
    agree_until = sum(a == b for a, b in zip(ours_answers, hf_answers))
    encode = get_tokenizer().encode_ordinary
    # each row's tokens up to its stop: the answer's own, plus the one that wrote the stop string
    lengths = Counter(min(len(encode(answer)) + 1, new_tokens) for answer in ours_answers)
    useful = sum(length * count for length, count in lengths.items())
    until_pairs = common.alternate(
        common.wall(ours_until), common.wall(theirs_until), args.pairs, args.warmup,
        names=("gptlab until s", "transformers until s"),
    )
    generated = rows * new_tokens
    fixed_speed = common.Target("fixed-length tokens/s gptlab / transformers", pairs.ratio, TARGET)
    until_speed = common.Target("generate-until tokens/s gptlab / transformers", until_pairs.ratio, TARGET)
    equal = common.Target(
        "rows whose tokens or answers differ, gptlab vs transformers", 2 * rows - agree - agree_until, 0,
        at_most=True, fmt="d",
    )
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
            ("**until a stop string**: median time of one pass (s)", f"{until_pairs.median_a:.3f}", f"{until_pairs.median_b:.3f}"),
            (
                f"tokens/s up to each row's stop ({useful} tokens of {generated} at most)",
                f"{useful / until_pairs.median_a:,.0f}",
                f"{useful / until_pairs.median_b:,.0f}",
            ),
            (
                "until: rows by new tokens written",
                ", ".join(f"{count} x {length}" for length, count in sorted(lengths.items())),
                "the same rows",
            ),
            ("until: ratio per pair (min–max)", until_pairs.spread(), ""),
            ("until: rows with the same answer", f"{agree_until} of {rows}", ""),
            ("until: stop strings", ", ".join(map(repr, stops)), "the same (lm-eval's `stop_sequences_criteria`)"),
            (
                "prompts",
                f"{prompt_tokens} tokens, batches of {BATCH_SIZE} padded to {min(widths)}–{max(widths)}",
                "the same",
            ),
            ("padding", f"left, id {PAD_ID}, masked", f"left, id {HF_PAD_ID}, masked"),
        ],
        loads=pairs.loads + until_pairs.loads,
        targets=[fixed_speed, until_speed, equal],
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
    report.notes.append(
        f"Fixed length: ratio {pairs.ratio:.2f} (equal work: every row runs {new_tokens} steps on both sides; "
        "the 50257-row LM head and its argmax, which both sides compute every step, are most of the time; "
        f"gptlab's `StepHead` packs the head for oneDNN after {PACK_AFTER_STEPS} steps, transformers runs "
        "`F.linear`). "
        f"Until a stop string: ratio {until_pairs.ratio:.2f}; gptlab drops finished rows from the batch (a lone "
        "row's head is computed as two, not on BLAS's slow one-column path), the peer computes every row "
        "until the batch's last one stops."
    )
    met = fixed_speed.met and until_speed.met
    if not met or args.quick:
        ours_profile, theirs_profile = common.python_profile(ours), common.python_profile(theirs)
        ours_ops, theirs_ops = common.torch_profile(ours), common.torch_profile(theirs)
        report.notes.append(
            f"Profile of one pass each (targets {'met' if met else 'missed'}). Own time by package, "
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
