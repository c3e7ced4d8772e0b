"""5-shot ARC-Easy scoring: gptlab's prefix sharing vs lm-evaluation-harness's forward row per (context + answer).

gptlab: the ``regime=few_shot`` scoring path. Hydra builds ``InContextDataModule`` from
``conf/regime/few_shot.yaml`` with ``task=arc_easy`` (files from the shared data folder; k=5
demonstrations from the training split, the default ``fewshot_seed``, 16 examples per batch), which
tokenizes the dev split (``validation``: ``dev.jsonl``); ``scoring_batches`` + ``collate`` batch it as
the DataModule's loader does, and ``choice_loglikelihoods`` scores every answer as
``InContextModule.validation_step`` does: each context runs through the backbone once and every
answer continues from a copy of its key/value cache.

Peer: lm-evaluation-harness's ``loglikelihood`` for a causal LM. Every (context + answer) pair is a row
of its own whose input is (context + answer)[:-1], right-padded with token 0 and no attention mask
(causal attention never lets a token see the padding after it); rows are sorted longest first and
batched so that a forward holds as many rows as a gptlab batch scores answers. As lm-eval's ``HFLM``
does, the forward gives logits at every position of the batch and the log-softmax over GPT-2's text
vocabulary is taken at all of them; the answer positions' values, summed, are the answer's
log-likelihood. Both sides read the same tokens (the DataModule's contexts, already cut on the left
to fit the window). Where the target is missed, the report times gptlab's LM head on its own and
profiles both sides.

Model: a random-init gpt-micro in eval mode under ``torch.inference_mode``: the speed does not depend
on the weights, and the two sides must agree for any weights, so no pre-trained model is needed.
Before timing, both sides score every answer; their largest difference is the second target. A sample
is one pass over the whole dev split. Targets: examples/s >= 3x the peer's; max |difference| <= 1e-4.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

import common
from gptlab.data.incontext import FILL_ID, InContextDataModule, collate, scoring_batches
from gptlab.data.prompts import Request
from gptlab.data.tokenizer import GPT2_VOCAB_SIZE
from gptlab.lit.head_scores import token_logprobs
from gptlab.lit.incontext import choice_loglikelihoods
from gptlab.model.gpt import GPT
from gptlab.resources import config_dir

TARGET = 3.0
MAX_DIFF = 1e-4  # the largest per-answer log-likelihood difference allowed
SPLIT = "validation"  # conf/task/arc_easy.yaml: dev.jsonl
MODEL, QUICK_MODEL = "gpt-micro", "gpt-nano"
QUICK_EXAMPLES = 40


def few_shot_config(model: str, data_root: Path) -> DictConfig:
    """The run config of ``regime=few_shot task=arc_easy model=<model>``, data from ``data_root``."""
    overrides = [
        "regime=few_shot",
        "task=arc_easy",
        f"task.eval_splits=[{SPLIT}]",
        f"model={model}",
        f"paths.data_dir={data_root}",
        "paths.output_dir=unused",  # nothing is written; the default needs a Hydra run
    ]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def answer_offsets(requests: Sequence[Request]) -> list[int]:
    """Where each request's answers start in the request-ordered list of all answers; the total last."""
    offsets = [0]
    for request in requests:
        offsets.append(offsets[-1] + len(request.continuations))
    return offsets


@dataclass
class SharedBatch:
    """One batch of the DataModule's loader and where its answers go in request order."""

    batch: dict[str, torch.Tensor]
    answers: torch.Tensor  # (N,)

    def backbone_tokens(self) -> int:
        """Positions the backbone runs, padding included: the contexts, then every answer but its last token."""
        return self.batch["prefix_ids"].numel() + self.batch["continuation_ids"][:, :-1].numel()


def shared_batches(requests: Sequence[Request], batch_size: int, block_size: int) -> list[SharedBatch]:
    offsets = answer_offsets(requests)
    batches = []
    for indices in scoring_batches(requests, batch_size, block_size):
        places = [a for i in indices for a in range(offsets[i], offsets[i + 1])]
        batches.append(SharedBatch(collate([requests[i] for i in indices]), torch.tensor(places)))
    return batches


@torch.inference_mode()
def score_shared(model: GPT, batches: Sequence[SharedBatch], n_answers: int) -> torch.Tensor:
    """gptlab: every answer's log-likelihood (request order), as ``InContextModule`` scores a batch."""
    out = torch.empty(n_answers)
    for b in batches:
        out[b.answers] = choice_loglikelihoods(model, b.batch)
    return out


