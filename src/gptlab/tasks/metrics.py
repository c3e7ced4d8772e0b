"""Task metrics as torchmetrics objects, so their states sync across DDP ranks.

GLUE conventions: CoLA reports ``mcc``, STS-B ``pearson`` and ``spearman``, MRPC/QQP ``acc`` and
``f1`` (binary F1 of the positive class, label 1), the others ``acc``; multiple choice ``acc``.
NER reports entity-level ``precision``/``recall``/``f1`` with spans read as ``seqeval`` reads them
in its default (conlleval-compatible) mode, which accepts IOB1 and IOB2 tags alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import BinaryF1Score, MulticlassMatthewsCorrCoef
from torchmetrics.metric import Metric
from torchmetrics.regression import PearsonCorrCoef, SpearmanCorrCoef

from gptlab.tasks.spec import TaskSpec

IGNORE_INDEX = -100


class Accuracy(Metric):
    """Fraction of predictions equal to their target.

    Needs no class count, so one metric serves classification and multiple choice with any
    number of answers.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("correct", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.correct += (preds == target).sum()
        self.total += target.numel()

    def compute(self) -> torch.Tensor:
        return self.correct.float() / self.total


OUTSIDE = ("O", "_")  # a parsed "O" tag


def parse_tag(tag: str) -> tuple[str, str]:
    """``"B-PER"`` -> ``("B", "PER")``; ``"O"`` -> ``("O", "_")``, as seqeval splits tags."""
    return tag[0], tag[1:].split("-", maxsplit=1)[-1] or "_"


def _chunk_ends(prev: str, tag: str, prev_type: str, type_: str) -> bool:
    return (
        prev in ("E", "S")
        or (prev in ("B", "I") and tag in ("B", "S", "O"))
        or (prev != "O" and prev_type != type_)
    )


def _chunk_starts(prev: str, tag: str, prev_type: str, type_: str) -> bool:
    return (
        tag in ("B", "S")
        or (prev in ("E", "S", "O") and tag in ("E", "I"))
        or (tag != "O" and prev_type != type_)
    )


def entities(tags: Sequence[tuple[str, str]]) -> set[tuple[str, int, int]]:
    """(type, first, last) word spans of one sentence's parsed tags, by seqeval's default rules.

    So an ``I-`` after ``O`` or after another type opens a chunk (IOB1), and ``B-`` always does.
    """
    spans = set()
    prev, prev_type, begin = "O", "", 0
    for i, (tag, type_) in enumerate([*tags, OUTSIDE]):
        if _chunk_ends(prev, tag, prev_type, type_):
            spans.add((prev_type, begin, i - 1))
        if _chunk_starts(prev, tag, prev_type, type_):
            begin = i
        prev, prev_type = tag, type_
    return spans


class EntityScore(Metric):
    """Entity-level (micro) precision, recall or F1 over word-level tag ids.

    ``update(preds, target)`` takes (B, W) tag ids; words whose target is -100 are padding and
    dropped, a word predicted -100 (one the model never saw: truncation cut it) is outside any
    entity. The state is three counts, so ranks sync by summing them. Precision, recall and F1
    built from the same ``labels`` share their state inside a ``MetricCollection``.
    """

    full_state_update = False
    higher_is_better = True
    SCORES = ("precision", "recall", "f1")

    def __init__(self, labels: Sequence[str], score: str = "f1", **kwargs) -> None:
        super().__init__(**kwargs)
        if score not in self.SCORES:
            raise ValueError(f"EntityScore: score={score!r}; valid: {', '.join(self.SCORES)}")
        self.tags = [parse_tag(label) for label in labels]
        self.score = score
        for name in ("true_positives", "predicted", "gold"):
            self.add_state(name, torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        for pred_row, gold_row in zip(preds.tolist(), target.tolist()):
            words = [(p, g) for p, g in zip(pred_row, gold_row) if g != IGNORE_INDEX]
            predicted = entities([self.tags[p] if p != IGNORE_INDEX else OUTSIDE for p, _ in words])
            gold = entities([self.tags[g] for _, g in words])
            self.true_positives += len(predicted & gold)
            self.predicted += len(predicted)
            self.gold += len(gold)

    def compute(self) -> torch.Tensor:
        # seqeval's zero_division default: an undefined ratio counts as 0.
        tp = self.true_positives.float()
        precision = tp / self.predicted if self.predicted else tp.new_zeros(())
        recall = tp / self.gold if self.gold else tp.new_zeros(())
        if self.score == "precision":
            return precision
        if self.score == "recall":
            return recall
        total = precision + recall
        return 2 * precision * recall / total if total else total


class GlueMatthewsCorrCoef(MulticlassMatthewsCorrCoef):
    """Matthews correlation, 0 where it is undefined, as GLUE (scikit-learn) reports it.

    When every prediction (or every label) is one class the coefficient is 0/0; torchmetrics then
    returns a made-up nonzero value (0.58 for four examples), which would credit a constant
    predictor, such as a majority-class baseline or an untrained model, with skill on CoLA.
    """

    def compute(self) -> torch.Tensor:
        predicted, actual = self.confmat.sum(dim=0), self.confmat.sum(dim=1)
        if (predicted > 0).sum() < 2 or (actual > 0).sum() < 2:
            return torch.zeros((), device=self.confmat.device)
        return super().compute()


def _labels(spec: TaskSpec) -> list[str]:
    if spec.labels is None:
        raise ValueError(f"task {spec.name!r}: NER metrics need the tag names (labels)")
    return list(spec.labels)


class TargetPerplexity(MeanMetric):
    """``exp(-mean log-likelihood)`` of the targets: lm-evaluation-harness's ``perplexity``
    aggregation (LAMBADA). ``update`` takes each target's summed log-likelihood."""

    higher_is_better = False

    def compute(self) -> torch.Tensor:
        return torch.exp(-super().compute())


class TokenPerplexity(MeanMetric):
    """``exp`` of the targets' negative log-likelihood per token (an instruction task's response
    perplexity). ``update`` takes each target's mean log-likelihood per token, weighted by its tokens."""

    higher_is_better = False

    def compute(self) -> torch.Tensor:
        return torch.exp(-super().compute())


MetricFactory = Callable[[TaskSpec], Metric]

CLASS_METRICS: dict[str, MetricFactory] = {
    "acc": lambda spec: Accuracy(),
    "f1": lambda spec: BinaryF1Score(),
    "mcc": lambda spec: GlueMatthewsCorrCoef(num_classes=spec.num_labels),
    "pearson": lambda spec: PearsonCorrCoef(),
    "spearman": lambda spec: SpearmanCorrCoef(),
}
ENTITY_METRICS: dict[str, MetricFactory] = {
    score: (lambda spec, score=score: EntityScore(_labels(spec), score)) for score in EntityScore.SCORES
}
# Generation tasks: scores of the greedy generation (``gptlab.tasks.answers``), or of the target's
# likelihood (lm-eval's loglikelihood output: ``acc`` = every target token is the greedy argmax;
# ``perplexity`` per example as lm-eval aggregates it, ``ppl`` per token). Each is updated with one
# value per example (``ppl`` weighted by the example's target tokens).
GENERATED_METRICS = ("exact_match", "f1")
LIKELIHOOD_METRICS = ("acc", "perplexity", "ppl")
# (float64 states: lm-eval averages Python floats, and LAMBADA's perplexity sums 5153 log-likelihoods)
GENERATION_METRICS: dict[str, MetricFactory] = {
    "exact_match": lambda spec: MeanMetric().set_dtype(torch.float64),
    "f1": lambda spec: MeanMetric().set_dtype(torch.float64),
    "acc": lambda spec: MeanMetric().set_dtype(torch.float64),
    "perplexity": lambda spec: TargetPerplexity().set_dtype(torch.float64),
    "ppl": lambda spec: TokenPerplexity().set_dtype(torch.float64),
}


def generation_needs(spec: TaskSpec) -> tuple[bool, bool]:
    """Whether a generation task's metrics need (generations, the target's likelihood)."""
    return any(m in GENERATED_METRICS for m in spec.metrics), any(m in LIKELIHOOD_METRICS for m in spec.metrics)


# A kind's ``metrics`` entry (gptlab.tasks.kinds) names its family: metric name -> factory. The
# language-modelling family's metrics are logged by gptlab.lit.lm (pre-training) and
# gptlab.lit.rolling (zero-shot rolling perplexity), not built here.
METRIC_FAMILIES: dict[str, dict[str, MetricFactory | None]] = {
    "class": CLASS_METRICS,
    "entity": ENTITY_METRICS,
    "generation": GENERATION_METRICS,
    "lm": dict.fromkeys(("loss", "ppl", "word_perplexity", "byte_perplexity", "bits_per_byte")),
}


def check_metric_names(spec: TaskSpec) -> None:
    """Every name in ``spec.metrics`` belongs to the kind's metric family."""
    family = METRIC_FAMILIES[spec.task_kind.metrics]
    if unknown := [name for name in spec.metrics if name not in family]:
        raise ValueError(
            f"task {spec.name!r}: unknown metric(s) {unknown} for kind {spec.kind!r}; "
            f"valid names: {', '.join(family)}"
        )


def build_metrics(spec: TaskSpec) -> MetricCollection:
    """The metrics named in ``spec.metrics``, keyed by those names; ``update(preds, target)``."""
    check_metric_names(spec)
    family = METRIC_FAMILIES[spec.task_kind.metrics]
    if any(family[name] is None for name in spec.metrics):
        raise ValueError(f"task {spec.name!r}: kind {spec.kind!r} logs its metrics {spec.metrics} itself")
    return MetricCollection({name: family[name](spec) for name in spec.metrics})


def val_prefix(split: str, eval_splits: Sequence[str]) -> str:
    """Where a split's validation metrics are logged: ``val/<split>/`` when a run evaluates several
    splits, else ``val/`` (``gptlab.cli.train.result_rows`` reads the names back)."""
    return f"val/{split}/" if len(eval_splits) > 1 else "val/"
