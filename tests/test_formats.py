"""Task data readers (``gptlab.data.sources``) and the task YAMLs.

The real benchmark files must give the official counts and the MANIFEST's label distributions; bad
input must fail before training with a message naming the file and line.
"""

from __future__ import annotations

import json
import logging
import string
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from gptlab.data.sources import FORMATS, DataFormatError, load_split, load_task
from gptlab.tasks.spec import TaskSpec

ROOT = Path(__file__).resolve().parents[1]
LOCAL_TASKS = ("sst2", "cola", "mrpc", "stsb", "rte", "conll2003", "storycloze", "copa", "arc_easy")
HUB_TASKS = ("qqp", "mnli", "qnli", "race")
METRICS = {
    "sst2": ["acc"], "cola": ["mcc"], "mrpc": ["acc", "f1"], "qqp": ["acc", "f1"],
    "stsb": ["pearson", "spearman"], "mnli": ["acc"], "qnli": ["acc"], "rte": ["acc"],
    "conll2003": ["precision", "recall", "f1"], "storycloze": ["acc"], "copa": ["acc"],
    "arc_easy": ["acc"], "race": ["acc"],
}
EXAMPLE_FIELDS = {
    "classification": {"text"},
    "entailment": {"text_a", "text_b"},
    "similarity": {"text_a", "text_b"},
    "multiple_choice": {"context"},
    "multiple_input": {"choice"},  # rendered once per choice, each bound to {choice}
    "ner": {"tokens"},
    "generation": {"context", "input"},
}


def yaml_spec(name: str, data_dir: Path) -> TaskSpec:
    """``tasks/<name>.yaml`` with its data_dir set (no Hydra needed for one task node)."""
    node = OmegaConf.load(ROOT / "tasks" / f"{name}.yaml")
    node.data_dir = str(data_dir)
    return TaskSpec.from_config(node)


@pytest.fixture(scope="module")
def real(shared_data: Path):
    """name -> load_task of that task's real files, each read once per module."""
    cache: dict[str, tuple[TaskSpec, dict[str, list[dict[str, Any]]]]] = {}

    def load(name: str) -> tuple[TaskSpec, dict[str, list[dict[str, Any]]]]:
        if name not in cache:
            cache[name] = load_task(yaml_spec(name, shared_data / name))
        return cache[name]

    return load


# ----------------------------------------------------------------------------- the real files

OFFICIAL_COUNTS = {
    "sst2": {"train": 67_349, "validation": 872},
    "rte": {"train": 2_490, "validation": 277},
    "mrpc": {"train": 3_668, "validation": 408},
    "cola": {"train": 8_551, "validation": 1_043},
    "stsb": {"train": 5_749, "validation": 1_500},
    "conll2003": {"train": 14_041, "validation": 3_250, "test": 3_453},
    "storycloze": {"train": 1_871, "validation": 1_871},
    "copa": {"train": 500, "validation": 500},
    "arc_easy": {"train": 2_251, "validation": 570, "test": 2_376},
}
# MANIFEST label distributions, as label ids of the task YAMLs
LABEL_COUNTS = {
    "sst2": {"train": {0: 29_780, 1: 37_569}, "validation": {0: 428, 1: 444}},
    "rte": {"train": {0: 1_249, 1: 1_241}, "validation": {0: 146, 1: 131}},
    "mrpc": {"train": {1: 2_474, 0: 1_194}, "validation": {1: 279, 0: 129}},
    "cola": {"train": {1: 6_023, 0: 2_528}, "validation": {1: 719, 0: 324}},
    "storycloze": {"train": {0: 962, 1: 909}, "validation": {0: 960, 1: 911}},
    "copa": {"train": {0: 250, 1: 250}, "validation": {0: 250, 1: 250}},
}


@pytest.mark.data
@pytest.mark.parametrize("name", LOCAL_TASKS)
def test_real_files_give_the_official_counts(real, name: str) -> None:
    spec, data = real(name)
    assert {split: len(examples) for split, examples in data.items()} == OFFICIAL_COUNTS[name]
    for split, counts in LABEL_COUNTS.get(name, {}).items():
        assert Counter(e["label"] for e in data[split]) == counts, split


