"""Kind ``generation``: its readers, settings, answer matching, greedy decoding and rolling windows.

Where lm-evaluation-harness defines the behaviour (LAMBADA's split into context and last word,
``exact_match``'s options, the rolling token windows) the test runs lm-eval's own function.
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from lm_eval.api.metrics import exact_match_hf_evaluate
from lm_eval.utils import apply_template, get_rolling_token_windows, make_disjoint_window

from gptlab.cli.train import train
from gptlab.data.generative import GenerativeDataModule
from gptlab.data.rolling import rolling_windows
from gptlab.data.sources import load_split
from gptlab.data.sources.base import DataFormatError
from gptlab.data.tokenizer import EOT_ID, get_tokenizer
from gptlab.model.greedy import greedy_until
from gptlab.report.predictions import read_predictions
from gptlab.schema import ConfigError, validate_config
from gptlab.tasks.answers import answer_end, answer_scores, cut_answer, token_f1
from gptlab.tasks.spec import GenerationSpec, TaskSpec
from tests.test_train import make_cfg


def generation_spec(data_dir: Path, **overrides) -> TaskSpec:
    values = {
        "name": "qa", "kind": "generation", "format": "jsonl", "data_dir": str(data_dir),
        "files": {"validation": "qa.jsonl"}, "fields": {"context": "q", "target": "a", "aliases": "more"},
        "metrics": ["exact_match", "f1"], "prompt": {"template": "{context}"},
    }
    return TaskSpec.from_config({**values, **overrides})


def write_lines(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# ----------------------------------------------------------------------------- reading


def test_lambada_reader_splits_passages_as_lm_eval(compose_config, shared_data: Path) -> None:
    cfg = compose_config("task=lambada", f"paths.data_dir={shared_data}")
    examples = load_split(TaskSpec.from_config(cfg.task), "test")
    assert len(examples) == 5153
    lines = (shared_data / "lambada" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    for example, line in zip(examples[:1000], lines):  # (Jinja takes 2 ms a passage)
        doc = json.loads(line)
        assert example["context"] == apply_template("{{text.split(' ')[:-1]|join(' ')}}", doc)
        assert " " + example["targets"][0] == apply_template("{{' '+text.split(' ')[-1]}}", doc)


def test_triviaqa_targets_are_the_answer_then_its_aliases(compose_config, shared_data: Path) -> None:
    cfg = compose_config("task=triviaqa", f"paths.data_dir={shared_data}")
    examples = load_split(TaskSpec.from_config(cfg.task), "validation")
    first = json.loads((shared_data / "triviaqa" / "validation_subset.jsonl").open().readline())
    assert len(examples) == 3000
    assert examples[0]["context"] == first["context"]
    assert examples[0]["targets"] == list(dict.fromkeys([first["answer"], *first["aliases"]]))


@pytest.mark.parametrize(
    "record, message",
    [
        ({"q": "Q?", "a": "", "more": []}, r"qa.jsonl, line 2: the target is empty"),
        ({"q": "Q?", "a": "x", "more": ["y", "  "]}, r"qa.jsonl, line 2: the alias 2 is empty"),
        ({"q": "Q?", "a": "x", "more": ["y", 3]}, r"qa.jsonl, line 2: field 'aliases' is \['y', 3\], not a list of strings"),
        ({"q": "Q?", "more": []}, r"qa.jsonl, line 2: no key 'a' \(field 'target'\)"),
        ({"q": "Q?", "a": 7, "more": []}, r"qa.jsonl, line 2: field 'target' is 7, not a string"),
    ],
)
def test_bad_generation_examples_name_file_and_line(tmp_path: Path, record: dict, message: str) -> None:
    write_lines(tmp_path / "qa.jsonl", [{"q": "Fine?", "a": "yes", "more": []}, record])
    with pytest.raises(DataFormatError, match=message):
        load_split(generation_spec(tmp_path), "validation")


def test_a_lambada_line_without_text_names_file_and_line(tmp_path: Path) -> None:
    write_lines(tmp_path / "test.jsonl", [{"text": "a b c"}, {"passage": "a b"}])
    spec = TaskSpec.from_config(
        {"name": "lam", "kind": "generation", "format": "last_word_jsonl", "data_dir": str(tmp_path),
         "files": {"test": "test.jsonl"}, "metrics": ["acc"]}
    )
    with pytest.raises(DataFormatError, match=r"test.jsonl, line 2: expected an object with a string \"text\""):
        load_split(spec, "test")


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "override, message",
    [
        ("task.generation.max_gen_toks=0", r"task.generation.max_gen_toks=0: must be >= 1"),
        ("task.generation.max_gen_toks=-3", r"task.generation.max_gen_toks=-3: must be >= 1"),
        ("task.generation.max_gen_toks=2.5", r"task.generation.max_gen_toks=2.5: must be an integer"),
        ("task.generation.until=stop", r"task.generation.until='stop' must be a list of non-empty strings"),
        ("task.generation.until=[1,2]", r"task.generation.until=\[1, 2\] must be a list of non-empty strings"),
        ("+task.generation.stop=[x]", r"unknown key\(s\) task.generation.\['stop'\]"),
        ("task.generation.ignore_case=maybe", r"task.generation.ignore_case='maybe' must be true or false"),
    ],
)
def test_bad_generation_settings_are_config_errors_naming_the_key(compose_config, override: str, message: str) -> None:
    cfg = compose_config("task=triviaqa", "regime=zero_shot", override)
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)


def test_max_gen_toks_must_leave_room_for_a_prompt(compose_config) -> None:
    cfg = compose_config("task=triviaqa", "regime=zero_shot", "model=gpt-nano", "task.generation.max_gen_toks=256")
    with pytest.raises(ValueError, match=r"max_gen_toks=256 leaves no room for a prompt in block_size=256"):
        GenerativeDataModule(cfg.task, block_size=256, batch_size=4)


def test_long_prompts_keep_their_last_block_size_minus_max_gen_toks_tokens(tmp_path: Path) -> None:
    long_context = " ".join(f"word{i}" for i in range(200)) + "\nAnswer:"
    write_lines(tmp_path / "qa.jsonl", [{"q": long_context, "a": "x", "more": []}, {"q": "Short?", "a": "y", "more": []}])
    datamodule = GenerativeDataModule(
        asdict(generation_spec(tmp_path, generation={"max_gen_toks": 16})), block_size=64, batch_size=2
    )
    datamodule.setup()
    long, short = datamodule.requests("validation")
    encoded = get_tokenizer().encode_ordinary(long_context)
    assert long.prompt == encoded[-48:] and long.truncated and not short.truncated
    assert datamodule.truncated == {"validation": 1}


# ----------------------------------------------------------------------------- matching


def random_answer(rng: random.Random) -> str:
    words = ["The", "the", "a", "An", "Paris", "paris", "U.S.", "us", "1984", "rock'n'roll", "", " "]
    return rng.choice(["", " ", "  "]).join(rng.choice(words) for _ in range(rng.randint(0, 4))) + rng.choice(["", ".", "!", " "])


@pytest.mark.parametrize("ignore_case", [False, True])
@pytest.mark.parametrize("ignore_punctuation", [False, True])
@pytest.mark.parametrize("ignore_numbers", [False, True])
def test_exact_match_equals_lm_evals_with_its_options(ignore_case: bool, ignore_punctuation: bool, ignore_numbers: bool) -> None:
    rng = random.Random(0)
    options = dict(ignore_case=ignore_case, ignore_punctuation=ignore_punctuation, ignore_numbers=ignore_numbers)
    rules = GenerationSpec(ignore_articles=False, collapse_whitespace=False, regexes_to_ignore=("^ ",), **options)
    for _ in range(400):
        prediction, targets = random_answer(rng).strip(), [random_answer(rng) for _ in range(rng.randint(1, 3))]
        expected = exact_match_hf_evaluate([prediction] * len(targets), targets, regexes_to_ignore=["^ "], **options)
        ours = answer_scores(prediction, targets, rules)["exact_match"]
        assert ours == float(expected["exact_match"] > 0), (prediction, targets)


def test_squad_rules_drop_articles_and_extra_whitespace() -> None:
    rules = GenerationSpec()  # the defaults: SQuAD's and TriviaQA's official normalisation
    assert answer_scores("  The  Eiffel tower. ", ["eiffel Tower"], rules) == {"exact_match": 1.0, "f1": 1.0}
    scores = answer_scores("the tower of Paris", ["Eiffel Tower", "tower in paris"], rules)
    assert scores["exact_match"] == 0.0 and scores["f1"] == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))


def test_token_f1_is_squads() -> None:
    assert token_f1("a b c", "a b d") == pytest.approx(2 / 3)
    assert token_f1("a a b", "a b b") == pytest.approx(2 / 3)  # words are bags: a and b match once each
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0 and token_f1("x", "y") == 0.0


def test_answer_end_is_the_first_stop_string_or_the_first_words_end() -> None:
    rules = GenerationSpec(until=("\n", "."))
    assert cut_answer(" Paris, France.\nNext", rules) == " Paris, France"
    assert answer_end(" Paris", rules) is None
    assert cut_answer(" Paris<|endoftext|>more", rules) == " Paris"  # end of text always stops
    words = GenerationSpec(first_word=True)
    assert answer_end(" Paris", words) is None and cut_answer(" Paris is", words) == " Paris"


# ----------------------------------------------------------------------------- decoding


def test_generations_are_the_same_for_any_batch_size_and_never_too_long(tiny_gpt) -> None:
    model = tiny_gpt(block_size=64, vocab_size=50304, eval_mode=True)
    with torch.no_grad():  # position-dependent, well-separated logits: varied tokens, no near ties
        model.wte.weight.mul_(30)
        model.wpe.weight.mul_(30)
    rng = random.Random(0)
    prompts = [[rng.randrange(50000) for _ in range(rng.randint(1, 12))] for _ in range(7)]

    def run(batch_size: int, max_new: int, end=lambda text: None) -> list[list[int]]:
        out = []
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start: start + batch_size]
            width = max(map(len, chunk))
            ids = torch.tensor([[0] * (width - len(p)) + p for p in chunk])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
            out += greedy_until(model, ids, mask, max_new, end)
        return out

    alone = run(1, 10)
    assert run(3, 10) == alone == run(7, 10)
    assert all(len(tokens) == 10 for tokens in alone)  # no stop: exactly max_new_tokens
    assert len({tuple(t) for t in alone}) > 3
    decode = get_tokenizer().decode
    stop = decode([alone[0][2]])  # a string the first row writes by its third token

    def ends(text: str) -> int | None:
        return text.find(stop) if stop in text else None

    stopped = run(2, 10, ends)
    for tokens, full in zip(stopped, alone):  # each row stops at the first token that shows `stop`
        first = next((n for n in range(1, 11) if stop in decode(full[:n])), 10)
        assert tokens == full[:first]
    assert len(stopped[0]) <= 3 and stopped == run(7, 10, ends)


def test_greedy_until_refuses_prompts_that_leave_no_room(tiny_gpt) -> None:
    model = tiny_gpt(block_size=16, vocab_size=50304)
    ids = torch.zeros((1, 12), dtype=torch.long)
    with pytest.raises(ValueError, match="do not fit block_size=16"):
        greedy_until(model, ids, torch.ones_like(ids), 8, lambda text: None)


# ----------------------------------------------------------------------------- rolling windows


@pytest.mark.parametrize("length, block_size", [(1, 8), (7, 8), (8, 8), (9, 8), (33, 8), (100, 16)])
def test_rolling_windows_are_lm_evals(length: int, block_size: int) -> None:
    tokens = list(range(1000, 1000 + length))
    ours = rolling_windows(0, "x y", tokens, block_size)
    theirs = [
        make_disjoint_window(pair)
        for pair in get_rolling_token_windows(tokens, prefix_token=EOT_ID, max_seq_len=block_size, context_len=1)
    ]
    assert len(ours) == len(theirs)
    for window, (context, continuation) in zip(ours, theirs):
        # lm-eval's model reads (context + continuation)[-(block_size + 1):][:-1] and scores the continuation
        whole = (context + continuation)[-(block_size + 1):]
        assert window.tokens == whole[:-1] and window.targets == whole[1:]
        assert window.targets[len(window.targets) - window.scored:] == continuation
    assert sum(w.scored for w in ours) == length and [w.words for w in ours][:1] == [2]


# ----------------------------------------------------------------------------- runs


def test_few_shot_generation_run_writes_results_and_predictions(tmp_path: Path) -> None:
    records = [{"q": f"Question {i}: {w}?\nAnswer:", "a": w, "more": [w.upper()]} for i, w in enumerate(string.ascii_lowercase[:12])]
    write_lines(tmp_path / "qa.jsonl", records)
    cfg = make_cfg(
        tmp_path, "regime=few_shot", "regime.k=2", "task=triviaqa", f"task.data_dir={tmp_path}",
        "task.files.validation=qa.jsonl", "task.carve=null", "task.eval_splits=[validation]",
        "task.fields={context: q, target: a, aliases: more}",
        "task.generation.max_gen_toks=4", "regime.batch_size=5", "regime.global_batch_size=5",
    )
    metrics = train(cfg)
    assert set(metrics) == {"val/exact_match", "val/f1", "val/n_truncated"}
    rows = read_predictions(tmp_path / "run")
    assert [r["index"] for r in rows] == list(range(12)) and all(r["k"] == 2 for r in rows)
    assert all(len(get_tokenizer().encode_ordinary(r["generation"])) <= 4 for r in rows)
    assert metrics["val/exact_match"] == pytest.approx(sum(r["correct"] for r in rows) / 12)
    assert rows[0]["targets"] == ["a", "A"]
