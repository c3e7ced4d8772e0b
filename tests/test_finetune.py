"""Fine-tuning: the objective, the schedule, per-split validation, results rows, checkpoints.

Synthetic batches follow the contract of ``gptlab.data.labeled`` (see ``make_batch``); the
end-to-end runs go through the Hydra app on the demo task of each kind.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, replace
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from test_metrics import seqeval_scores
from test_train import make_cfg
from torch.utils.data import DataLoader

from gptlab.cli.train import result_rows, train
from gptlab.data import transforms
from gptlab.data.demo_tasks import TRAIN_SIZES, VALIDATION_SIZE
from gptlab.data.labeled import Collator
from gptlab.data.sources import load_task
from gptlab.data.tokenizer import get_tokenizer
from gptlab.data.contract import TaskDataModule
from gptlab.lit.base import warmup_linear
from gptlab.lit.finetune import FinetuneModule, per_word
from gptlab.model.checkpoint import load_gpt_checkpoint
from gptlab.model.checkpoint import BACKBONE_PREFIX, read_checkpoint
from gptlab.model.gpt import GPT
from gptlab.report.predictions import read_predictions
from gptlab.report.results import read_results
from gptlab.schema import ConfigError
from gptlab.tasks.spec import TaskSpec

V, T = 64, 12
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
SPECS = {
    spec.kind: spec
    for spec in (
        TaskSpec(name="syn_topic", kind="classification", format="demo", labels=["a", "b", "c"], metrics=["acc", "mcc"]),
        TaskSpec(name="syn_rte", kind="entailment", format="demo", labels=["yes", "no"], metrics=["acc", "f1"]),
        TaskSpec(name="syn_sts", kind="similarity", format="demo", regression=True, metrics=["pearson", "spearman"]),
        TaskSpec(name="syn_mc", kind="multiple_choice", format="demo", metrics=["acc"]),
        TaskSpec(name="syn_ner", kind="ner", format="demo", labels=TAGS, metrics=["precision", "recall", "f1"]),
    )
}


def make_batch(spec: TaskSpec, B: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """A right-padded batch of the contract: S sequences per example, [extract] last."""
    g = torch.Generator().manual_seed(seed)
    S = {"similarity": 2, "multiple_choice": 3}.get(spec.kind, 1)
    lengths = torch.randint(T // 2, T + 1, (B, S), generator=g)
    sequence_mask = torch.ones(B, S, dtype=torch.bool)
    if spec.kind == "multiple_choice":
        sequence_mask[0, -1] = False  # example 0 has two answers, its third slot is padding
        lengths[0, -1] = 0
    attention_mask = (torch.arange(T) < lengths[..., None]).long()
    input_ids = torch.randint(0, V, (B, S, T), generator=g) * attention_mask
    lm_targets = torch.full((B, S, T), -100)
    lm_targets[..., :-1] = input_ids[..., 1:].masked_fill(attention_mask[..., 1:] == 0, -100)
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "extract_index": (lengths - 1).clamp(min=0),
        "sequence_mask": sequence_mask,
        "lm_targets": lm_targets,
    }
    if spec.kind == "ner":
        starts = (torch.rand(B, T, generator=g) < 0.6) & (attention_mask[:, 0] == 1)
        batch["word_index"] = torch.where(starts, starts.long().cumsum(1) - 1, -1)
        tags = torch.randint(0, len(TAGS), (B, T), generator=g)
        batch["labels"] = torch.where(starts, tags, -100)
        # the sentence's words: those with a first sub-token, then one that truncation dropped
        words = starts.sum(1)
        batch["word_labels"] = torch.full((B, int(words.max()) + 1), -100)
        for i in range(B):
            batch["word_labels"][i, : words[i] + 1] = torch.cat([tags[i][starts[i]], tags[i, :1]])
    elif spec.kind == "multiple_choice":
        batch["labels"] = torch.randint(0, 2, (B,), generator=g)
    elif spec.regression:
        batch["labels"] = torch.rand(B, generator=g) * 5
    else:
        batch["labels"] = torch.randint(0, spec.num_labels, (B,), generator=g)
    return batch


class SyntheticTask(TaskDataModule):
    """The DataModule contract FinetuneModule reads, on synthetic batches."""

    NATURE = "finetune"

    def __init__(self, spec: TaskSpec, eval_splits: list[str], train_batches: int = 4) -> None:
        spec = replace(spec, eval_splits=eval_splits)
        super().__init__(asdict(spec))
        self.spec = spec
        self.train = [make_batch(spec, seed=i) for i in range(train_batches)]
        self.num_train_examples = 4 * train_batches
        self.block_size = T

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=None)

    def val_dataloader(self) -> list[DataLoader]:
        return [
            DataLoader([make_batch(self.spec, seed=100 + 10 * i + j) for j in range(2 + i)], batch_size=None)
            for i, _ in enumerate(self.eval_splits)
        ]


# Steps called without a Trainer: Lightning warns that self.log has nowhere to go.
no_trainer = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")


def module_for(model: GPT, spec: TaskSpec, **kwargs) -> FinetuneModule:
    module = FinetuneModule(model, asdict(spec), **kwargs)
    module.configure_task(spec, ["validation"])
    return module.eval()  # no dropout, so two passes over a batch agree


def fit(module: FinetuneModule, data: SyntheticTask, tmp_path: Path, steps: int = 3) -> pl.Trainer:
    """One epoch of ``steps`` batches, validated at its end."""
    trainer = pl.Trainer(
        max_epochs=1, limit_train_batches=steps, default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu",
    )
    trainer.fit(module, datamodule=data)
    return trainer


@no_trainer
@pytest.mark.parametrize("lm_lambda", [0.5, 2.0])
def test_loss_is_task_loss_plus_lambda_times_lm_loss(lm_lambda: float, tiny_gpt) -> None:
    spec = SPECS["entailment"]
    module, batch = module_for(tiny_gpt(vocab_size=V), spec, lm_lambda=lm_lambda), make_batch(spec)
    loss = module.training_step(batch, 0)
    scores, hidden = module(batch)
    task = module.head.loss(scores, batch["labels"])
    lm = module.model.lm_loss(hidden, batch["lm_targets"])
    assert torch.equal(loss, task + lm_lambda * lm)
    assert lm > 0 and task > 0


@no_trainer
def test_lm_lambda_zero_skips_the_lm_head(monkeypatch: pytest.MonkeyPatch, tiny_gpt) -> None:
    spec = SPECS["classification"]
    module, batch = module_for(tiny_gpt(vocab_size=V), spec, lm_lambda=0.0), make_batch(spec)

    def no_lm_head(*args, **kwargs):
        raise AssertionError("lm_loss called with lm_lambda=0")

    monkeypatch.setattr(module.model, "lm_loss", no_lm_head)
    loss = module.training_step(batch, 0)
    scores, _ = module(batch)
    assert torch.equal(loss, module.head.loss(scores, batch["labels"]))


@pytest.mark.parametrize("kind", list(SPECS))
def test_each_kind_trains_and_validates_its_metrics(kind: str, tmp_path: Path, tiny_gpt) -> None:
    spec = SPECS[kind]
    module = FinetuneModule(tiny_gpt(vocab_size=V), asdict(spec), lr=1e-3)
    trainer = fit(module, SyntheticTask(spec, ["validation"]), tmp_path)
    logged = trainer.logged_metrics
    assert {"train/loss", "train/task_loss", "train/lm_loss"} <= logged.keys()
    assert {f"val/{m}" for m in spec.metrics} | {"val/loss"} == {k for k in logged if k.startswith("val/")}
    assert all(torch.isfinite(v) for v in logged.values())
    # linear decay reaches 0 at the last of the estimated steps
    assert trainer.lr_scheduler_configs[0].scheduler.get_last_lr() == [0.0, 0.0]


@pytest.mark.parametrize("lm_lambda", [0.0, 0.5])
def test_an_untied_lm_head_trains_only_with_the_lm_loss(lm_lambda: float, tmp_path: Path, tiny_gpt) -> None:
    """Without the LM loss an untied head gets no gradient; frozen, DDP waits for none and the
    optimizer holds no state for it."""
    spec = SPECS["classification"]
    model = tiny_gpt(vocab_size=V, tie_embeddings=False)
    module = FinetuneModule(model, asdict(spec), lm_lambda=lm_lambda)
    before = model.lm_head.weight.detach().clone()
    fit(module, SyntheticTask(spec, ["validation"]), tmp_path, steps=2)
    assert model.lm_head.weight.requires_grad == (lm_lambda > 0)
    assert torch.equal(model.lm_head.weight, before) == (lm_lambda == 0)


def test_several_eval_splits_log_and_record_each_split(tmp_path: Path, tiny_gpt) -> None:
    spec = SPECS["classification"]
    splits = ["validation_matched", "validation_mismatched"]
    data = SyntheticTask(spec, splits)
    module = FinetuneModule(tiny_gpt(vocab_size=V), asdict(spec))
    trainer = fit(module, data, tmp_path, steps=1)
    metrics = {k: float(v) for k, v in trainer.validate(module, datamodule=data, verbose=False)[0].items()}
    assert set(metrics) == {
        "val/loss",
        "val/validation_matched/acc",
        "val/validation_matched/mcc",
        "val/validation_mismatched/loss",
        "val/validation_mismatched/acc",
        "val/validation_mismatched/mcc",
    }
    cfg = OmegaConf.create(
        {"task": {"name": spec.name}, "regime": {"name": "finetune", "nature": "finetune"}, "model": {"name": "tiny", "init_from": None}, "seed": 3}
    )
    rows = {(r.split, r.metric): r for r in result_rows(cfg, metrics, data, trainer)}
    assert set(rows) == {(s, m) for s in splits for m in ("loss", "acc", "mcc")}
    assert rows["validation_matched", "loss"].value == metrics["val/loss"]
    assert rows["validation_mismatched", "acc"].value == metrics["val/validation_mismatched/acc"]
    assert {r.n_eval for r in rows.values() if r.split == "validation_mismatched"} == {3}  # its loader's length
    row = rows["validation_matched", "acc"]
    assert (row.init, row.seed, row.n_train_examples, row.regime) == ("scratch", 3, 16, "finetune")


def test_ner_predictions_are_read_at_each_words_first_sub_token() -> None:
    values = torch.tensor([[7, 8, 9, 4, 5], [1, 2, 3, 0, 0]])
    word_index = torch.tensor([[0, -1, 1, -1, 2], [0, 1, -1, -1, -1]])
    assert per_word(values, word_index).tolist() == [[7, 9, 5], [1, 2, -100]]


@no_trainer
def test_ner_scores_count_words_cut_by_truncation_as_missed_as_seqeval_on_the_full_sentences(
    monkeypatch: pytest.MonkeyPatch, tiny_gpt
) -> None:
    g = torch.Generator().manual_seed(0)
    sentences = []
    for _ in range(24):
        n = int(torch.randint(3, 12, (), generator=g))
        pieces = [torch.randint(1, V, (int(torch.randint(1, 3, (), generator=g)),), generator=g).tolist() for _ in range(n)]
        sentences.append((pieces, torch.randint(0, len(TAGS), (n,), generator=g).tolist()))
    examples = [transforms.ner(pieces, tags, block_size=12) for pieces, tags in sentences]
    assert sum(ex.dropped_words for ex in examples) > 10, "the window must cut words for this test"
    batch = Collator(per_token_labels=True)(examples)
    scores = torch.randn(*batch["input_ids"].shape[::2], len(TAGS), generator=g)
    module = module_for(tiny_gpt(vocab_size=V), SPECS["ner"])
    monkeypatch.setattr(module, "forward", lambda batch: (scores, None))
    module.validation_step(batch, 0)
    ours = {name: float(value) for name, value in module.val_metrics[0].compute().items()}

    # what the model said for each word it saw (its first sub-token), "O" for the words it never saw
    picks = scores.argmax(-1)
    gold, pred = [], []
    for i, (pieces, tags) in enumerate(sentences):
        said = {int(w): TAGS[int(p)] for w, p in zip(batch["word_index"][i], picks[i]) if w >= 0}
        gold.append([TAGS[t] for t in tags])
        pred.append([said.get(w, "O") for w in range(len(tags))])
    assert ours == pytest.approx(seqeval_scores(gold, pred), abs=1e-6)


def test_warmup_then_linear_decay_to_zero() -> None:
    factors = [warmup_linear(step, 2, 10) for step in range(11)]
    assert factors[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert factors[2:] == pytest.approx([(10 - s) / 8 for s in range(2, 11)])


def test_a_fine_tuned_checkpoint_seeds_another_run(tmp_path: Path, tiny_gpt) -> None:
    spec = SPECS["ner"]
    module = FinetuneModule(tiny_gpt(vocab_size=V), asdict(spec))
    trainer = fit(module, SyntheticTask(spec, ["validation"]), tmp_path, steps=1)
    trainer.save_checkpoint(tmp_path / "ft.ckpt")
    backbone = load_gpt_checkpoint(tmp_path / "ft.ckpt")
    for name, tensor in module.model.state_dict().items():
        assert torch.equal(backbone.state_dict()[name], tensor), name


def test_only_labelled_task_kinds_are_fine_tuned(tiny_gpt) -> None:
    with pytest.raises(ValueError, match="task kind is 'lm'"):
        FinetuneModule(tiny_gpt(vocab_size=V), {"name": "corpus", "kind": "lm", "format": "text"})


DEMO_TASKS = {
    "classification": "demo_topic",
    "entailment": "demo_nextsent",
    "similarity": "demo_order",
    "multiple_choice": "demo_continuation",
    "ner": "demo_tagging",
}


def finetune_cfg(tmp_path: Path, task: str, *overrides: str) -> DictConfig:
    """``gptlab regime=finetune task=<task> debug=fast``, evaluated in two batches per validation."""
    return make_cfg(
        tmp_path,
        "regime=finetune",
        f"task={task}",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "regime.datamodule.eval_batch_size=80",
        *overrides,
    )


@pytest.mark.parametrize("kind", list(DEMO_TASKS))
def test_hydra_finetune_run_of_each_kind_writes_metrics_rows_and_a_seeding_checkpoint(kind: str, tmp_path: Path) -> None:
    cfg = finetune_cfg(tmp_path, DEMO_TASKS[kind], "seed=5")
    metrics = train(cfg)
    task_metrics = set(cfg.task.metrics)
    assert set(metrics) == {f"val/{m}" for m in task_metrics} | {"val/loss"}
    run = tmp_path / "run"
    rows = read_results(run / "results.jsonl")
    answered = {"top_answer_share"} if kind != "ner" else set()  # from the per-example answers
    assert {r["metric"] for r in rows} == task_metrics | {"loss"} | answered
    for row in rows:
        if row["metric"] not in answered:
            assert row["value"] == metrics[f"val/{row['metric']}"]
        assert (row["task"], row["split"], row["regime"], row["init"], row["seed"]) == (
            DEMO_TASKS[kind], "validation", "finetune", "scratch", 5
        )
        assert (row["n_train_examples"], row["n_eval"]) == (TRAIN_SIZES[DEMO_TASKS[kind]], VALIDATION_SIZE)
    logged = (run / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "train/task_loss", "train/lm_loss"} <= set(logged)
    if kind != "ner":  # one answer per example (the demo similarity task is a classification)
        answers = read_predictions(run)
        assert sorted(a["index"] for a in answers) == list(range(160))
        assert sum(a["correct"] for a in answers) / 160 == pytest.approx(metrics["val/acc"])
        acc = next(r for r in rows if r["metric"] == "acc")
        p = acc["value"]
        assert acc["stderr"] == pytest.approx((p * (1 - p) / 160) ** 0.5, rel=0.15)  # a proportion's
    else:
        assert not (run / "predictions.jsonl").exists()
    # The fine-tuned backbone seeds a new run through model.init_from.
    ckpt = run / "checkpoints" / "last.ckpt"
    seeded = instantiate(cfg.model, init_from=str(ckpt))
    state = read_checkpoint(ckpt)["state_dict"]
    for name, tensor in seeded.state_dict().items():
        assert torch.equal(tensor, state[BACKBONE_PREFIX + name]), name


def fit_validation_losses(run: Path) -> list[float]:
    """val/loss of each validation during fitting (the CSV logger's rows; the last row is the
    final evaluation's)."""
    with open(run / "csv" / "version_0" / "metrics.csv") as f:
        return [float(line["val/loss"]) for line in csv.DictReader(f) if line.get("val/loss")][:-1]


def test_eval_ckpt_best_reports_the_weights_of_the_lowest_validation_loss(tmp_path: Path) -> None:
    # lr 1e-2 overshoots: the loss is lowest at the first validation, not the last
    metrics = train(finetune_cfg(tmp_path, "demo_topic", "trainer.max_steps=8", "regime.module.lr=1e-2", "eval_ckpt=best"))
    losses = fit_validation_losses(tmp_path / "run")
    assert len(losses) == 8 and losses[-1] > min(losses) + 1e-3, "the test needs last != best"
    assert metrics["val/loss"] == pytest.approx(min(losses), rel=1e-6)
    rows = read_results(tmp_path / "run" / "results.jsonl")
    assert {r["eval_ckpt"] for r in rows} == {"best"}
    assert {r["config"]["eval_ckpt"] for r in rows} == {"best"}  # a condition of its own


def test_early_stopping_ends_fitting_after_patience_validations_without_improvement(tmp_path: Path) -> None:
    # no improvement can exceed min_delta=100: the first validation sets the best, one more waits
    train(finetune_cfg(
        tmp_path, "demo_topic", "trainer.max_steps=8", "callbacks=early_stopping",
        "callbacks.early_stopping.patience=1", "callbacks.early_stopping.min_delta=100",
    ))
    assert len(fit_validation_losses(tmp_path / "run")) == 2
    assert {r["eval_ckpt"] for r in read_results(tmp_path / "run" / "results.jsonl")} == {"last"}


def test_eval_ckpt_best_without_training_or_a_monitored_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="eval_ckpt=best: regime=zero_shot trains nothing"):
        train(make_cfg(tmp_path, "regime=zero_shot", "task=demo_topic", "eval_ckpt=best"))
    with pytest.raises(ConfigError, match="eval_ckpt=best needs callbacks.best_checkpoint"):
        train(finetune_cfg(tmp_path, "demo_topic", "eval_ckpt=best", "callbacks.best_checkpoint=null"))
    with pytest.raises(ConfigError, match="eval_ckpt=latest: must be one of last, best"):
        train(finetune_cfg(tmp_path, "demo_topic", "eval_ckpt=latest"))