@pytest.mark.data
def test_glue_tsv_keeps_raw_quotes_and_drops_the_mrpc_bom(real) -> None:
    _, mrpc = real("mrpc")  # "Quality" is found although the file's first bytes are a BOM
    first = mrpc["train"][0]
    assert first["text_a"].startswith('Amrozi accused his brother, whom he called "the witness", of')
    assert first["label"] == 1
    assert not any("\ufeff" in e["text_a"] + e["text_b"] for e in mrpc["train"])
    _, cola = real("cola")  # header-less: fields are column indices
    assert cola["train"][0] == {
        "text": "Our friends won't buy this analysis, let alone the next one we propose.", "label": 1,
    }


@pytest.mark.data
def test_stsb_labels_are_floats_in_0_5(real) -> None:
    spec, data = real("stsb")
    assert spec.regression and spec.num_labels == 1
    for split, mean in (("train", 2.701), ("validation", 2.364)):
        labels = [e["label"] for e in data[split]]
        assert all(isinstance(x, float) and 0.0 <= x <= 5.0 for x in labels)
        assert sum(labels) / len(labels) == pytest.approx(mean, abs=5e-4)


@pytest.mark.data
def test_conll2003_sentences_and_iob1_tags(real) -> None:
    spec, data = real("conll2003")
    assert spec.labels == ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    first = data["train"][0]
    assert first["tokens"] == ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."]
    tags = [spec.labels[t] for t in first["tags"]]
    assert tags == ["I-ORG", "O", "I-MISC", "O", "O", "O", "I-MISC", "O", "O"]
    tags = Counter(spec.labels[t] for e in data["train"] for t in e["tags"])
    assert tags == {
        "B-LOC": 11, "B-MISC": 37, "B-ORG": 24, "I-LOC": 8_286, "I-MISC": 4_556, "I-ORG": 10_001,
        "I-PER": 11_128, "O": 169_578,
    }
    tokens = {split: sum(len(e["tokens"]) for e in data[split]) for split in data}
    assert tokens == {"train": 203_621, "validation": 51_362, "test": 46_435}
    assert all(len(e["tokens"]) == len(e["tags"]) for split in data.values() for e in split)


@pytest.mark.data
def test_storycloze_joins_the_story_and_counts_endings_from_0(real) -> None:
    _, data = real("storycloze")
    first = data["train"][0]
    assert first["context"] == (
        "Rick grew up in a troubled household. He never found good support in family, and turned to "
        "gangs. It wasn't long before Rick got shot in a robbery. The incident caused him to turn a "
        "new leaf."
    )
    assert first["choices"] == ["He is happy now.", "He joined a gang."]
    assert first["label"] == 0


@pytest.mark.data
def test_copa_context_carries_the_connective(real) -> None:
    _, data = real("copa")
    assert data["train"][0] == {
        "context": "My body cast a shadow over the grass because",
        "choices": ["the sun was rising.", "the grass was cut."],
        "label": 0,
    }
    for examples in data.values():  # the MANIFEST: 250 cause / 250 effect per file
        connectives = Counter(e["context"].rsplit(" ", 1)[1] for e in examples)
        assert connectives == {"because": 250, "therefore": 250}
        assert all(len(e["choices"]) == 2 and not e["context"].endswith(". because") for e in examples)


@pytest.mark.data
def test_arc_easy_has_3_to_5_choices(real) -> None:
    _, data = real("arc_easy")
    expected = {
        "train": {4: 2_241, 3: 6, 5: 4}, "validation": {4: 567, 5: 2, 3: 1}, "test": {4: 2_365, 3: 7, 5: 4},
    }
    for split, examples in data.items():
        assert Counter(len(e["choices"]) for e in examples) == expected[split]
        assert all(0 <= e["label"] < len(e["choices"]) for e in examples)
    assert data["train"][0]["label"] == 1  # answerKey "B"


# ----------------------------------------------------------------------------- small files


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def tsv_spec(tmp_path: Path, train: str | bytes, **overrides: Any) -> TaskSpec:
    write(tmp_path / "train.tsv", train)
    values: dict[str, Any] = {
        "name": "tiny", "kind": "classification", "format": "glue_tsv", "data_dir": str(tmp_path),
        "files": {"train": "train.tsv"}, "fields": {"text": "sentence", "label": "label"},
        "labels": ["negative", "positive"], "eval_splits": [],
    }
    return TaskSpec(**{**values, **overrides})