@dataclass
class SeparateBatch:
    """Rows of (context + answer)[:-1], one per answer, right-padded with ``FILL_ID``."""

    ids: torch.Tensor  # (S, W)
    scored: torch.Tensor  # bool (S, W): the positions whose next token is an answer token
    targets: torch.Tensor  # (M,) those next tokens, row by row
    rows: torch.Tensor  # (M,) the row each belongs to
    answers: torch.Tensor  # (S,) each row's answer, in request order


def separate_batches(requests: Sequence[Request], rows_per_batch: int) -> list[SeparateBatch]:
    """lm-eval's batches: every (context, answer) a row; longest rows first, ``rows_per_batch`` a forward."""
    pairs = [(r.context, answer) for r in requests for answer in r.continuations]
    order = sorted(range(len(pairs)), key=lambda a: (-(len(pairs[a][0]) + len(pairs[a][1])), a))
    batches = []
    for start in range(0, len(order), rows_per_batch):
        chunk = order[start : start + rows_per_batch]
        wholes = [pairs[a][0] + pairs[a][1] for a in chunk]
        width = max(map(len, wholes)) - 1
        ids = torch.full((len(chunk), width), FILL_ID, dtype=torch.long)
        following = torch.full_like(ids, FILL_ID)
        scored = torch.zeros((len(chunk), width), dtype=torch.bool)
        for row, (a, whole) in enumerate(zip(chunk, wholes)):
            ids[row, : len(whole) - 1] = torch.tensor(whole[:-1])
            following[row, : len(whole) - 1] = torch.tensor(whole[1:])
            # the state at position t predicts token t + 1: the context's last state predicts the answer's first
            scored[row, len(pairs[a][0]) - 1 : len(whole) - 1] = True
        batches.append(
            SeparateBatch(ids, scored, following[scored], scored.nonzero()[:, 0], torch.tensor(chunk))
        )
    return batches


def lm_head_seconds(model: GPT, n_tokens: int, repeats: int = 3) -> float:
    """Median time of ``token_logprobs`` over ``n_tokens`` states: gptlab's LM-head work.

    Random states and targets: the cost depends on the shapes only.
    """
    hidden = torch.randn(n_tokens, model.config.n_embd)
    targets = torch.zeros(n_tokens, dtype=torch.long)
    with torch.inference_mode():
        return statistics.median(common.wall(lambda: token_logprobs(model, hidden, targets))() for _ in range(repeats))


@torch.inference_mode()
def score_separate(model: GPT, batches: Sequence[SeparateBatch], n_answers: int) -> torch.Tensor:
    """The peer: every answer's log-likelihood (request order) from its own full row, with the
    log-softmax over the vocabulary at every position of the batch, as lm-eval's ``HFLM`` takes it."""
    out = torch.empty(n_answers)
    for b in batches:
        logits = F.linear(model.hidden_states(b.ids), model.wte.weight[:GPT2_VOCAB_SIZE])
        logprobs = logits.log_softmax(-1)[b.scored].gather(1, b.targets[:, None]).squeeze(1)
        out[b.answers] = torch.zeros(len(b.answers)).index_add_(0, b.rows, logprobs)
    return out


