"""Task metrics: GLUE conventions, seqeval-equal NER spans, and state that syncs across ranks."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from seqeval.metrics import f1_score, precision_score, recall_score
from sklearn.metrics import f1_score as binary_f1
from omegaconf import OmegaConf
from sklearn.metrics import matthews_corrcoef

from gptlab.data.sources import load_split
from gptlab.resources import config_dir
from gptlab.tasks.metrics import EntityScore, build_metrics
from gptlab.tasks.spec import TaskSpec

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


def spec(kind: str, metrics: list[str], labels: list[str] | None = None, regression: bool = False) -> TaskSpec:
    return TaskSpec(name="t", kind=kind, format="demo", labels=labels, metrics=metrics, regression=regression)


def random_iob2(rng: random.Random, n: int) -> list[str]:
    """Well-formed IOB2: every entity opens with B-."""
    tags, current = [], None
    for _ in range(n):
        r = rng.random()
        if r < 0.5:
            tags.append("O")
            current = None
        elif r < 0.75 or current is None:
            current = rng.choice(["PER", "LOC", "MISC"])
            tags.append(f"B-{current}")
        else:
            tags.append(f"I-{current}")
    return tags


def random_iob1(rng: random.Random, n: int) -> list[str]:
    """IOB1 (CoNLL-2003's scheme): entities open with I-; B- only between two of one type."""
    tags = random_iob2(rng, n)
    return [
        t if not t.startswith("B-") or (i and tags[i - 1][2:] == t[2:]) else "I-" + t[2:]
        for i, t in enumerate(tags)
    ]


def padded(sentences: list[list[str]], labels: list[str]) -> torch.Tensor:
    """Tag names -> ids (B, W), -100 after each sentence's end."""
    width = max(map(len, sentences), default=0)
    out = torch.full((len(sentences), width), -100)
    for i, s in enumerate(sentences):
        out[i, : len(s)] = torch.tensor([labels.index(t) for t in s], dtype=torch.long)
    return out


def seqeval_scores(gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns on zero division, then scores 0 as we do
        return {
            "precision": precision_score(gold, pred),
            "recall": recall_score(gold, pred),
            "f1": f1_score(gold, pred),
        }


def entity_scores(gold: list[list[str]], pred: list[list[str]], labels: list[str]) -> dict[str, float]:
    metrics = build_metrics(spec("ner", ["precision", "recall", "f1"], labels))
    metrics.update(padded(pred, labels), padded(gold, labels))
    return {k: v.item() for k, v in metrics.compute().items()}


@pytest.mark.parametrize("scheme", [random_iob1, random_iob2])
def test_entity_scores_equal_seqeval_on_random_tags(scheme) -> None:
    rng = random.Random(0)
    for _ in range(30):
        gold = [scheme(rng, rng.randint(0, 15)) for _ in range(rng.randint(1, 8))]
        # Predictions mix well-formed spans with arbitrary tags (I- after O, type switches, ...).
        pred = [
            scheme(rng, len(g)) if rng.random() < 0.5 else [rng.choice(TAGS) for _ in g] for g in gold
        ]
        ours = entity_scores(gold, pred, TAGS)
        assert ours == pytest.approx(seqeval_scores(gold, pred), abs=1e-6)


def test_entity_scores_equal_seqeval_on_the_conll2003_validation_split(shared_data: Path) -> None:
    task = OmegaConf.load(config_dir() / "task" / "conll2003.yaml")
    task.data_dir = str(shared_data / "conll2003")
    conll = TaskSpec.from_config(task)
    sentences = load_split(conll, "validation")
    labels = conll.labels
    gold = [[labels[t] for t in ex["tags"]] for ex in sentences]
    assert len(gold) == 3250 and sum(map(len, gold)) == 51362
    rng = random.Random(0)
    # Gold tags with a share of words re-tagged at random: realistic near-misses (cut spans, wrong
    # types, IOB1 I- after O) as well as exact matches.
    for noise in (0.05, 0.3):
        pred = [[rng.choice(labels) if rng.random() < noise else t for t in s] for s in gold]
        ours = entity_scores(gold, pred, labels)
        assert ours == pytest.approx(seqeval_scores(gold, pred), abs=1e-6)  # float32 ratios
        assert 0 < ours["f1"] < 1


def test_entity_scores_follow_iob1_chunking() -> None:
    gold = [["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-MISC"]]
    pred = [["I-PER", "I-PER", "I-PER", "O", "I-LOC", "I-LOC"]]
    # gold: PER(0-1), PER(2), LOC(4), MISC(5); pred: PER(0-2), LOC(4-5): nothing matches.
    assert entity_scores(gold, pred, TAGS) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    pred = [["I-PER", "I-PER", "B-PER", "O", "I-LOC", "O"]]
    assert entity_scores(gold, pred, TAGS) == pytest.approx({"precision": 1.0, "recall": 0.75, "f1": 6 / 7})


@pytest.mark.parametrize(
    "target, preds",
    [
        ([1, 0, 0, 0], [0, 0, 0, 0]),  # one predicted class: 0/0
        ([1, 0, 1, 1, 0, 1, 0, 1, 1, 1], [1] * 10),
        ([1, 1, 1, 1], [0, 1, 0, 1]),  # one true class
        ([2, 0, 1, 1, 0, 2], [2, 0, 1, 0, 0, 1]),  # defined: three classes
    ],
)
def test_mcc_equals_scikit_learn_also_where_it_is_undefined(target: list[int], preds: list[int]) -> None:
    mcc = build_metrics(spec("classification", ["mcc"], ["a", "b", "c"]))
    mcc.update(torch.tensor(preds), torch.tensor(target))
    assert mcc.compute()["mcc"].item() == pytest.approx(matthews_corrcoef(target, preds), abs=1e-6)


def test_glue_metrics_match_reference_implementations() -> None:
    torch.manual_seed(0)
    target, preds = torch.randint(0, 2, (200,)), torch.randint(0, 2, (200,))
    cls = build_metrics(spec("classification", ["acc", "f1", "mcc"], ["no", "yes"]))
    cls.update(preds, target)
    values = cls.compute()
    assert values["acc"].item() == pytest.approx((preds == target).float().mean().item())
    assert values["f1"].item() == pytest.approx(binary_f1(target, preds))
    assert values["mcc"].item() == pytest.approx(matthews_corrcoef(target, preds), abs=1e-6)
    score, gold = torch.rand(100) * 5, torch.rand(100) * 5
    reg = build_metrics(spec("similarity", ["pearson", "spearman"], regression=True))
    reg.update(score, gold)
    values = reg.compute()
    assert values["pearson"].item() == pytest.approx(pearsonr(score, gold)[0], abs=1e-5)
    assert values["spearman"].item() == pytest.approx(spearmanr(score, gold)[0], abs=1e-5)


def test_unknown_metric_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['bleu'\].*valid names: acc, f1, mcc"):
        build_metrics(spec("classification", ["acc", "bleu"], ["a", "b"]))
    with pytest.raises(ValueError, match="valid names: precision, recall, f1"):
        build_metrics(spec("ner", ["acc"], TAGS))


def simulate_two_ranks(rank0, rank1) -> list[list]:
    """Make ``rank0.compute()`` sync with ``rank1`` through torchmetrics' own sync path.

    Each state tensor that rank 0 all-gathers is answered with rank 1's tensor of the same
    state; the reductions (sum, cat, Pearson's aggregation) are then torchmetrics' real ones.
    Returns, per metric, rank 1's tensors still to be gathered (empty once rank 0 has synced).
    """
    queues = []
    for name, metric in rank0.items(keep_base=True):
        sent: list = []
        rank1[name].sync(dist_sync_fn=lambda t, group=None: sent.append(t) or [t], distributed_available=lambda: True)
        rank1[name].unsync()
        queues.append(sent)
        metric.dist_sync_fn = lambda t, group=None, sent=sent: [t, sent.pop(0)]
        metric.distributed_available_fn = lambda: True
    return queues


@pytest.mark.parametrize(
    "task",
    [
        spec("classification", ["acc", "f1", "mcc"], ["no", "yes"]),
        spec("similarity", ["pearson", "spearman"], regression=True),
        spec("multiple_choice", ["acc"]),
        spec("ner", ["precision", "recall", "f1"], TAGS),
    ],
    ids=lambda s: s.kind,
)
def test_metrics_synced_over_two_ranks_equal_one_process_on_all_data(task: TaskSpec) -> None:
    torch.manual_seed(0)
    n = 64
    if task.kind == "ner":
        rng = random.Random(0)
        gold = padded([random_iob1(rng, 12) for _ in range(n)], TAGS)
        preds = padded([random_iob1(rng, 12) for _ in range(n)], TAGS)
    elif task.regression:
        preds, gold = torch.rand(n), torch.rand(n)
    else:
        preds, gold = torch.randint(0, 2, (n,)), torch.randint(0, 2, (n,))
    whole, rank0, rank1 = (build_metrics(task) for _ in range(3))
    whole.update(preds, gold)
    rank0.update(preds[:40], gold[:40])  # uneven shards, as the last batch of an epoch makes
    rank1.update(preds[40:], gold[40:])
    queues = simulate_two_ranks(rank0, rank1)
    expected, synced = whole.compute(), rank0.compute()
    assert synced.keys() == expected.keys()
    for name in expected:
        assert synced[name].item() == pytest.approx(expected[name].item(), abs=1e-5), name
    assert all(q == [] for q in queues)  # every state of rank 1 was gathered


def test_entity_score_rejects_unknown_score() -> None:
    with pytest.raises(ValueError, match="valid: precision, recall, f1"):
        EntityScore(TAGS, "accuracy")