def test_bom_header_and_label_names_or_indices(tmp_path: Path) -> None:
    spec = tsv_spec(tmp_path, "\ufefflabel\tsentence\n1\ta \"quoted\" word\npositive\tb\n\n0\tc\n")
    assert load_split(spec, "train") == [
        {"text": 'a "quoted" word', "label": 1}, {"text": "b", "label": 1}, {"text": "c", "label": 0},
    ]


def test_missing_file_names_path_and_format(tmp_path: Path) -> None:
    spec = tsv_spec(tmp_path, "sentence\tlabel\na\t0\n", files={"train": "nope.tsv"})
    with pytest.raises(DataFormatError, match=r"nope\.tsv: no such file.*format 'glue_tsv'"):
        load_task(spec)


def test_unknown_format_lists_the_valid_ones(tmp_path: Path) -> None:
    spec = tsv_spec(tmp_path, "sentence\tlabel\na\t0\n", format="tsv")
    with pytest.raises(DataFormatError, match="unknown format 'tsv'; valid formats: " + ", ".join(FORMATS)):
        load_task(spec)


def test_missing_column_lists_the_columns_found(tmp_path: Path) -> None:
    spec = tsv_spec(tmp_path, "sentence\tlabel\na\t0\n", fields={"text": "text", "label": "label"})
    with pytest.raises(DataFormatError, match=r"train\.tsv: no column 'text' .*\['sentence', 'label'\]"):
        load_task(spec)


def test_label_outside_the_label_set_names_file_line_and_labels(tmp_path: Path) -> None:
    spec = tsv_spec(tmp_path, "sentence\tlabel\na\t0\nb\tneutral\n")
    expected = r"train\.tsv, line 3: label 'neutral' is not one of the labels \['negative', 'positive'\]"
    with pytest.raises(DataFormatError, match=expected):
        load_task(spec)
    spec = tsv_spec(tmp_path, "sentence\tlabel\na\t0\nb\t2\n")  # an index, but out of range
    with pytest.raises(DataFormatError, match=r"train\.tsv, line 3: label '2'"):
        load_task(spec)


def test_empty_split_names_the_file(tmp_path: Path) -> None:
    spec = tsv_spec(tmp_path, "sentence\tlabel\n")
    with pytest.raises(DataFormatError, match=r"train\.tsv: no examples in split 'train'"):
        load_task(spec)


def test_malformed_row_names_file_and_line(tmp_path: Path) -> None:
    spec = tsv_spec(tmp_path, "sentence\tlabel\na\t0\nb\t1\textra\n")
    with pytest.raises(DataFormatError, match=r"train\.tsv, line 3: 3 tab-separated columns, expected 2"):
        load_task(spec)


def test_undecodable_bytes_name_file_and_line(tmp_path: Path) -> None:
    spec = tsv_spec(tmp_path, b"sentence\tlabel\na\t0\nb\xff\t1\n")
    with pytest.raises(DataFormatError, match=r"train\.tsv, line 3: bytes b'\\xff' are not UTF-8"):
        load_task(spec)


def test_header_less_tsv_uses_column_indices(tmp_path: Path) -> None:
    columns = {"options": {"header": False}, "fields": {"text": 3, "label": 1}}
    spec = tsv_spec(tmp_path, "x\t1\t\ta\nx\t0\t*\tb\n", **columns)
    assert load_split(spec, "train") == [{"text": "a", "label": 1}, {"text": "b", "label": 0}]
    bad = tsv_spec(tmp_path, "x\t1\t\ta\n", options={"header": False}, fields={"text": 4, "label": 1})
    with pytest.raises(DataFormatError, match="column 4, but the file has 4 columns"):
        load_task(bad)


