"""The report's closing paragraph: what the fine-tuning vs prompting table says, in words.

For each table row (task, metric, model, ...): the best fine-tuning and the best prompting value,
each against chance (a value within ``AT_CHANCE`` of it is "at chance"), which regime wins and by
how much (or that neither does beyond two standard errors of the difference), and the flags that
make a value no measurement (``gptlab.report.flags``). Where the same run was made from a
pre-trained checkpoint and from scratch (GPT-1's ablation), which init leads and whether by more
than the seed spread (or, for single runs, two standard errors of the difference). It ends with
the scale at which GPT-3 found in-context learning, beside the size of the models in the table.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from gptlab.model.gpt import GPTConfig
from gptlab.model.registry import model_config
from gptlab.report.aggregate import FINETUNE, IN_CONTEXT, Cell
from gptlab.report.flags import RunKey, run_key
from gptlab.report.results import SCRATCH

AT_CHANCE = 0.02
# metrics where lower is better (perplexities, losses); the others are scores
LOWER_IS_BETTER = ("loss", "ppl", "perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte")
# GPT-3 (Brown et al., 2020): the largest model and its training tokens
GPT3_PARAMS, GPT3_TOKENS = 175e9, 300e9


def approx_params(model: str) -> float | None:
    """Parameters of a registered size (``gptlab.model.registry``): 12·L·d² + V·d, and V·d more for
    an untied LM head; None for a name the registry does not hold (an HF directory, a Hub id)."""
    try:
        size = GPTConfig.from_dict(model_config(model))
    except ValueError:
        return None
    embeddings = 1 if size.tie_embeddings else 2
    return 12 * size.n_layer * size.n_embd**2 + embeddings * size.vocab_size * size.n_embd


def _best(cells: list[Cell]) -> Cell | None:
    if not cells:
        return None
    lower = cells[0].metric in LOWER_IS_BETTER
    return min(cells, key=lambda c: c.mean) if lower else max(cells, key=lambda c: c.mean)


def _noise(a: Cell, b: Cell) -> float | None:
    """Two standard errors of the difference of two cells (each's spread over seeds, or a single
    run's standard error over examples); None when either has none."""
    spreads = [c.std if c.std is not None else c.stderr for c in (a, b)]
    if any(spread is None for spread in spreads):
        return None
    return 2 * math.sqrt(sum(spread**2 for spread in spreads))


def _against_chance(cell: Cell) -> str:
    if cell.chance is None:
        return ""
    gap = cell.mean - cell.chance
    if abs(gap) < AT_CHANCE:
        return f", at chance ({cell.chance:.3f})"
    return f", {abs(gap):.3f} {'above' if gap > 0 else 'below'} chance ({cell.chance:.3f})"


def _label(cell: Cell) -> str:
    if cell.regime == FINETUNE:
        return f"fine-tuning (N={cell.n_train_examples})"
    return cell.regime if cell.k is None or cell.regime != "few_shot" else f"few_shot (k={cell.k})"


def _describe(cell: Cell, flags: Mapping[RunKey, list[str]]) -> str:
    notes = flags.get(run_key(cell), [])
    flagged = f" [{'; '.join(notes)}]" if notes else ""
    return f"{_label(cell)} {cell.mean:.3f}{_against_chance(cell)}{flagged}"


def _ablation(runs: list[Cell]) -> str | None:
    """The sentence on one run from scratch vs from a pre-trained checkpoint (GPT-1's ablation;
    ``runs``: the cells of one task, metric, model, regime and settings), or None without both."""
    scratch = [c for c in runs if c.init == SCRATCH]
    pretrained = _best([c for c in runs if c.init != SCRATCH])
    if len(scratch) != 1 or pretrained is None:
        return None
    (scratch,) = scratch
    lead = pretrained.mean - scratch.mean
    if scratch.metric in LOWER_IS_BETTER:
        lead = -lead
    winner = "the pre-trained init" if lead > 0 else "scratch"
    sentence = (
        f"- **{scratch.task}** ({scratch.metric}, {_label(scratch)}), pre-training ablation: from "
        f"{pretrained.init} {pretrained.mean:.3f} (n={pretrained.n}), from scratch {scratch.mean:.3f} "
        f"(n={scratch.n}); {winner} leads by {abs(lead):.3f}"
    )
    if pretrained.std is not None and scratch.std is not None:
        spread = max(pretrained.std, scratch.std)
        beyond = "more" if abs(lead) > spread else "no more"
        return sentence + f", {beyond} than the seed spread ({spread:.3f})."
    if (noise := _noise(pretrained, scratch)) is not None:
        beyond = "more" if abs(lead) > noise else "no more"
        return sentence + f", {beyond} than two standard errors of the difference ({noise:.3f})."
    return sentence + " (nothing to judge it by: one run each and no standard errors)."


def plain_summary(cells: Iterable[Cell], flags: Mapping[RunKey, list[str]]) -> str:
    """Markdown: one sentence per table row of ``cells`` (one metric per task), one per pre-training
    ablation, and the scale note."""
    cells = list(cells)
    rows: dict[tuple[Any, ...], list[Cell]] = defaultdict(list)
    ablations: dict[tuple[Any, ...], list[Cell]] = defaultdict(list)
    for cell in cells:
        rows[(cell.task, cell.split, cell.metric, cell.model, cell.init, cell.params)].append(cell)
        ablations[(cell.task, cell.split, cell.metric, cell.model, cell.params, cell.regime, cell.k)].append(cell)
    several_inits = len({c.init for c in cells}) > 1
    lines = []
    for (task, split, metric, model, init, _), row in rows.items():
        tuned = _best([c for c in row if c.regime == FINETUNE])
        prompted = _best([c for c in row if c.regime in IN_CONTEXT])
        parts = [_describe(c, flags) for c in (tuned, prompted) if c is not None]
        where = f"{metric}, init {init}" if several_inits else metric
        sentence = f"- **{task}** ({where}): " + "; best prompting: ".join(parts)
        if tuned is not None and prompted is not None:
            lower = metric in LOWER_IS_BETTER
            lead = (prompted.mean - tuned.mean) if lower else (tuned.mean - prompted.mean)
            winner = "fine-tuning" if lead > 0 else "prompting"
            noise = _noise(tuned, prompted)
            if noise is not None and abs(lead) <= noise:
                sentence += f". Neither leads beyond noise (difference {abs(lead):.3f}, 2 standard errors {noise:.3f})."
            else:
                sentence += f". {winner.capitalize()} leads by {abs(lead):.3f}."
        else:
            sentence += "."
        lines.append(sentence)
    lines += [line for tuned in ablations.values() if (line := _ablation(tuned))]
    if not lines:
        return ""
    sizes = {c.model: approx_params(c.model) for c in cells if c.model}
    known = [f"{model} ≈ {params / 1e6:.1f}M parameters" for model, params in sizes.items() if params]
    scale = (
        f"In-context learning needs scale: GPT-3 (Brown et al., 2020) saw few-shot prompting approach "
        f"fine-tuning only as models grew to {GPT3_PARAMS / 1e9:.0f}B parameters trained on "
        f"{GPT3_TOKENS / 1e9:.0f}B tokens"
    )
    scale += f"; the models here are {', '.join(known)}." if known else "."
    return "## Summary\n\n" + "\n".join(lines) + "\n\n" + scale + "\n"
