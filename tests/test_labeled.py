"""LabeledDataModule: the batch contract, dynamic padding, bucketing, rank sharding; the demo tasks."""

from __future__ import annotations

import logging
import types
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml

from gptlab.data import corpus, demo_tasks
from gptlab.data.labeled import BucketBatchSampler, LabeledDataModule, eval_batches
from gptlab.data.tokenizer import EXTRACT_ID, PAD_ID, START_ID
from gptlab.tasks.spec import TaskSpec

TASKS = Path(__file__).resolve().parents[1] / "tasks"
DEMO_KINDS = {
    "demo_topic": "classification",
    "demo_nextsent": "entailment",
    "demo_order": "similarity",
    "demo_continuation": "multiple_choice",
    "demo_wordorder": "multiple_choice",
    "demo_tagging": "ner",
}
DEMO_LABELS = {
    "demo_topic": demo_tasks.TOPIC_LABELS,
    "demo_nextsent": demo_tasks.NEXTSENT_LABELS,
    "demo_order": demo_tasks.ORDER_LABELS,
    "demo_continuation": None,
    "demo_wordorder": None,
    "demo_tagging": demo_tasks.TAG_LABELS,
}
ExampleSplits = dict[str, list[dict[str, Any]]]


def demo_config(name: str) -> dict[str, Any]:
    return yaml.safe_load((TASKS / f"{name}.yaml").read_text())


@pytest.fixture
def reader(monkeypatch: pytest.MonkeyPatch) -> Callable[[ExampleSplits | None], None]:
    """Stands in for ``sources.load_task`` (another module's job): ``reader(splits)`` serves the given
    examples, ``reader(None)`` reads the demo tasks through ``read_demo_split``."""
    import gptlab.data.labeled as labeled

    def serve(splits: ExampleSplits | None) -> None:
        def load_task(
            spec: TaskSpec, seed: int = 0, skipped_lines: dict[str, int] | None = None
        ) -> tuple[TaskSpec, ExampleSplits]:
            if splits is not None:
                return spec, splits
            names = [spec.train_split, *spec.eval_splits]
            return spec, {s: demo_tasks.read_demo_split(spec, s) for s in names}

        monkeypatch.setattr(labeled, "load_task", load_task)

    return serve


def make_dm(task: dict[str, Any], **kwargs: Any) -> LabeledDataModule:
    dm = LabeledDataModule(task, **{"block_size": 64, "batch_size": 8, **kwargs})
    dm.setup("fit")
    return dm


def task_config(kind: str, **overrides: Any) -> dict[str, Any]:
    return {"name": f"fake_{kind}", "kind": kind, "format": "fake", "labels": ["a", "b", "c"], **overrides}


def check_contract(batch: dict[str, torch.Tensor], kind: str, regression: bool = False, evaluation: bool = False) -> None:
    """Everything the module doc promises about one batch (of evaluation, or of training)."""
    ids, mask, lm = batch["input_ids"], batch["attention_mask"], batch["lm_targets"]
    b, s, t = ids.shape
    expected_keys = {"input_ids", "attention_mask", "extract_index", "sequence_mask", "lm_targets", "labels"}
    expected_keys |= {"word_index", "word_labels"} if kind == "ner" else set()
    assert set(batch) == expected_keys | ({"index"} if evaluation else set())
    if evaluation:  # each example's index in its split
        assert batch["index"].shape == (b,) and len(set(batch["index"].tolist())) == b
    assert ids.dtype == mask.dtype == lm.dtype == batch["extract_index"].dtype == torch.long
    assert mask.shape == lm.shape == (b, s, t)
    assert batch["extract_index"].shape == batch["sequence_mask"].shape == (b, s)
    assert batch["sequence_mask"].dtype == torch.bool
    if kind in ("classification", "entailment", "ner"):
        assert s == 1
    if kind == "similarity":
        assert s == 2
    real = batch["sequence_mask"]
    lengths = mask.sum(-1)
    assert int(lengths.max()) == t, "dynamic padding: the batch is as long as its longest sequence"
    assert torch.equal(mask.bool(), ids != PAD_ID)
    for i in range(b):
        for j in range(s):
            n = int(lengths[i, j])
            if not real[i, j]:
                assert n == 0 and int(batch["extract_index"][i, j]) == 0 and (lm[i, j] == -100).all()
                continue
            assert (mask[i, j, :n] == 1).all() and (mask[i, j, n:] == 0).all(), "right padding"
            assert ids[i, j, 0] == START_ID and int(batch["extract_index"][i, j]) == n - 1
            assert ids[i, j, n - 1] == EXTRACT_ID
            assert torch.equal(lm[i, j, : n - 1], ids[i, j, 1:n])
            assert (lm[i, j, n - 1 :] == -100).all()
    labels = batch["labels"]
    if kind == "ner":
        assert labels.shape == batch["word_index"].shape == (b, t) and labels.dtype == torch.long
        starts = batch["word_index"] >= 0
        assert torch.equal(starts, labels != -100)
        # every word's tag, in word order: the ones with a first sub-token carry the same tag
        words = batch["word_labels"]
        for i in range(b):
            assert torch.equal(words[i, batch["word_index"][i][starts[i]]], labels[i][starts[i]])
    else:
        assert labels.shape == (b,)
        assert labels.dtype == (torch.float32 if regression else torch.long)