def test_a_fine_tuning_run_records_the_examples_and_words_truncation_cut(tmp_path: Path) -> None:
    cfg = finetune_cfg(tmp_path, "demo_tagging", "regime.block_size=10")
    train(cfg)
    rows = {(r["split"], r["metric"]): r["value"] for r in read_results(tmp_path / "run" / "results.jsonl")}
    # what a 10-token window keeps ([start] and [extract] take 2): the leading words that fit
    _, examples = load_task(TaskSpec.from_config(cfg.task), seed=cfg.seed)
    encode = get_tokenizer().encode_ordinary
    for split in ("train", "validation"):
        cut = dropped = 0
        for example in examples[split]:
            lengths = [len(encode(word)) for word in transforms.spaced_words(example["tokens"])]
            fit = next((i for i in range(1, len(lengths) + 1) if sum(lengths[:i]) > 8), len(lengths) + 1) - 1
            kept = max(fit, 1)
            cut += kept < len(lengths) or lengths[0] > 8
            dropped += len(lengths) - kept
        assert cut > 0 and (rows[split, "n_truncated"], rows[split, "dropped_words"]) == (cut, dropped)


def test_throughput_counts_the_tokens_read_not_the_padding() -> None:
    batch = make_batch(SPECS["multiple_choice"])
    # each real sequence ends with [extract]: its length is the extract position + 1
    lengths = (batch["extract_index"] + 1)[batch["sequence_mask"]]
    assert FinetuneModule.tokens_per_batch(batch) == int(lengths.sum()) < batch["input_ids"].numel()