def test_labels_null_reads_the_sorted_label_set(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path / "dev.tsv", "sentence\tlabel\nd\tb\n")
    spec = tsv_spec(
        tmp_path, "sentence\tlabel\na\tb\nb\ta\nc\tc\n", labels=None,
        files={"train": "train.tsv", "validation": "dev.tsv"}, eval_splits=["validation"],
    )
    with caplog.at_level(logging.INFO, logger="gptlab.data.sources"):
        resolved, data = load_task(spec)
    assert resolved.labels == ["a", "b", "c"] and resolved.num_labels == 3
    assert [e["label"] for e in data["train"]] == [1, 0, 2] and data["validation"][0]["label"] == 1
    assert "labels: null" in caplog.text and "train.tsv" in caplog.text
    assert load_split(spec, "validation") == data["validation"]
    numeric = tsv_spec(tmp_path, "sentence\tlabel\na\t10\nb\t2\nc\t1\n", labels=None)
    assert load_task(numeric)[0].labels == ["1", "2", "10"]  # integers sort as numbers


def test_train_limit_is_a_seeded_subset(tmp_path: Path) -> None:
    rows = "".join(f"s{i}\t{i % 2}\n" for i in range(50))
    spec = tsv_spec(tmp_path, "sentence\tlabel\n" + rows, train_limit=10)
    texts = lambda seed: [e["text"] for e in load_task(spec, seed=seed)[1]["train"]]  # noqa: E731
    first = texts(1234)
    assert len(first) == 10 and first == texts(1234) and first != texts(7)
    assert first == sorted(first, key=lambda t: int(t[1:]))  # file order kept
    with pytest.raises(DataFormatError, match="train_limit=51.*has 50 examples"):
        load_task(tsv_spec(tmp_path, "sentence\tlabel\n" + rows, train_limit=51))
    with pytest.raises(ValueError, match="TaskSpec: train_limit=0: must be >= 1"):  # refused before any read
        tsv_spec(tmp_path, "sentence\tlabel\n" + rows, train_limit=0)


def conll_spec(tmp_path: Path, text: str) -> TaskSpec:
    write(tmp_path / "train.txt", text)
    return TaskSpec(
        name="ner", kind="ner", format="conll", data_dir=str(tmp_path), files={"train": "train.txt"},
        fields={"tokens": 0, "tags": 3}, labels=["O", "I-PER"], eval_splits=[],
    )


def test_conll_sentences_docstart_and_bad_tag_line(tmp_path: Path) -> None:
    text = "-DOCSTART- -X- -X- O\n\nJohn NNP I-NP I-PER\nruns VBZ I-VP O\n\n\nHe PRP I-NP O\n"
    assert load_split(conll_spec(tmp_path, text), "train") == [
        {"tokens": ["John", "runs"], "tags": [1, 0]}, {"tokens": ["He"], "tags": [0]},
    ]
    bad_tag = text.replace("runs VBZ I-VP O", "runs VBZ I-VP I-LOC")
    with pytest.raises(DataFormatError, match=r"train\.txt, line 4: tag 'I-LOC' is not one of the labels"):
        load_task(conll_spec(tmp_path, bad_tag))
    with pytest.raises(DataFormatError, match=r"train\.txt, line 7: 3 columns, expected 4"):
        load_task(conll_spec(tmp_path, text.replace("He PRP I-NP O", "He PRP O")))


def mc_spec(tmp_path: Path, fmt: str, name: str, text: str, **overrides: Any) -> TaskSpec:
    write(tmp_path / name, text)
    values: dict[str, Any] = {
        "name": "mc", "kind": "multiple_choice", "format": fmt, "data_dir": str(tmp_path),
        "files": {"train": name}, "eval_splits": [],
    }
    return TaskSpec(**{**values, **overrides})


STORY_HEADER = (
    "InputStoryid,InputSentence1,InputSentence2,InputSentence3,InputSentence4,"
    "RandomFifthSentenceQuiz1,RandomFifthSentenceQuiz2,AnswerRightEnding\n"
)


def test_storycloze_csv_quoting_and_answer_range(tmp_path: Path) -> None:
    ok = STORY_HEADER + 'x,A.,"B, b.",C.,D.,E1.,E2.,2\n'
    assert load_split(mc_spec(tmp_path, "storycloze_csv", "s.csv", ok), "train") == [
        {"context": "A. B, b. C. D.", "choices": ["E1.", "E2."], "label": 1},
    ]
    with pytest.raises(DataFormatError, match=r"s\.csv, line 3: answer '3' is out of range for 2 choices"):
        load_task(mc_spec(tmp_path, "storycloze_csv", "s.csv", ok + "y,A.,B.,C.,D.,E1.,E2.,3\n"))
    with pytest.raises(DataFormatError, match=r"s\.csv, line 2: 7 comma-separated columns, expected 8"):
        load_task(mc_spec(tmp_path, "storycloze_csv", "s.csv", STORY_HEADER + "x,A.,B.,C.,D.,E1.,2\n"))