# ----------------------------------------------------------------------------- demo tasks


def test_every_demo_yaml_is_a_valid_task_spec_with_a_prompt() -> None:
    assert set(DEMO_KINDS) == set(demo_tasks.DEMO_TASKS)
    for name, kind in DEMO_KINDS.items():
        spec = TaskSpec.from_config(demo_config(name))
        assert (spec.name, spec.kind, spec.format, spec.eval_splits) == (name, kind, "demo", ["validation"])
        assert spec.labels == DEMO_LABELS[name], "the yaml names the labels the reader's ids stand for"
        assert spec.metrics == (["precision", "recall", "f1"] if kind == "ner" else ["acc"])
        if kind == "ner":  # evaluated by fine-tuning only, like conll2003
            assert spec.prompt is None
            continue
        assert spec.prompt is not None
        assert {"name", "template", "choices", "target_delimiter", "fewshot_delimiter"} <= set(spec.prompt)
        assert spec.prompt["target_delimiter"] == " " and spec.prompt["fewshot_delimiter"] == "\n\n"
        if kind == "multiple_choice":  # the answers are each example's own choices
            assert spec.labels is None and spec.prompt["choices"] is None
        else:
            assert len(spec.prompt["choices"]) == spec.num_labels


@pytest.mark.parametrize("name", sorted(DEMO_KINDS))
def test_demo_tasks_are_deterministic_balanced_and_disjoint(name: str) -> None:
    spec = TaskSpec.from_config(demo_config(name))
    splits = {s: demo_tasks.read_demo_split(spec, s) for s in ("train", "validation")}
    demo_tasks._split_examples.cache_clear()  # rebuilt from scratch: same seeds, same examples
    assert splits == {s: demo_tasks.read_demo_split(spec, s) for s in splits}
    for split, examples in splits.items():
        assert len(examples) == (demo_tasks.TRAIN_SIZES[name] if split == "train" else demo_tasks.VALIDATION_SIZE)
        if spec.kind == "ner":
            tags = Counter(t for ex in examples for t in ex["tags"])
            assert set(tags) == set(range(spec.num_labels)) if split == "train" else len(tags) >= 3
            assert sum(any(ex["tags"]) for ex in examples) >= len(examples) // 2
            assert all(len(ex["tokens"]) == len(ex["tags"]) for ex in examples)
        else:
            labels = Counter(ex["label"] for ex in examples)
            classes = 4 if spec.kind == "multiple_choice" else spec.num_labels
            assert labels == dict.fromkeys(range(classes), len(examples) // classes)

    # no document feeds both splits, so no text does
    def texts(examples: list[dict[str, Any]]) -> set[str]:
        keys = ("text", "text_a", "context")
        return {ex[k] for ex in examples for k in keys if k in ex} | {
            " ".join(ex.get("tokens", [])) for ex in examples
        }

    assert not (texts(splits["train"]) & texts(splits["validation"])) - {""}


def _openings(split: str) -> dict[str, set[str]]:
    """Group -> the sentences that open a paragraph of its documents in ``split``."""
    groups: dict[str, set[str]] = {}
    for doc in demo_tasks._in_split(split):
        groups.setdefault(doc.group, set()).update(para[0] for para in doc.sentences if para)
    return groups


@pytest.mark.parametrize("split", ["train", "validation"])
def test_continuation_distractors_open_paragraphs_of_other_groups(split: str) -> None:
    spec = TaskSpec.from_config(demo_config("demo_continuation"))
    openings = _openings(split)
    groups_of: dict[str, set[str]] = {}  # a short sentence may recur in documents of several groups
    for doc in demo_tasks._in_split(split):
        for sentence in (s for para in doc.sentences for s in para):
            groups_of.setdefault(sentence, set()).add(doc.group)
    for ex in demo_tasks.read_demo_split(spec, split):
        distractors = [c for i, c in enumerate(ex["choices"]) if i != ex["label"]]
        assert len(set(distractors)) == 3
        for sentence in distractors:
            assert any(
                sentence in openers for group in groups_of[ex["context"]]
                for other, openers in openings.items() if other != group
            )


def test_wordorder_distractors_shuffle_the_answers_inner_words() -> None:
    spec = TaskSpec.from_config(demo_config("demo_wordorder"))
    for ex in demo_tasks.read_demo_split(spec, "validation"):
        answer = ex["choices"][ex["label"]].split()
        assert len(set(map(tuple, (c.split() for c in ex["choices"])))) == 4  # all different
        for choice in (c.split() for c in ex["choices"]):
            assert (choice[0], choice[-1], sorted(choice[1:-1])) == (answer[0], answer[-1], sorted(answer[1:-1]))


def test_demo_tasks_validate_on_the_documents_pre_training_holds_out() -> None:
    """The demo corpus's validation documents (which pre-training leaves out) are the ones the demo
    tasks take every validation example from: a demo model never trains on what it is tested on."""
    splits = corpus.demo_corpus_splits()
    assert sorted(splits["train"] + splits["validation"]) == sorted(corpus.demo_corpus_documents())
    assert 0.15 < len(splits["validation"]) / len(corpus.demo_corpus_documents()) < 0.25  # one in five
    flat = {split: [" ".join(doc.split()) for doc in docs] for split, docs in splits.items()}
    topic = demo_tasks.read_demo_split(TaskSpec.from_config(demo_config("demo_topic")), "validation")
    for ex in topic[:40]:
        assert any(ex["text"] in doc for doc in flat["validation"])
        assert not any(ex["text"] in doc for doc in flat["train"])


def test_read_demo_split_rejects_unknown_tasks_and_splits() -> None:
    with pytest.raises(ValueError, match="no such demo task"):
        demo_tasks.read_demo_split(TaskSpec(name="nope", kind="classification", format="demo"), "train")
    with pytest.raises(ValueError, match="no split 'test'"):
        demo_tasks.read_demo_split(TaskSpec.from_config(demo_config("demo_topic")), "test")


def test_tagging_marks_quoted_code_spans_in_iob2() -> None:
    words, tags = demo_tasks.tag_words('Use "not in" or ``os.path`` when x is None.')
    labels = [demo_tasks.TAG_LABELS[t] for t in tags]
    assert list(zip(words, labels)) == [
        ("Use", "O"), ('"', "O"), ("not", "B-KW"), ("in", "I-KW"), ('"', "O"), ("or", "O"),
        ("``", "O"), ("os.path", "B-CODE"), ("``", "O"), ("when", "O"), ("x", "O"), ("is", "O"),
        ("None", "B-KW"), (".", "O"),
    ]  # fmt: skip
    assert demo_tasks.tag_words('An "unclosed quote.') is None


# ----------------------------------------------------------------------------- the batch contract


@pytest.mark.parametrize("name", sorted(DEMO_KINDS))
def test_demo_task_batches_follow_the_contract(reader, name: str) -> None:
    reader(None)
    dm = make_dm(demo_config(name))
    assert dm.num_train_examples == demo_tasks.TRAIN_SIZES[name] and dm.eval_splits == ["validation"]
    assert set(dm.truncated) == {"train", "validation"}
    train, (val,) = dm.train_dataloader(), dm.val_dataloader()
    assert len(train) == demo_tasks.TRAIN_SIZES[name] // 8 and len(val) == demo_tasks.VALIDATION_SIZE // 8
    check_contract(next(iter(train)), DEMO_KINDS[name])
    check_contract(next(iter(val)), DEMO_KINDS[name], evaluation=True)
    if name == "demo_continuation":
        assert next(iter(train))["input_ids"].shape[1] == 4


def test_multiple_choice_pads_missing_answers(reader) -> None:
    examples = [
        {"context": "Pick one.", "choices": ["yes", "no"], "label": 1},
        {"context": "A longer question, with more words.", "choices": ["a", "b", "c", "d", "e"], "label": 4},
        {"context": "Three?", "choices": ["one", "two", "three"], "label": 0},
    ]
    reader({"train": examples, "validation": examples})
    dm = make_dm(task_config("multiple_choice", labels=None), batch_size=3)
    (batch,) = list(dm.val_dataloader()[0])
    check_contract(batch, "multiple_choice", evaluation=True)
    assert batch["input_ids"].shape[1] == 5
    # evaluation runs longest first: the 5-answer example, then the others
    assert batch["sequence_mask"].sum(1).tolist() == [5, 2, 3]
    assert batch["labels"].tolist() == [4, 1, 0]
    assert batch["index"].tolist() == [1, 0, 2]


def test_regression_labels_are_float(reader) -> None:
    examples = [
        {"text_a": "a b", "text_b": "c", "label": 3.5},
        {"text_a": "d", "text_b": "e f g", "label": 1},
    ]
    reader({"train": examples, "validation": examples})
    dm = make_dm(task_config("similarity", labels=None, regression=True))
    batch = next(iter(dm.train_dataloader()))
    check_contract(batch, "similarity", regression=True)
    assert sorted(batch["labels"].tolist()) == [1.0, 3.5]


def test_ner_batches_map_labels_back_to_words(reader) -> None:
    examples = [
        {"tokens": ["Call", "json.dumps", "now"], "tags": [0, 1, 0]},
        {"tokens": ["x"], "tags": [2]},
    ]
    reader({"train": examples, "validation": examples})
    dm = make_dm(task_config("ner"), batch_size=2)
    (batch,) = list(dm.val_dataloader()[0])
    check_contract(batch, "ner", evaluation=True)
    for row, ex in enumerate(examples):
        starts = batch["word_index"][row] >= 0
        assert batch["word_index"][row][starts].tolist() == list(range(len(ex["tokens"])))
        assert batch["labels"][row][starts].tolist() == ex["tags"]


def test_truncated_examples_are_counted_and_logged(reader, caplog: pytest.LogCaptureFixture) -> None:
    short, long = {"text": "short", "label": 0}, {"text": "word " * 100, "label": 1}
    reader({"train": [short, long, long], "validation": [short, long]})
    with caplog.at_level(logging.INFO, logger="gptlab.data.labeled"):
        dm = make_dm(task_config("classification"), block_size=16)
    assert dm.truncated == {"train": 2, "validation": 1}
    assert "2 truncated to block_size=16" in caplog.text
    assert max(len(seq) for ex in dm._splits["train"] for seq in ex.sequences) == 16


def test_unusable_labels_fail_at_setup_naming_the_example(reader) -> None:
    reader({"train": [{"text": "fine", "label": 0}], "validation": [{"text": "unlabelled", "label": -1}]})
    with pytest.raises(ValueError, match=r"validation example 0 has label -1"):
        make_dm(task_config("classification"))


def test_one_val_loader_per_eval_split_in_order(reader) -> None:
    def split(n: int) -> list[dict[str, Any]]:
        return [{"text": f"example {i}", "label": i % 3} for i in range(n)]

    reader({"train": split(5), "test": split(3), "validation": split(7)})
    dm = make_dm(task_config("classification", eval_splits=["test", "validation"]), batch_size=2)
    assert dm.eval_splits == ["test", "validation"]
    assert [sum(len(b["labels"]) for b in loader) for loader in dm.val_dataloader()] == [3, 7]


# ----------------------------------------------------------------------------- order and sharding


LENGTHS = [(i * 37) % 101 + 1 for i in range(203)]  # varied lengths, not a multiple of the batch size


def test_bucketing_is_deterministic_per_seed_and_epoch_and_covers_every_example() -> None:
    sampler = BucketBatchSampler(LENGTHS, batch_size=8, bucket_size=5, seed=7)
    epochs = [sampler.epoch_batches(e) for e in range(3)]
    assert epochs[0] == BucketBatchSampler(LENGTHS, 8, 5, seed=7).epoch_batches(0)
    assert epochs[0] != epochs[1] != epochs[2]
    assert epochs[0] != BucketBatchSampler(LENGTHS, 8, 5, seed=8).epoch_batches(0)
    for batches in epochs:
        assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
        assert len(batches) == len(sampler) == 26
    sampler.set_epoch(2)
    assert list(sampler) == epochs[2]


def test_bucketing_groups_similar_lengths() -> None:
    # One chunk holding everything: the batches are consecutive runs of the sorted lengths.
    batches = BucketBatchSampler(LENGTHS, batch_size=8, bucket_size=100, seed=0).epoch_batches(0)
    spans = sorted((min(LENGTHS[i] for i in b), max(LENGTHS[i] for i in b)) for b in batches)
    assert all(hi <= next_lo for (_, hi), (next_lo, _) in zip(spans, spans[1:]))
    # Small chunks still pad far less than random batches would.
    bucketed = BucketBatchSampler(LENGTHS, batch_size=8, bucket_size=4, seed=0).epoch_batches(0)
    random_batches = BucketBatchSampler(LENGTHS, batch_size=8, bucket_size=1, seed=0).epoch_batches(0)

    def padding(batches: list[list[int]]) -> int:
        return sum(len(b) * max(LENGTHS[i] for i in b) - sum(LENGTHS[i] for i in b) for b in batches)

    assert padding(bucketed) < 0.6 * padding(random_batches)


@pytest.mark.parametrize("world_size", [2, 3])
def test_training_batches_are_dealt_evenly_across_ranks(world_size: int) -> None:
    ranks = [
        BucketBatchSampler(LENGTHS, 8, 5, seed=3, rank=r, world_size=world_size) for r in range(world_size)
    ]
    for r in ranks:
        r.set_epoch(1)
    dealt = [list(r) for r in ranks]
    assert {len(d) for d in dealt} == {len(ranks[0])} == {-(-26 // world_size)}
    everything = ranks[0].epoch_batches(1)
    # every batch of the epoch is dealt; the only repeats are the wrap-around fill
    got = [tuple(b) for d in dealt for b in d]
    assert set(got) == {tuple(b) for b in everything}
    assert len(got) - len(everything) < world_size


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_evaluation_is_longest_first_and_sharded_without_duplicates(world_size: int) -> None:
    shards = [eval_batches(LENGTHS, 16, r, world_size) for r in range(world_size)]
    seen = [i for shard in shards for batch in shard for i in batch]
    assert sorted(seen) == list(range(len(LENGTHS)))
    for shard in shards:
        flat = [LENGTHS[i] for batch in shard for i in batch]
        assert flat == sorted(flat, reverse=True)


def test_the_datamodule_shards_by_trainer_rank(reader) -> None:
    examples = [{"text": "word " * (i % 13 + 1), "label": i % 3} for i in range(50)]
    reader({"train": examples, "validation": examples})
    seen_val: list[int] = []
    train_lengths = set()
    for rank in range(2):
        dm = make_dm(task_config("classification"), batch_size=4)
        dm.trainer = types.SimpleNamespace(global_rank=rank, world_size=2)  # what the module reads
        train_lengths.add(len(dm.train_dataloader()))
        seen_val += [len(b["labels"]) for b in dm.val_dataloader()[0]]
    assert train_lengths == {7}  # 13 batches over 2 ranks
    assert sum(seen_val) == 50


def test_lightning_drives_the_epochs(reader) -> None:
    """A real fit: Lightning accepts the loaders and reshuffles every epoch through set_epoch."""
    examples = [{"text": "word " * (i % 7 + 1), "label": i % 3} for i in range(24)]
    reader({"train": examples, "validation": examples[:6]})

    class Recorder(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(()))
            self.seen: list[list[int]] = []

        def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
            if batch_idx == 0:
                self.seen.append([])
            self.seen[-1] += batch["labels"].tolist() + batch["attention_mask"].sum(-1).flatten().tolist()
            return self.weight.square()

        def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
            check_contract(batch, "classification", evaluation=True)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = LabeledDataModule(task_config("classification"), block_size=32, batch_size=5, bucket_size=2)
    module = Recorder()
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, use_distributed_sampler=False,
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    assert len(module.seen) == 2 and module.seen[0] != module.seen[1]
    assert sorted(module.seen[0]) == sorted(module.seen[1])  # the same examples, in a new order


def test_the_real_reader_serves_the_demo_tasks() -> None:
    """``sources.load_task`` reads ``format: demo`` through ``read_demo_split``."""
    from gptlab.data import sources

    spec, splits = sources.load_task(TaskSpec.from_config(demo_config("demo_order")), seed=0)
    assert splits["validation"] == demo_tasks.read_demo_split(spec, "validation")
