"""Generative fine-tuning (``regime=finetune`` on kind ``generation``): answer-only loss, truncation,
packing, carved splits, instruction templates, and fine-tuned beside prompted rows in one report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gptlab.cli.report import main as report_main
from gptlab.cli.train import build_all, train
from gptlab.data.prompts import fit_window, render
from gptlab.data.sft import SFTCollator, SFTDataModule, next_token_targets, pack_rows, sft_examples
from gptlab.data.sources import load_task, read_split
from gptlab.data.sources.base import DataFormatError
from gptlab.data.tokenizer import EOT_ID, get_tokenizer
from gptlab.report.results import read_results
from gptlab.tasks.spec import TaskSpec
from tests.test_train import make_cfg

ANSWERS = ["red", "blue", "green", "seven", "paris", "water", "north", "piano", "eagle", "bread"]


def write_qa(path: Path, n: int = 40) -> Path:
    """``n`` short question/answer pairs as JSON lines (a generation task's file)."""
    records = [
        {"q": f"Question {i}: which word is number {i % 10}?\nAnswer:", "a": ANSWERS[i % 10], "aliases": []}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def qa_task(data_dir: Path, **overrides) -> dict:
    """The task node of a small generation task over ``write_qa``'s file, 30 / 10 carved."""
    values = {
        "name": "qa", "kind": "generation", "format": "jsonl", "data_dir": str(data_dir),
        "files": {"all": "qa.jsonl"}, "fields": {"context": "q", "target": "a"},
        "carve": {"from": "all", "seed": 7, "sizes": {"train": 30, "test": None}},
        "eval_splits": ["test"], "metrics": ["exact_match", "f1", "ppl"],
        "generation": {"until": ["\n"], "max_gen_toks": 4}, "prompt": {"template": "{context}"},
    }
    return {**values, **overrides}


def qa_spec(data_dir: Path, **overrides) -> TaskSpec:
    return TaskSpec.from_config(qa_task(data_dir, **overrides))


QA_TASK = [
    "task=triviaqa", "task.files.validation=qa.jsonl", "task.fields={context: q, target: a}",
    "task.carve={from: validation, seed: 7, sizes: {train: 30, test: null}}", "task.metrics=[exact_match,f1,ppl]",
    "task.generation.max_gen_toks=4", "model=gpt-nano",
]


# ----------------------------------------------------------------------------- the loss


def test_only_the_response_and_its_end_of_text_are_targets() -> None:
    prompt = {"template": "Q: {context}\nA:", "target_delimiter": " "}
    spec = TaskSpec.from_config({
        "name": "t", "kind": "generation", "format": "jsonl", "files": {"validation": "x"}, "prompt": prompt,
    })
    (example,) = sft_examples(spec.prompt_spec(), [{"context": "two plus two", "targets": ["four"]}], 64)
    encode = get_tokenizer().encode_ordinary
    prompt_ids, response_ids = encode("Q: two plus two\nA:"), encode(" four")
    assert example.ids == prompt_ids + response_ids + [EOT_ID]
    targets = next_token_targets(example)
    # position t predicts token t + 1: the prompt's last token predicts the response's first
    assert targets == [-100] * (len(prompt_ids) - 1) + response_ids + [EOT_ID]


def test_context_labels_do_not_enter_the_loss_and_response_labels_do(tiny_gpt) -> None:
    model = tiny_gpt(vocab_size=50304, block_size=64)
    prompt = TaskSpec.from_config({
        "name": "t", "kind": "generation", "format": "jsonl", "files": {"validation": "x"},
        "prompt": {"template": "{context}"},
    }).prompt_spec()
    examples = sft_examples(prompt, [
        {"context": "The capital of France is", "targets": ["Paris, a city"]},
        {"context": "A long question that has many more words in it, to make padding", "targets": ["yes"]},
    ], 64)
    batch = SFTCollator(pack=False, block_size=64)(examples)
    hidden = model.hidden_states(batch["input_ids"], batch["attention_mask"])
    hidden.retain_grad()
    loss = model.lm_loss(hidden, batch["targets"])
    loss.backward()
    # a final hidden state reaches the loss only through the LM head at its own position: its
    # gradient is zero exactly where the label is masked (prompt, padding)
    touched = hidden.grad.abs().sum(-1) > 0
    assert torch.equal(touched, batch["targets"] != -100)
    for row, ex in enumerate(examples):
        assert int(touched[row].sum()) == len(ex.ids) - ex.prompt_tokens  # response + EOT
    # changing a response token's label changes the loss
    changed = batch["targets"].clone()
    row, col = (batch["targets"] != -100).nonzero()[0].tolist()
    changed[row, col] = (changed[row, col] + 1) % 50257
    with torch.no_grad():
        assert model.lm_loss(hidden, changed).item() != pytest.approx(loss.item(), rel=1e-6)


def test_packed_rows_give_the_loss_of_padded_rows(tiny_gpt) -> None:
    model = tiny_gpt(vocab_size=50304, block_size=64).eval()
    prompt = TaskSpec.from_config({
        "name": "t", "kind": "generation", "format": "jsonl", "files": {"validation": "x"},
        "prompt": {"template": "{context}"},
    }).prompt_spec()
    texts = [("one two", "three"), ("a much longer prompt with words", "answer here"), ("hi", "there you go"), ("x", "y")]
    examples = sft_examples(prompt, [{"context": c, "targets": [t]} for c, t in texts], 64)
    padded, packed = SFTCollator(False, 64)(examples), SFTCollator(True, 64)(examples)
    assert packed["input_ids"].size(0) < padded["input_ids"].size(0)  # short examples share a row
    assert int((packed["targets"] != -100).sum()) == int((padded["targets"] != -100).sum())
    with torch.no_grad():
        loss_padded = model.lm_loss(model.hidden_states(padded["input_ids"], padded["attention_mask"]), padded["targets"])
        hidden = model.hidden_states(
            packed["input_ids"], position_ids=packed["position_ids"], segment_ids=packed["segment_ids"]
        )
        loss_packed = model.lm_loss(hidden, packed["targets"])
    assert loss_packed.item() == pytest.approx(loss_padded.item(), rel=1e-5)


def test_pack_rows_first_fit_never_overflows() -> None:
    lengths = [9, 3, 7, 1, 5, 5, 2, 8]
    rows = pack_rows(lengths, 10)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 10 for row in rows)
    assert len(rows) == 4  # first fit by decreasing length: 9+1, 8+2, 7+3, 5+5
    assert pack_rows([4], 4) == [[0]]


# ----------------------------------------------------------------------------- truncation


@pytest.mark.parametrize(
    ("prompt", "response", "window", "min_prompt", "kept"),
    [
        (5, 3, 10, 1, (5, 3)),  # fits: nothing cut
        (8, 5, 10, 1, (5, 5)),  # lm-eval: the context gives way to the continuation
        (8, 20, 10, 1, (1, 9)),  # a response longer than the window keeps one context token
        (8, 20, 10, 5, (5, 5)),  # SFT: the prompt keeps half the window
        (2, 20, 10, 5, (2, 8)),  # a short prompt leaves the response the rest
    ],
)
def test_fit_window_policy(prompt: int, response: int, window: int, min_prompt: int, kept: tuple[int, int]) -> None:
    p, r = list(range(prompt)), list(range(100, 100 + response))
    kept_prompt, kept_response = fit_window(p, r, window, min_prompt)
    assert (len(kept_prompt), len(kept_response)) == kept
    assert kept_prompt == p[len(p) - len(kept_prompt):] and kept_response == r[: len(kept_response)]


def test_long_examples_are_cut_and_counted_never_emptied(tmp_path: Path) -> None:
    long_answer = " ".join(f"w{i}" for i in range(80))
    records = [{"q": f"Question {i}: " + "word " * (60 if i % 2 else 2), "a": long_answer if i % 3 == 0 else "ok"} for i in range(12)]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    dm = SFTDataModule(
        qa_task(tmp_path, carve={"from": "all", "seed": 1, "sizes": {"train": 8, "test": None}}),
        block_size=40, batch_size=4,
    )
    dm.setup()
    assert dm.truncated_responses > 0 and dm.truncated_prompts > 0
    assert all(ex.length <= 40 for ex in dm._train)
    batch = next(iter(dm.train_dataloader()))
    assert ((batch["targets"] != -100).sum(1) > 0).all()  # every example keeps some of its response


# ----------------------------------------------------------------------------- data


def test_carved_splits_are_disjoint_fixed_by_the_task_seed_and_in_file_order(tmp_path: Path) -> None:
    write_qa(tmp_path / "qa.jsonl")
    spec = qa_spec(tmp_path)
    train, test = read_split(spec, "train"), read_split(spec, "test")
    assert len(train.examples) == 30 and len(test.examples) == 10
    lines = [loc.number for loc in train.locs + test.locs]
    assert sorted(lines) == list(range(1, 41))  # together the whole file, each line once
    assert [loc.number for loc in test.locs] == sorted(loc.number for loc in test.locs)
    _, data = load_task(spec, seed=99)  # the run's seed does not move the split
    assert [e["context"] for e in data["test"]] == [e["context"] for e in test.examples]
    other = read_split(qa_spec(tmp_path, carve={"from": "all", "seed": 8, "sizes": {"train": 30, "test": None}}), "test")
    assert [e["context"] for e in other.examples] != [e["context"] for e in test.examples]


@pytest.mark.parametrize(
    ("carve", "message"),
    [
        ({"from": "all", "seed": 1, "sizes": {"train": 50}}, r"ask for 50 examples.*has 40"),
        ({"from": "dev", "seed": 1, "sizes": {"train": 5}}, r"carve.from='dev' is not a split in files"),
        ({"from": "all", "seed": 1, "sizes": {"train": 0}}, r"carve.sizes.train=0 must be a positive integer"),
        ({"from": "all", "seed": 1, "sizes": {"a": None, "b": None}}, r"at most one split may take the rest"),
        ({"from": "all", "sizes": {"train": 5}}, r"must have exactly the keys from, seed and sizes"),
    ],
)
def test_bad_carves_are_errors_naming_the_key(tmp_path: Path, carve: dict, message: str) -> None:
    write_qa(tmp_path / "qa.jsonl")
    with pytest.raises((ValueError, DataFormatError), match=message):
        read_split(qa_spec(tmp_path, carve=carve, eval_splits=["train"]), "train")


def test_alpaca_template_drops_the_input_section_when_the_input_is_empty(compose_config, shared_data: Path) -> None:
    spec = TaskSpec.from_config(compose_config("task=alpaca", f"paths.data_dir={shared_data}").task)
    _, data = load_task(spec)
    assert len(data["train"]) == 1800 and len(data["test"]) == 200
    with_input = next(e for e in data["train"] if e["input"].strip())
    without = next(e for e in data["train"] if not e["input"].strip())
    prompt = spec.prompt_spec()
    assert f"### Input:\n{with_input['input']}\n\n### Response:\n" in render(prompt, with_input)
    assert "### Input:" not in render(prompt, without)
    assert render(prompt, without).endswith(f"### Instruction:\n{without['context']}\n\n### Response:\n")


def test_an_empty_response_or_a_missing_field_is_an_error_naming_the_record(tmp_path: Path) -> None:
    (tmp_path / "qa.jsonl").write_text('{"q": "a?", "a": "b"}\n{"q": "c?", "a": "  "}\n')
    with pytest.raises(DataFormatError, match=r"qa.jsonl, line 2: the target is empty"):
        read_split(qa_spec(tmp_path, carve=None, files={"validation": "qa.jsonl"}, eval_splits=["validation"]), "validation")
    (tmp_path / "qa.jsonl").write_text('{"q": "a?", "a": "b"}\n{"q": "c?"}\n')
    with pytest.raises(DataFormatError, match=r"qa.jsonl, line 2: no key 'a' \(field 'target'\)"):
        read_split(qa_spec(tmp_path, carve=None, files={"validation": "qa.jsonl"}, eval_splits=["validation"]), "validation")


def test_a_task_without_a_training_split_says_how_to_carve_one(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "regime=finetune", "task=lambada", f"paths.data_dir={tmp_path}", "model=gpt-nano")
    # Hydra wraps the DataModule's ValueError in its InstantiationException, keeping the message
    with pytest.raises(Exception, match=r"task 'lambada' has no 'train' split to fine-tune on.*task.carve="):
        build_all(cfg)


# ----------------------------------------------------------------------------- runs


@pytest.mark.slow  # ~18 s of training: make test stays within its ten minutes
def test_a_tiny_model_tuned_on_alpaca_lowers_held_out_response_perplexity(tmp_path: Path, shared_data: Path) -> None:
    cfg = make_cfg(
        tmp_path, "regime=finetune", "task=alpaca", f"paths.data_dir={shared_data}", "model=gpt-nano",
        "model.block_size=128", "++task.train_limit=96", "task.carve.sizes={train: 1800, test: 24}",
        "task.generation.samples=0", "regime.module.lr=3e-3", "trainer.max_steps=30", "trainer.max_epochs=-1",
        "trainer.val_check_interval=30", "trainer.check_val_every_n_epoch=null",
        "regime.batch_size=16", "regime.global_batch_size=16", "regime.generate.datamodule.pack=true",
    )
    datamodule, module, trainer = build_all(cfg)
    before = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    trainer.fit(module, datamodule=datamodule)
    after = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    assert datamodule.num_train_examples == 96 and datamodule.truncated_responses > 0  # long answers, cut
    assert after["val/ppl"] < before["val/ppl"] / 4, (before, after)  # ~9x on 2 cores
    assert after["val/loss"] == pytest.approx(torch.log(torch.tensor(after["val/ppl"])).item(), rel=1e-4)


def test_fine_tuned_and_prompted_rows_of_one_task_share_one_report_table(tmp_path: Path, capsys) -> None:
    write_qa(tmp_path / "qa.jsonl")
    tuned = train(make_cfg(tmp_path / "tuned", "regime=finetune", *QA_TASK, f"task.data_dir={tmp_path}"))
    prompted = train(make_cfg(tmp_path / "prompted", "regime=one_shot", *QA_TASK, f"task.data_dir={tmp_path}"))
    assert {"val/exact_match", "val/f1", "val/ppl", "val/loss"} <= set(tuned)
    assert {"val/exact_match", "val/f1", "val/ppl"} <= set(prompted)
    rows = read_results(tmp_path / "tuned" / "run" / "results.jsonl")
    assert {(r["regime"], r["n_train_examples"], r["split"]) for r in rows} == {("finetune", 30, "test")}
    predictions = [json.loads(line) for line in (tmp_path / "tuned" / "run" / "predictions.jsonl").open()]
    assert len(predictions) == 10 and all("generation" in p for p in predictions)
    report_main([str(tmp_path / "tuned"), str(tmp_path / "prompted"), "--metric", "exact_match", "--out", str(tmp_path / "report")])
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("| task "))
    assert [cell.strip() for cell in header.split("|")[1:-1]][-2:] == ["finetune (N=30)", "one_shot"]
    (row,) = [line for line in lines if line.startswith("| triviaqa ")]  # one row holds both regimes
    assert [cell.strip() for cell in row.split("|")[1:-1]][:4] == ["triviaqa", "test", "exact_match", "gpt-nano"]
    assert len(row.split("|")) == len(header.split("|"))
    assert (tmp_path / "report" / "plots" / "triviaqa.png").is_file()
    report = (tmp_path / "report" / "report.md").read_text()
    wrong = sum(not p["correct"] for p in predictions)
    assert f"- {tmp_path / 'tuned' / 'run'}: triviaqa finetune, 10 examples, {wrong} wrong" in report