COPA_ITEM = (
    '  <item id="{i}" asks-for="{q}" most-plausible-alternative="{a}">\n'
    "    <p>The man turned on the faucet.</p>\n    <a1>The toilet filled.</a1>\n"
    "    <a2>Water flowed out.</a2>\n  </item>\n"
)


def test_copa_xml_effect_and_errors(tmp_path: Path) -> None:
    xml = '<?xml version="1.0" encoding="UTF-8"?>\n<copa-corpus>\n{}</copa-corpus>\n'
    ok = xml.format(COPA_ITEM.format(i=1, q="effect", a=2))
    assert load_split(mc_spec(tmp_path, "copa_xml", "c.xml", ok), "train") == [{
        "context": "The man turned on the faucet therefore",
        "choices": ["the toilet filled.", "water flowed out."],
        "label": 1,
    }]
    bad_answer = xml.format(COPA_ITEM.format(i=1, q="cause", a=1) + COPA_ITEM.format(i=2, q="cause", a=3))
    with pytest.raises(DataFormatError, match=r"c\.xml, line 8: answer '3' is out of range"):
        load_task(mc_spec(tmp_path, "copa_xml", "c.xml", bad_answer))
    with pytest.raises(DataFormatError, match=r"c\.xml, line 4: malformed XML"):
        load_task(mc_spec(tmp_path, "copa_xml", "c.xml", ok.replace("</p>", "</q>")))


def arc_line(key: str, labels: str = "ABCD") -> str:
    choices = [{"text": f"t{label}", "label": label} for label in labels]
    return json.dumps({"id": "q", "question": {"stem": "Why?", "choices": choices}, "answerKey": key}) + "\n"


def test_arc_jsonl_letters_digits_and_errors(tmp_path: Path) -> None:
    text = arc_line("C") + arc_line("2", "1234") + arc_line("E", "ABCDE")
    examples = load_split(mc_spec(tmp_path, "arc_jsonl", "a.jsonl", text), "train")
    assert [(len(e["choices"]), e["label"]) for e in examples] == [(4, 2), (4, 1), (5, 4)]
    assert examples[1] == {"context": "Why?", "choices": ["t1", "t2", "t3", "t4"], "label": 1}
    with pytest.raises(DataFormatError, match=r"a\.jsonl, line 2: answer 'E' is not one of the choice label"):
        load_task(mc_spec(tmp_path, "arc_jsonl", "a.jsonl", arc_line("A") + arc_line("E")))
    with pytest.raises(DataFormatError, match=r"a\.jsonl, line 2: not valid JSON"):
        load_task(mc_spec(tmp_path, "arc_jsonl", "a.jsonl", arc_line("A") + "{oops\n"))


def test_jsonl_generic_fields(tmp_path: Path) -> None:
    rows = [{"q": {"a": "x", "b": "y"}, "y": "neutral"}, {"q": {"a": "z", "b": "w"}, "y": "entailment"}]
    spec = mc_spec(
        tmp_path, "jsonl", "p.jsonl", "".join(json.dumps(r) + "\n" for r in rows), kind="entailment",
        fields={"text_a": "q.a", "text_b": "q.b", "label": "y"}, labels=["entailment", "neutral"],
    )
    assert load_split(spec, "train") == [
        {"text_a": "x", "text_b": "y", "label": 1}, {"text_a": "z", "text_b": "w", "label": 0},
    ]
    missing = mc_spec(
        tmp_path, "jsonl", "p.jsonl", json.dumps(rows[0]) + "\n", kind="entailment",
        fields={"text_a": "q.a", "text_b": "q.c", "label": "y"}, labels=["entailment", "neutral"],
    )
    expected = r"p\.jsonl, line 1: no key 'q\.c' \(field 'text_b'\); keys found: \['q', 'y'\]"
    with pytest.raises(DataFormatError, match=expected):
        load_task(missing)


