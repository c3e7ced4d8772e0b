"""Zero-shot rolling perplexity of a language-modelling task (GPT-2's WikiText, PTB, ... tables).

Every token of every validation document is scored once, by lm-evaluation-harness's rolling windows
(``gptlab.data.rolling``); the summed log-likelihood ``LL`` of the split then gives

* ``val/loss`` = ``-LL / tokens`` and ``val/ppl`` = ``exp(loss)`` (token level, the names the
  pre-training validation uses);
* ``val/word_perplexity`` = ``exp(-LL / words)``, ``val/byte_perplexity`` = ``exp(-LL / bytes)``
  and ``val/bits_per_byte`` = ``-LL / (bytes ln 2)``: lm-eval's ``loglikelihood_rolling``
  metrics, comparable across tokenizers.

Sums are float64 (a WikiText split is 300k tokens). Each document's log-likelihood and counts go
to ``predictions`` (``PredictionLog``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import lightning.pytorch as pl
import torch
import torch.nn as nn
from torchmetrics import SumMetric

from gptlab.lit.head_scores import token_logprobs
from gptlab.lit.predictions import PredictionLog
from gptlab.model.gpt import GPT
from gptlab.model.logit_buffer import LogitBuffer

SUMS = ("loglikelihood", "tokens", "words", "bytes")


def window_loglikelihoods(
    model: GPT, batch: Mapping[str, torch.Tensor], logits: LogitBuffer | None = None
) -> torch.Tensor:
    """Summed log-likelihood (B,) of the scored tokens of each window of a
    ``gptlab.data.rolling`` batch, in float64; ``logits``: the evaluation's ``LogitBuffer``."""
    # Right padding: each window's tokens keep positions 0, 1, ... and causal attention never
    # lets them see the padding after them.
    hidden = model.hidden_states(batch["input_ids"])
    scored = batch["scored"]
    logprobs = token_logprobs(model, hidden[scored], batch["target_ids"][scored], logits)
    rows = torch.arange(scored.size(0), device=scored.device)[:, None].expand_as(scored)[scored]
    per_window = torch.zeros(scored.size(0), dtype=torch.float64, device=scored.device)
    return per_window.index_add_(0, rows, logprobs.double())


class RollingPerplexityModule(pl.LightningModule):
    """Scores ``gptlab.data.rolling`` batches with a frozen backbone ``model`` (validate only)."""

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model = model
        self.sums = nn.ModuleDict({name: SumMetric().set_dtype(torch.float64) for name in SUMS})
        self.predictions = PredictionLog()
        self.logits = LogitBuffer()  # the evaluation's, freed when it ends

    def setup(self, stage: str) -> None:
        if stage == "fit":
            raise ValueError("RollingPerplexityModule does not train: run trainer.validate (regime.fit: false)")

    def on_validation_epoch_start(self) -> None:
        self.predictions.reset(["validation"])

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        per_window = window_loglikelihoods(self.model, batch, self.logits)
        counts = batch["scored"].sum(1)
        self.sums["loglikelihood"].update(per_window)
        self.sums["tokens"].update(counts.double())
        self.sums["words"].update(batch["words"])
        self.sums["bytes"].update(batch["bytes"])
        self.predictions.add(
            "validation",
            [
                {"index": index, "loglikelihood": ll, "tokens": n, "words": int(words), "bytes": int(size)}
                for index, ll, n, words, size in zip(
                    batch["index"].tolist(), per_window.tolist(), counts.tolist(),
                    batch["words"].tolist(), batch["bytes"].tolist(),
                )
            ],
        )

    def on_validation_epoch_end(self) -> None:
        self.logits.clear()
        ll, tokens, words, size = (float(self.sums[name].compute()) for name in SUMS)
        for metric in self.sums.values():
            metric.reset()
        loss = -ll / tokens
        self.log_dict(
            {
                "val/loss": loss,
                "val/ppl": math.exp(loss),
                "val/word_perplexity": math.exp(-ll / words),
                "val/byte_perplexity": math.exp(-ll / size),
                "val/bits_per_byte": -ll / (size * math.log(2)),
            },
            prog_bar=True,
        )
        self.predictions.gather()
        self.predictions.records["validation"] = merge_windows(self.predictions.records["validation"])


def merge_windows(rows: list[dict]) -> list[dict]:
    """One record per document from its windows' records (sorted by document)."""
    merged: dict[int, dict] = {}
    for row in rows:
        if row["index"] in merged:
            doc = merged[row["index"]]
            doc["loglikelihood"] += row["loglikelihood"]
            doc["tokens"] += row["tokens"]
            doc["words"] += row["words"]
            doc["bytes"] += row["bytes"]
        else:
            merged[row["index"]] = dict(row)
    return list(merged.values())
