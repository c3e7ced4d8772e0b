"""Fuzz: seeded, randomly corrupted copies of every supported file format go through the readers.

Every outcome must be a parsed dataset whose examples are well formed (labels in range, finite) or
a ``DataFormatError`` naming the file; never a crash with an unrelated exception.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

from gptlab.data.sources import DataFormatError, load_task, read_split
from gptlab.tasks.spec import TaskSpec

ROOT = Path(__file__).resolve().parents[1]
SEEDS = range(3)

# task yaml -> (file in shared data, lines kept from its start)
REAL_SAMPLES = {
    "sst2": ("sst2/train.tsv", 15),
    "cola": ("cola/train.tsv", 15),
    "stsb": ("stsb/train.tsv", 12),
    "mrpc": ("mrpc/train.tsv", 10),
    "rte": ("rte/train.tsv", 8),
    "conll2003": ("conll2003/train.txt", 40),
    "storycloze": ("storycloze/val.csv", 8),
    "copa": ("copa/dev.xml", 21),  # the header and the first three items
    "arc_easy": ("arc_easy/train.jsonl", 5),
}
CORRUPTIONS: dict[str, Callable[[bytes, random.Random], bytes]] = {}


def corruption(fn: Callable[[bytes, random.Random], bytes]) -> Callable[[bytes, random.Random], bytes]:
    CORRUPTIONS[fn.__name__] = fn
    return fn


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _at(data: bytes, rng: random.Random) -> int:
    return rng.randrange(len(data) + 1)


@corruption
def byte_flips(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if out:
            out[rng.randrange(len(out))] ^= rng.randint(1, 255)
    return bytes(out)


@corruption
def truncated(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data))]


@corruption
def empty(data: bytes, rng: random.Random) -> bytes:
    return b""


def _separator_positions(data: bytes) -> list[int]:
    return [i for i, b in enumerate(data) if b in b"\t,\" <>{}[]:"]


@corruption
def separator_deleted(data: bytes, rng: random.Random) -> bytes:
    i = rng.choice(_separator_positions(data))
    return data[:i] + data[i + 1 :]


@corruption
def separator_duplicated(data: bytes, rng: random.Random) -> bytes:
    i = rng.choice(_separator_positions(data))
    return data[:i] + data[i : i + 1] + data[i:]


@corruption
def nul_bytes(data: bytes, rng: random.Random) -> bytes:
    for _ in range(rng.randint(1, 3)):
        i = _at(data, rng)
        data = data[:i] + b"\x00" + data[i:]
    return data


@corruption
def invalid_utf8(data: bytes, rng: random.Random) -> bytes:
    i = _at(data, rng)
    return data[:i] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x81"]) + data[i:]


@corruption
def windows_1252(data: bytes, rng: random.Random) -> bytes:
    # what a spreadsheet export does: curly quotes and accents as single cp1252 bytes
    i = _at(data, rng)
    return data[:i] + "\u201cna\u00efve\u201d caf\u00e9".encode("cp1252") + data[i:]


@corruption
def shuffled_lines(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    rng.shuffle(lines)
    return b"\n".join(lines)


@corruption
def line_deleted(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    del lines[rng.randrange(len(lines))]
    return b"\n".join(lines)


@corruption
def line_duplicated(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    i = rng.randrange(len(lines))
    return b"\n".join(lines[: i + 1] + lines[i:])


@corruption
def blank_lines(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    for _ in range(rng.randint(1, 3)):
        lines.insert(rng.randrange(len(lines) + 1), rng.choice([b"", b"   ", b"\r"]))
    return b"\n".join(lines)


@corruption
def very_long_line(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    i = rng.randrange(len(lines))
    lines[i] = lines[i] + b"x" * 200_000  # past the csv module's field size limit
    return b"\n".join(lines)


@corruption
def crlf_and_bom(data: bytes, rng: random.Random) -> bytes:
    return b"\xef\xbb\xbf" + data.replace(b"\n", b"\r\n")


@corruption
def deep_nesting(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    lines.insert(rng.randrange(len(lines) + 1), b"[" * 100_000)
    return b"\n".join(lines)


# ----------------------------------------------------------------------------- labelled task formats


def _sample(shared_data: Path, name: str) -> tuple[str, bytes]:
    relative, keep = REAL_SAMPLES[name]
    lines = (shared_data / relative).read_bytes().split(b"\n")[:keep]
    if name == "copa":
        lines.append(b"</copa-corpus>")
    return Path(relative).name, b"\n".join(lines) + b"\n"


def _spec(name: str, data_dir: Path, file: str) -> TaskSpec:
    node = OmegaConf.load(ROOT / "tasks" / f"{name}.yaml")
    node.data_dir = str(data_dir)
    spec = TaskSpec.from_config(node)
    return dataclasses.replace(spec, files={"train": file}, eval_splits=[], train_limit=None)


def _generic_jsonl_spec(data_dir: Path) -> tuple[TaskSpec, bytes]:
    rows = [{"review": {"body": f"text {i} \u00e9"}, "stars": ["bad", "good"][i % 2]} for i in range(8)]
    spec = TaskSpec(
        name="generic", kind="classification", format="jsonl", data_dir=str(data_dir),
        files={"train": "generic.jsonl"}, fields={"text": "review.body", "label": "stars"},
        labels=None, eval_splits=[],
    )
    return spec, "".join(json.dumps(r) + "\n" for r in rows).encode()


def check_examples(spec: TaskSpec, examples: list[dict[str, Any]]) -> None:
    """What any parsed example of ``spec.kind`` must satisfy, whatever the input was."""
    assert examples
    n_labels = None if spec.regression else len(spec.labels or [])
    for ex in examples:
        if spec.kind == "ner":
            assert len(ex["tokens"]) == len(ex["tags"]) > 0
            assert all(isinstance(t, str) and t for t in ex["tokens"])
            assert all(isinstance(t, int) and 0 <= t < n_labels for t in ex["tags"])
        elif spec.kind == "multiple_choice":
            assert isinstance(ex["context"], str) and len(ex["choices"]) >= 2
            assert all(isinstance(c, str) for c in ex["choices"])
            assert isinstance(ex["label"], int) and 0 <= ex["label"] < len(ex["choices"])
        else:
            names = ("text",) if spec.kind == "classification" else ("text_a", "text_b")
            assert all(isinstance(ex[name], str) for name in names)
            if spec.regression:
                assert isinstance(ex["label"], float) and math.isfinite(ex["label"])
            else:
                assert isinstance(ex["label"], int) and 0 <= ex["label"] < n_labels


def fuzz_cases(data: bytes) -> list[tuple[str, int, bytes]]:
    cases = [("original", 0, data)]
    for name, corrupt in CORRUPTIONS.items():
        for seed in SEEDS:
            cases.append((name, seed, corrupt(data, random.Random(f"{name}-{seed}"))))
    return cases


def test_corrupted_task_files_parse_or_raise_data_format_error(tmp_path: Path, shared_data: Path) -> None:
    samples = {name: _sample(shared_data, name) for name in REAL_SAMPLES}
    outcomes: dict[str, int] = {"parsed": 0, "DataFormatError": 0}
    for name, (file, data) in [*samples.items(), ("generic", ("generic.jsonl", b""))]:
        if name == "generic":
            spec, data = _generic_jsonl_spec(tmp_path)
        else:
            spec = _spec(name, tmp_path, file)
        for corruption_name, seed, corrupted in fuzz_cases(data):
            case = f"{name} ({spec.format}) / {corruption_name} / seed {seed}"
            (tmp_path / file).write_bytes(corrupted)
            try:
                resolved, split = load_task(spec)
            except DataFormatError as err:
                assert corruption_name != "original", f"{case}: the valid sample failed: {err}"
                assert str(tmp_path) in str(err) or repr(spec.name) in str(err), f"{case}: {err}"
                outcomes["DataFormatError"] += 1
                continue
            except Exception as err:  # noqa: BLE001 - the point of the test
                pytest.fail(f"{case}: {type(err).__name__}: {err}")
            check_examples(resolved, split["train"])
            outcomes["parsed"] += 1
    assert sum(outcomes.values()) == 10 * (1 + len(CORRUPTIONS) * len(SEEDS))
    # the corruptions reach the readers' error paths, and not everything is rejected
    assert outcomes["DataFormatError"] > 100 and outcomes["parsed"] > 100, outcomes


# ----------------------------------------------------------------------------- raw-text (lm) formats


DOCS = [f"Document {i}: caf\u00e9, \"quoted\", tab\there, 12:30 {{braces}} <tag>." for i in range(6)]


def _lm_sample(fmt: str) -> bytes:
    if fmt == "text":
        return "\n".join(DOCS).encode()
    if fmt == "lines":
        return "".join(d + "\n" for d in DOCS).encode()
    if fmt == "jsonl":
        return "".join(json.dumps({"text": d}) + "\n" for d in DOCS).encode()
    if fmt == "json":
        return json.dumps([{"text": d} for d in DOCS], indent=1).encode()
    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": DOCS}), buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["text", "lines", "jsonl", "json", "parquet"])
def test_corrupted_corpus_files_parse_or_raise_data_format_error(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"corpus.{fmt}"
    task = TaskSpec(name="fuzz", kind="lm", format=fmt, data_dir=str(tmp_path), files={"train": path.name})
    outcomes: dict[str, int] = {"parsed": 0, "DataFormatError": 0}
    for corruption_name, seed, corrupted in fuzz_cases(_lm_sample(fmt)):
        case = f"{fmt} / {corruption_name} / seed {seed}"
        path.write_bytes(corrupted)
        try:
            raw = read_split(task, "train")
            docs, skipped = [example["text"] for example in raw.examples], raw.blank_lines
        except DataFormatError as err:
            assert corruption_name != "original", f"{case}: the valid sample failed: {err}"
            assert str(path) in str(err), f"{case}: the error does not name the file: {err}"
            outcomes["DataFormatError"] += 1
            continue
        except Exception as err:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{case}: {type(err).__name__}: {err}")
        assert isinstance(docs, list) and all(isinstance(d, str) for d in docs), case
        assert isinstance(skipped, int) and skipped >= 0, case
        if corruption_name == "original":
            assert docs == (["\n".join(DOCS)] if fmt == "text" else DOCS)
        outcomes["parsed"] += 1
    assert outcomes["parsed"] > 0, outcomes