def test_hub_format_maps_fields_class_names_and_splits(tmp_path: Path) -> None:
    from datasets import ClassLabel, Features, Value

    write(tmp_path / "t.jsonl", '{"s": "good", "y": 0}\n{"s": "bad", "y": 1}\n')
    write(tmp_path / "d.jsonl", '{"s": "fine", "y": 0}\n')
    # The Hub copy orders its classes differently from the task: names, not ids, must decide.
    features = Features({"s": Value("string"), "y": ClassLabel(names=["positive", "negative"])})
    hub = {
        "path": "json", "data_files": {"train": str(tmp_path / "t.jsonl"), "dev": str(tmp_path / "d.jsonl")},
        "features": features, "cache_dir": str(tmp_path / "cache"), "splits": {"validation": "dev"},
        "fields": {"text": "s", "label": "y"},
    }
    spec = TaskSpec(
        name="online", kind="classification", format="hub", hub=hub,
        fields={"text": "unused", "label": "unused"}, labels=["negative", "positive"],
    )
    _, data = load_task(spec)
    assert data == {"train": [{"text": "good", "label": 1}, {"text": "bad", "label": 0}],
                    "validation": [{"text": "fine", "label": 1}]}
    broken = TaskSpec(**{**spec.__dict__, "hub": {**hub, "data_files": str(tmp_path / "nope.jsonl")}})
    with pytest.raises(DataFormatError, match=r"task 'online': datasets\.load_dataset\(.*nope\.jsonl"):
        load_task(broken)


def test_demo_format_dispatches_to_demo_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    import gptlab.data.demo_tasks as demo_tasks

    fake = {"train": [{"text": "a", "label": 1}], "validation": [{"text": "b", "label": "yes"}]}
    monkeypatch.setattr(demo_tasks, "read_demo_split", lambda spec, split: [dict(e) for e in fake[split]])
    spec = TaskSpec(name="demo_x", kind="classification", format="demo", labels=["no", "yes"])
    expected = {"train": [{"text": "a", "label": 1}], "validation": [{"text": "b", "label": 1}]}
    assert load_task(spec)[1] == expected


# ----------------------------------------------------------------------------- the task YAMLs


def labeled_task_names() -> list[str]:
    return sorted(
        p.stem for p in (ROOT / "tasks").glob("*.yaml") if OmegaConf.load(p).get("kind") != "lm"
    )


def test_every_task_of_the_issue_has_a_yaml() -> None:
    assert set(LOCAL_TASKS) | set(HUB_TASKS) <= set(labeled_task_names())


@pytest.mark.parametrize("name", labeled_task_names())
def test_task_yaml_composes_into_a_task_spec(compose_config, name: str) -> None:
    cfg = compose_config(f"task={name}", "paths.data_dir=/srv/shared-data")
    spec = TaskSpec.from_config(cfg.task)
    assert spec.name == name and spec.format in FORMATS
    if name in METRICS:
        assert spec.metrics == METRICS[name]
        assert spec.hub and spec.hub.get("path"), "every benchmark task names its Hub copy"
    if name in LOCAL_TASKS:
        assert spec.data_dir == f"/srv/shared-data/{name}" and spec.format != "hub"
        assert spec.train_split in spec.files and set(spec.eval_splits) <= set(spec.files)
    if name in HUB_TASKS:
        assert spec.format == "hub" and spec.data_dir is None
    if name == "mnli":
        assert spec.eval_splits == ["validation_matched", "validation_mismatched"]
    if spec.prompt is not None:  # the template names only fields of the task's normalised example
        templates = spec.prompt_spec().templates
        used = {f for template in templates for _, f, _, _ in string.Formatter().parse(template) if f}
        assert used <= EXAMPLE_FIELDS[spec.kind], used
        # Alpaca's response follows its template's "### Response:\n" directly (Stanford Alpaca's format)
        assert spec.prompt["target_delimiter"] == ("" if name == "alpaca" else " ")
        assert spec.prompt["fewshot_delimiter"] == "\n\n"
        choices = spec.prompt["choices"]
        if spec.task_kind.label == "choice":  # the example's own answers
            assert choices is None
        elif not spec.regression and spec.labels is not None:
            assert len(choices) == len(spec.labels)