def main(argv: Sequence[str] | None = None) -> common.Report:
    args = common.parse_args(__doc__.splitlines()[0], argv, warmup=1)
    common.setup_torch()
    cfg = few_shot_config(QUICK_MODEL if args.quick else MODEL, common.shared_data_dir())
    model: GPT = instantiate(cfg.model).eval()
    datamodule: InContextDataModule = instantiate(cfg.regime.datamodule)
    datamodule.setup()
    requests = datamodule.requests(SPLIT)[: QUICK_EXAMPLES if args.quick else None]
    n_examples, n_answers = len(requests), answer_offsets(requests)[-1]
    block_size, batch_size = datamodule.block_size, datamodule.batch_size
    # The peer's forwards hold as many sequences as a gptlab batch scores answers.
    rows_per_batch = round(batch_size * n_answers / n_examples)
    ours_batches = shared_batches(requests, batch_size, block_size)
    peer_batches = separate_batches(requests, rows_per_batch)

    def ours() -> torch.Tensor:
        return score_shared(model, ours_batches, n_answers)

    def peer() -> torch.Tensor:
        return score_separate(model, peer_batches, n_answers)

    max_diff = float((ours() - peer()).abs().max())
    print(f"incontext_scoring: {n_examples} examples, {n_answers} answers, max |diff| {max_diff:.1e}")
    pairs = common.alternate(
        common.wall(ours), common.wall(peer), args.pairs, args.warmup, names=("gptlab s", "lm-eval method s")
    )

    truncated = sum(r.truncated for r in requests)  # the DataModule's `truncated` over the scored examples
    answer_tokens = sum(len(answer) for r in requests for answer in r.continuations)
    ours_tokens = sum(b.backbone_tokens() for b in ours_batches)
    peer_tokens = sum(b.ids.numel() for b in peer_batches)
    speed = common.Target("examples/s gptlab / lm-eval method", pairs.ratio, TARGET)
    equal = common.Target(
        "max |per-answer log-likelihood difference| gptlab vs lm-eval method", max_diff, MAX_DIFF, at_most=True,
        fmt=".1e",
    )
    report = common.Report(
        key="incontext_scoring",
        title=f"{datamodule.k}-shot ARC-Easy dev scoring: gptlab prefix sharing vs a forward row per "
        "(context + answer) (lm-evaluation-harness)",
        headers=("", "gptlab", "lm-eval method"),
        rows=[
            (
                f"median time of one pass over {n_examples} examples, {n_answers} answers (s)",
                f"{pairs.median_a:.3f}",
                f"{pairs.median_b:.3f}",
            ),
            ("examples/s (median)", f"{n_examples / pairs.median_a:,.1f}", f"{n_examples / pairs.median_b:,.1f}"),
            ("ratio per pair (min–max)", pairs.spread(), ""),
            (
                "sequences per forward",
                f"{batch_size} contexts, then their answers from the cache",
                f"{rows_per_batch} (context + answer) rows",
            ),
            (
                "backbone positions per example, padding included",
                f"{ours_tokens / n_examples:.1f}",
                f"{peer_tokens / n_examples:.1f} ({peer_tokens / ours_tokens:.1f}x)",
            ),
            (
                "LM-head positions per example",
                f"{answer_tokens / n_examples:.1f} (the answer tokens)",
                f"{peer_tokens / n_examples:.1f} (every position, as lm-eval)",
            ),
            (f"contexts cut on the left to fit {block_size} tokens", f"{truncated} of {n_examples}", "the same"),
            ("max |log-likelihood difference| over all answers", f"{max_diff:.1e}", ""),
        ],
        loads=pairs.loads,
        targets=[speed, equal],
        notes=[
            f"{len(pairs.a)} alternating pairs after {args.warmup} warm-up pair(s); a sample is one pass "
            f"over the {n_examples} ARC-Easy dev examples ({SPLIT} split, k={datamodule.k} demonstrations, "
            f"fewshot_seed={datamodule.fewshot_seed}). Both sides' batches are built before timing "
            "(gptlab: `scoring_batches` + `collate`, as the DataModule's loader; the peer: its padded rows).",
            "gptlab: `choice_loglikelihoods` (what `InContextModule.validation_step` scores), the batches "
            "`InContextDataModule` gives under `regime=few_shot task=arc_easy`. The peer: lm-eval's "
            "`loglikelihood` method, each (context + answer)[:-1] a right-padded row of its own, longest "
            "first; like lm-eval's `HFLM`, whose model call returns logits at every position, it takes the "
            "log-softmax over the 50257-token vocabulary at every position of the batch and sums the answer "
            "positions' values.",
            f"Model: {cfg.model.name} ({model.config.n_layer} layers, {model.config.n_head} heads, "
            f"{model.config.n_embd} wide, context {model.config.block_size}), random init, eval mode, "
            "`torch.inference_mode`, the same model for both sides: speed does not depend on the weights, "
            "and equal log-likelihoods must hold for any weights. Both sides score every answer before "
            "timing; the difference is the largest over all answers.",
        ],
    )
    if not speed.met or args.quick:
        ours_profile, peer_profile = common.torch_profile(ours), common.torch_profile(peer)
        head = lm_head_seconds(model, answer_tokens)
        report.notes.append(
            f"Profile of one pass each (target {'met' if speed.met else 'missed'}): matmul ops take "
            f"{100 * ours_profile.matmul_share:.0f}% of gptlab's self CPU time and "
            f"{100 * peer_profile.matmul_share:.0f}% of the peer's. gptlab's LM head (`token_logprobs` over "
            f"the {answer_tokens} answer tokens x 50257 vocabulary rows, fp32), timed apart, takes {head:.2f} s, "
            f"{head / pairs.median_a:.0%} of its median pass; the rest is its backbone, which runs "
            f"{peer_tokens / ours_tokens:.1f}x fewer positions than the peer's. Largest non-matmul ops, "
            f"gptlab: {ours_profile.others}; peer: {peer_profile.others}."
        )
        report.profiles += [
            ("Top ops of one gptlab pass (self CPU time):", ours_profile.table),
            ("Top ops of one peer pass (self CPU time):", peer_profile.table),
        ]
    report.publish("incontext_scoring.py", args)
    return report


if __name__ == "__main__":
    main()