def test_blank_lines_skipped_in_the_task_files_are_written_to_the_results(tmp_path: Path) -> None:
    sst2 = tmp_path / "data" / "sst2"
    sst2.mkdir(parents=True)
    rows = [f"phrase {i}\t{i % 2}\n" for i in range(16)]
    (sst2 / "train.tsv").write_text("sentence\tlabel\n" + "".join(rows) + "\n\n")  # two at the end
    (sst2 / "dev.tsv").write_text("sentence\tlabel\n\n" + "".join(rows[:4]))  # one after the header
    train(finetune_cfg(tmp_path, "sst2", f"paths.data_dir={tmp_path / 'data'}"))
    results = read_results(tmp_path / "run" / "results.jsonl")
    skipped = {r["split"]: r["value"] for r in results if r["metric"] == "skipped_blank_lines"}
    assert skipped == {"train": 2, "validation": 1}
    assert {r["metric"] for r in results if r["split"] == "validation"} == {
        "acc", "loss", "skipped_blank_lines", "top_answer_share"
    }


@pytest.mark.parametrize(
    "task, metrics",
    [
        ("sst2", {"acc"}),
        ("cola", {"mcc"}),
        ("rte", {"acc"}),
        ("mrpc", {"acc", "f1"}),
        ("stsb", {"pearson", "spearman"}),
        ("copa", {"acc"}),
        ("arc_easy", {"acc"}),
        ("storycloze", {"acc"}),
        ("conll2003", {"precision", "recall", "f1"}),
    ],
)
def test_each_real_task_fine_tunes_from_the_shared_files(
    task: str, metrics: set[str], tmp_path: Path, shared_data: Path
) -> None:
    cfg = make_cfg(
        tmp_path,
        "regime=finetune",
        f"task={task}",
        f"paths.data_dir={shared_data}",
        "task.train_limit=16",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "+trainer.limit_val_batches=2",
    )
    train(cfg)
    rows = read_results(tmp_path / "run" / "results.jsonl")
    for split in cfg.task.eval_splits:
        assert metrics <= {r["metric"] for r in rows if r["split"] == split}, split
    assert {r["n_train_examples"] for r in rows} == {16}
