"""TextDataModule: reading, splitting, caching, windows and the resumable train stream."""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from gptlab.data import corpus, shards, tokenize, unit_encoding
from gptlab.data.corpus import demo_corpus_documents
from gptlab.data.sources import FORMATS, DataFormatError
from gptlab.data.text import StreamSampler, TextDataModule
from gptlab.data.tokenizer import EOT_ID, get_tokenizer

DOCS = [f"Document {i}: the quick brown fox jumps over {i} lazy dogs.\nSecond line {i}." for i in range(20)]


def expected_tokens(docs: list[str]) -> list[int]:
    enc = get_tokenizer()
    return [t for doc in docs for t in [*enc.encode_ordinary(doc), EOT_ID]]


def make_dm(tmp_path: Path, task: dict, block_size: int = 4, batch_size: int = 2, **kwargs) -> TextDataModule:
    task = {"name": "toy", "kind": "lm", "data_dir": str(tmp_path), **task}
    return TextDataModule(
        task, block_size, batch_size, cache_dir=str(tmp_path / "cache"), num_proc=1, **kwargs
    )


def split_tokens(dm: TextDataModule, split: str) -> list[int]:
    return [t for shard in dm.shards(split) for t in np.fromfile(shard.path, dtype=np.uint16).tolist()]



def write_lines(tmp_path: Path, docs: list[str] = DOCS, name: str = "train.jsonl") -> None:
    (tmp_path / name).write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))


def test_windows_are_shifted_pairs_with_eot_after_each_document(tmp_path):
    write_lines(tmp_path, DOCS[:12])
    write_lines(tmp_path, DOCS[12:], "val.jsonl")
    dm = make_dm(tmp_path, {"format": "jsonl", "files": {"train": "train.jsonl", "validation": "val.jsonl"}})
    dm.setup()
    tokens = expected_tokens(DOCS[:12])
    assert split_tokens(dm, "train") == tokens and tokens.count(EOT_ID) == 12
    assert split_tokens(dm, "val") == expected_tokens(DOCS[12:])
    windows = dm.train_dataloader().dataset
    assert len(windows) == (len(tokens) - 1) // 4
    for i in range(len(windows)):
        x, y = windows[i]
        assert x.dtype == y.dtype == torch.int64
        assert x.tolist() == tokens[4 * i : 4 * i + 4] and y.tolist() == tokens[4 * i + 1 : 4 * i + 5]
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (2, 4)
    assert dm.num_train_tokens == len(tokens) and dm.tokens_per_batch == 8


def test_held_out_documents_are_deterministic_and_independent_of_the_seed(tmp_path):
    write_lines(tmp_path)
    dms = [
        make_dm(
            tmp_path / str(seed),
            {"format": "jsonl", "data_dir": str(tmp_path), "files": {"train": "train.jsonl"}},
            seed=seed,
        )
        for seed in (1, 2)
    ]
    for dm in dms:
        dm.setup()
    train, val = split_tokens(dms[0], "train"), split_tokens(dms[0], "val")
    assert (train, val) == (split_tokens(dms[1], "train"), split_tokens(dms[1], "val"))
    assert val.count(EOT_ID) > 0 and train.count(EOT_ID) + val.count(EOT_ID) == len(DOCS)
    assert sorted(train + val) == sorted(expected_tokens(DOCS))


@pytest.mark.parametrize("fmt", ["lines", "text"])
def test_a_small_corpus_holds_out_at_least_one_document(tmp_path, fmt):
    docs = ["A first small document.", "A second one.", "And a third."]
    if fmt == "lines":
        (tmp_path / "a.txt").write_text("\n".join(docs) + "\n\n")
        files = {"train": "a.txt"}
    else:
        for n, doc in enumerate(docs):
            (tmp_path / f"doc{n}.txt").write_text(doc)
        files = {"train": "doc*.txt"}
    dm = make_dm(tmp_path, {"format": fmt, "files": files, "val_fraction": 0.01}, block_size=2)
    dm.setup()
    val = get_tokenizer().decode(split_tokens(dm, "val"))
    assert val.count("<|endoftext|>") == 1 and val.removesuffix("<|endoftext|>") in docs
    assert split_tokens(dm, "train").count(EOT_ID) == 2


def test_held_out_documents_do_not_depend_on_order_files_or_count(tmp_path):
    docs = [f"Report {i}: {' '.join(['word'] * (i % 7))} ends here." for i in range(3000)]

    def val_docs(task_dir: Path, files: list[list[str]]) -> set[str]:
        task_dir.mkdir()
        for n, part in enumerate(files):
            write_lines(task_dir, part, f"part{n}.jsonl")
        dm = make_dm(task_dir, {"format": "jsonl", "files": {"train": "part*.jsonl"}}, block_size=8)
        dm.setup()
        text = get_tokenizer().decode(split_tokens(dm, "val"))
        return set(filter(None, text.split("<|endoftext|>")))

    held = val_docs(tmp_path / "one", [docs])
    assert abs(len(held) - 300) < 3 * math.sqrt(3000 * 0.1 * 0.9)  # val_fraction 0.1 of them
    assert val_docs(tmp_path / "shuffled", [docs[1000:2500], docs[::-1][:500], docs[:1000]]) == held
    # a document held out stays held out in a corpus that grew
    assert held <= val_docs(tmp_path / "grown", [docs, [f"Another {i}." for i in range(500)]])


def test_a_single_document_holds_out_its_last_tokens(tmp_path):
    (tmp_path / "all.txt").write_text("\n".join(DOCS))
    dm = make_dm(tmp_path, {"format": "text", "files": {"train": "all.txt"}, "val_fraction": 0.25})
    dm.setup()
    text = "\n".join(DOCS)
    assert split_tokens(dm, "train") + split_tokens(dm, "val") == expected_tokens([text])
    val = get_tokenizer().decode(split_tokens(dm, "val")[:-1])
    assert text.endswith(val) and val[0].isspace() and not text[-len(val) - 1].isspace()
    assert 0.25 - 10 / len(text) < len(val) / len(text) <= 0.25  # from the first cut after 75%


def test_crlf_and_cr_become_lf(tmp_path):
    (tmp_path / "a.raw").write_bytes(b" = Title = \r\nFirst paragraph.\r\nSecond\rline\r\n" * 20)
    dm = make_dm(tmp_path, {"format": "text", "files": {"train": "a.raw", "validation": "a.raw"}})
    dm.setup()
    assert split_tokens(dm, "train") == expected_tokens(
        [" = Title = \nFirst paragraph.\nSecond\nline\n" * 20]
    )


@pytest.mark.parametrize("fmt", ["lines", "jsonl", "json", "parquet"])
def test_readers(tmp_path, fmt):
    path = tmp_path / f"train.{fmt}"
    if fmt == "lines":
        path.write_text("\n\n".join(d.replace("\n", " ") for d in DOCS))  # blank lines are no documents
    elif fmt == "jsonl":
        write_lines(tmp_path, [d.replace("\n", " ") for d in DOCS], path.name)
    elif fmt == "json":
        path.write_text(json.dumps([{"body": d.replace("\n", " "), "id": i} for i, d in enumerate(DOCS)]))
    else:
        pq.write_table(pa.table({"body": [d.replace("\n", " ") for d in DOCS]}), path)
    field = {"fields": {"text": "body"}} if fmt in ("json", "parquet") else {}
    dm = make_dm(tmp_path, {"format": fmt, "files": {"train": "train.*", "validation": path.name}, **field})
    dm.setup()
    assert split_tokens(dm, "train") == expected_tokens([d.replace("\n", " ") for d in DOCS])


def test_skipped_blank_lines_are_reported_by_a_build_and_by_the_cache(tmp_path, monkeypatch):
    (tmp_path / "train.txt").write_text("\n".join(d.replace("\n", " ") for d in DOCS[:10]) + "\n\n  \n")
    (tmp_path / "val.txt").write_text("\n" + "\n\n".join(d.replace("\n", " ") for d in DOCS[10:12]) + "\n")
    task = {"format": "lines", "files": {"train": "train.txt", "validation": "val.txt"}}
    built = make_dm(tmp_path, task)
    built.setup()
    # train: the blank line and the line of spaces; val: the leading one and the one between
    assert built.skipped_lines == {"train": 2, "validation": 2}
    monkeypatch.setattr(unit_encoding, "encode_unit", None)  # the second run must not tokenize again
    cached = make_dm(tmp_path, task)
    cached.setup()
    assert cached.skipped_lines == built.skipped_lines
    assert split_tokens(cached, "train") == expected_tokens([d.replace("\n", " ") for d in DOCS[:10]])


def test_hub_source_reads_a_local_dataset_folder(tmp_path):
    hub_dir = tmp_path / "hub"
    hub_dir.mkdir()
    write_lines(hub_dir, DOCS, "train.jsonl")
    task = {"format": "hub", "data_dir": None, "hub": {"path": str(hub_dir)}}
    dm = make_dm(tmp_path, task)
    dm.setup()
    assert sorted(split_tokens(dm, "train") + split_tokens(dm, "val")) == sorted(expected_tokens(DOCS))


# ----------------------------------------------------------------------------- tokenizing in parallel

# Characters where GPT-2's pre-tokenizer is easy to get wrong: whitespace that Python and the Rust
# regex disagree on (\x1c, \x85), runs of spaces before "\n", contractions, non-ASCII letters and
# digits, combining marks, literal special tokens.
ATOMS = [" ", "  ", "\n", "\n\n", "\t", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\xa0", "\u2028", "\u3000",
         "\u200b", "'", "'s", "'ll", "'re", "s", "t", "a", "Z", "é", "ß", "1", "٣", "½", "!", ".", "_", "-",
         "\u0301", "<|endoftext|>", "<|start|>", "😀", "日本", "\ufeff", "\x00", " the", "\r\n"]  # fmt: skip


def adversarial_texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)  # not numpy: its string arrays drop a trailing "\x00"
    return ["".join(rng.choices(ATOMS, k=rng.randint(1, 40))) for _ in range(count)]


def cut_points(data: bytes, every: int) -> list[int]:
    """The safe cuts ``tokenize.safe_cut`` finds in ``data`` searching from every ``every``-th byte."""
    f, cuts = io.BytesIO(data), []
    position = every
    while position < len(data) and (cut := tokenize.safe_cut(f, position, len(data))) < len(data):
        cuts.append(cut)
        position = cut + every
    return cuts


def ids_of_parts(data: bytes, cuts: list[int]) -> list[int]:
    bounds = [0, *cuts, len(data)]
    enc = get_tokenizer()
    return [t for a, b in zip(bounds, bounds[1:]) for t in enc.encode_ordinary(data[a:b].decode())]


def test_cutting_at_every_cut_point_keeps_the_ids_of_adversarial_text():
    enc = get_tokenizer()
    docs = adversarial_texts(8000) + ["a  \nb", "it's\n'll", "x \n\ny", "a\u3000\nb", "a\x1c\nb", "end \n"]
    cut = 0
    for doc in docs:
        data = doc.encode("utf-8", "surrogatepass")
        cuts = cut_points(data, every=1)  # every admissible position
        cut += len(cuts)
        assert ids_of_parts(data, cuts) == enc.encode_ordinary(doc), (doc, cuts)
    assert cut > 12_000
    # The texts are hard enough to catch a cut that is not safe: after a "\n" followed by a
    # non-space (before whitespace such as "  \n" the pre-tokenizer keeps the run whole at the end).
    naive = [[m.end() for m in re.finditer(rb"\n(?=\S)", doc.encode())] for doc in docs]
    assert any(ids_of_parts(doc.encode(), c) != enc.encode_ordinary(doc) for doc, c in zip(docs, naive))


def test_the_last_cut_before_a_position_is_the_last_safe_cut():
    data = b"alpha beta\ngamma  delta" * 5000
    f = io.BytesIO(data)
    every = cut_points(data, every=1)
    for end in (len(data), 70_000, 65_537, 12, 5, 1):
        assert tokenize.last_safe_cut(f, end) == max([c for c in every if c < end], default=0)


@pytest.mark.data
@pytest.mark.parametrize(
    "file", ["tinyshakespeare/input.txt", "wikitext2/test.nonempty-crlf.raw", "conll2003/valid.txt"]
)
def test_cutting_keeps_the_ids_of_real_corpora(shared_data, file):
    data = (shared_data / file).read_bytes().replace(b"\r\n", b"\n")  # the whole file as one document
    whole = get_tokenizer().encode_ordinary(data.decode())
    cuts = cut_points(data, every=97)
    assert len(cuts) > len(data) // 200
    assert ids_of_parts(data, cuts) == whole


def test_the_cache_holds_encode_ordinary_of_each_document(tmp_path):
    docs = adversarial_texts(200, seed=1) + ["", "  \n", "x" * 5000, " word" * 900]
    write_lines(tmp_path, docs)
    dm = make_dm(tmp_path, {"format": "jsonl", "files": {"train": "train.jsonl", "validation": "train.jsonl"}})
    dm.setup()
    assert dm.shards("train")[0].path.stat().st_size == 2 * dm.num_train_tokens  # uint16
    assert split_tokens(dm, "train") == expected_tokens([d for d in docs if d.strip()])  # blank ones add nothing


# ----------------------------------------------------------------------------- the stream


def stream(sampler: StreamSampler) -> list[int]:
    return list(sampler)


def test_every_window_once_per_data_epoch_and_a_new_order_each_epoch():
    windows = stream(StreamSampler(num_windows=7, seed=3, start=0, length=28))
    epochs = [windows[i : i + 7] for i in range(0, 28, 7)]
    assert all(sorted(epoch) == list(range(7)) for epoch in epochs)
    assert len({tuple(epoch) for epoch in epochs}) > 1
    assert windows == stream(StreamSampler(num_windows=7, seed=3, start=0, length=28))
    assert windows != stream(StreamSampler(num_windows=7, seed=4, start=0, length=28))


@pytest.mark.parametrize("k", [0, 1, 6, 7, 15])
def test_a_stream_started_at_k_is_the_tail_of_the_stream_from_zero(k):
    full = stream(StreamSampler(num_windows=7, seed=0, start=0, length=30))
    assert stream(StreamSampler(num_windows=7, seed=0, start=k, length=30 - k)) == full[k:]
    resumed = StreamSampler(num_windows=7, seed=0, start=0, length=30, resume=k)
    assert stream(resumed) == full[k:] and len(resumed) == 30  # len stays the epoch: Lightning's counter


def test_ddp_ranks_partition_the_stream():
    full = stream(StreamSampler(num_windows=10, seed=0, start=6, length=36))
    ranks = [
        stream(StreamSampler(num_windows=10, seed=0, start=6, length=36, rank=r, world_size=3))
        for r in range(3)
    ]
    assert [len(r) for r in ranks] == [12, 12, 12]
    assert [ranks[i % 3][i // 3] for i in range(36)] == full


def test_lightning_epochs_continue_the_stream():
    sampler = StreamSampler(num_windows=5, seed=0, start=0, length=5)
    first = stream(sampler)
    sampler.set_epoch(1)
    assert first + stream(sampler) == stream(StreamSampler(num_windows=5, seed=0, start=0, length=10))


def test_state_dict_restores_the_stream_position(tmp_path):
    write_lines(tmp_path)
    dm = make_dm(tmp_path, {"format": "jsonl", "files": {"train": "train.jsonl"}}, start_sample=4)
    dm.setup()
    n = len(dm.train_dataloader().dataset)
    assert len(dm.train_dataloader().sampler) == n
    state = dm.state_dict()
    assert state == {"seed": 1234, "start_sample": 4, "position": 4}
    other = make_dm(tmp_path, {"format": "jsonl", "files": {"train": "train.jsonl"}}, seed=99)
    other.setup()
    other.load_state_dict({**state, "position": 8})
    assert list(other.train_dataloader().sampler) == list(dm.train_dataloader().sampler)[4:]


class Recorder(L.LightningModule):
    """Trains nothing; remembers every batch it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.batches: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        self.batches.append(batch[0].clone())
        return self.weight * batch[0].float().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def fit(dm: TextDataModule, ckpt_dir: Path, ckpt_path: Path | None = None, **trainer_kwargs) -> Recorder:
    model = Recorder()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[L.pytorch.callbacks.ModelCheckpoint(ckpt_dir, every_n_train_steps=3, save_top_k=-1)],
        **trainer_kwargs,
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model


@pytest.mark.parametrize(
    ("trainer_kwargs", "resume_step"),
    [({"max_steps": 8}, 3), ({"max_epochs": 3}, 15)],  # 21 windows: 10 batches per epoch, resume in epoch 1
)
def test_a_resumed_fit_continues_the_stream_exactly(tmp_path, trainer_kwargs, resume_step):
    write_lines(tmp_path)
    task = {"format": "jsonl", "files": {"train": "train.jsonl"}}
    dm = make_dm(tmp_path, task, block_size=16)
    first = fit(dm, tmp_path / "ckpt", **trainer_kwargs)
    windows = len(dm.train_dataloader().dataset)
    epoch_length = 8 * 2 if "max_steps" in trainer_kwargs else windows
    epoch, batches = divmod(resume_step, epoch_length // 2)
    (ckpt,) = (tmp_path / "ckpt").glob(f"*step={resume_step}.ckpt")
    assert (
        torch.load(ckpt, weights_only=False)["TextDataModule"]["position"]
        == epoch * epoch_length + batches * 2
    )
    resumed = fit(
        make_dm(tmp_path, task, block_size=16), tmp_path / "ckpt2", ckpt_path=ckpt, **trainer_kwargs
    )
    assert len(first.batches) == resume_step + len(resumed.batches)
    assert all(torch.equal(a, b) for a, b in zip(first.batches[resume_step:], resumed.batches, strict=True))


# ----------------------------------------------------------------------------- the cache


def test_a_cache_hit_neither_tokenizes_nor_hashes(tmp_path, monkeypatch):
    (tmp_path / "big.txt").write_text("\n".join(DOCS * 200))
    task = {"format": "text", "files": {"train": "big.txt"}}
    built = make_dm(tmp_path, task)
    built.setup()

    def no(*args, **kwargs):
        raise AssertionError("tokenized or hashed again instead of reading the cache")

    monkeypatch.setattr(unit_encoding, "encode_unit", no)
    monkeypatch.setattr(shards, "block_crcs", no)
    dm = make_dm(tmp_path, task)
    dm.setup()
    assert (dm.num_train_tokens, dm.num_val_tokens) == (built.num_train_tokens, built.num_val_tokens) > (0, 0)


def test_a_changed_source_is_read_again(tmp_path):
    write_lines(tmp_path)
    task = {"format": "jsonl", "files": {"train": "train.jsonl", "validation": "train.jsonl"}}
    make_dm(tmp_path, task).setup()
    write_lines(tmp_path, DOCS[::-1])  # the same size, and at once: maybe the same mtime too
    changed = make_dm(tmp_path, task)
    changed.setup()
    assert split_tokens(changed, "train") == expected_tokens(DOCS[::-1])


# ----------------------------------------------------------------------------- errors before training


def test_missing_data_dir_names_the_path_and_format(tmp_path):
    with pytest.raises(DataFormatError, match=r"nowhere.*no such file.*format 'text': one document per file"):
        make_dm(tmp_path, {"format": "text", "data_dir": str(tmp_path / "nowhere"), "files": {"train": "a.txt"}}).setup()


def test_missing_file_names_the_path_and_format(tmp_path):
    with pytest.raises(DataFormatError) as err:
        make_dm(tmp_path, {"name": "wikitext2", "format": "text", "files": {"train": "train*.txt"}}).setup()
    assert str(err.value) == (
        f"{tmp_path / 'train*.txt'}: no file matches (task 'wikitext2', split 'train'); expected "
        f"format 'text': {FORMATS['text']}"
    )


def test_no_source_at_all(tmp_path):
    with pytest.raises(DataFormatError, match="data_dir is not set"):
        make_dm(tmp_path, {"format": "text", "data_dir": None, "files": {"train": "a.txt"}}).setup()


def test_unknown_format_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="unknown format 'csv'; valid formats: glue_tsv, conll,"):
        make_dm(tmp_path, {"format": "csv", "files": {"train": "a.csv"}}).setup()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"files": {"valid": "a.txt"}}, "unknown split"),
        ({"files": "a.txt"}, "files='a.txt'; it maps each split to a file name, glob or list"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"regression": True}, "kind 'lm' has no real-valued labels \\(kinds that may: classification, similarity\\)"),
        ({"kind": "classification"}, "TextDataModule reads kinds lm"),
        ({"format": "lines", "text_field": "body"}, r"text_field is now fields.text \(task.fields.text=...\)"),
        ({"format": "hub", "hub": {"path": "x", "split_train": "t"}}, "hub.split_train is now hub.splits.train"),
    ],
)
def test_bad_specs(tmp_path, spec, message):
    (tmp_path / "a.txt").write_text(" ".join(DOCS))
    with pytest.raises(ValueError, match=message):
        make_dm(tmp_path, {"format": "text", "files": {"train": "a.txt"}, **spec}).setup()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "0 tokens"),
        (" \n\n", "0 tokens"),
        ("Hello there.", r"train split has 1 tokens, fewer than block_size \+ 1 = 5"),
        ("Hello there, " * 10 + "world.", r"val split has 3 tokens.*val_fraction=0.1 of the documents"),
    ],
)
def test_empty_or_too_small_corpus(tmp_path, content, message):
    (tmp_path / "a.txt").write_text(content)
    with pytest.raises(ValueError, match=f"task 'toy'.*{message}"):
        make_dm(tmp_path, {"format": "text", "files": {"train": "a.txt"}}).setup()


@pytest.mark.parametrize("fmt", ["text", "lines", "jsonl"])
def test_bad_utf8_names_the_file_line_and_option(tmp_path, fmt):
    (tmp_path / "bad.txt").write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9 broken"}\n')
    with pytest.raises(DataFormatError, match=r"bad\.txt, line 2: bytes b'\\xe9' are not UTF-8.*task.options.encoding"):
        make_dm(tmp_path, {"format": fmt, "files": {"train": "bad.txt"}}).setup()


@pytest.mark.parametrize("fmt", ["text", "lines", "jsonl"])
def test_options_encoding_decodes_every_corpus_format(tmp_path, fmt):
    docs = [f"Caf\u00e9 number {i} serves cr\u00e8me br\u00fbl\u00e9e." for i in range(40)]
    lines = [json.dumps({"text": d}, ensure_ascii=False) if fmt == "jsonl" else d for d in docs]
    (tmp_path / "a.txt").write_bytes("\n".join(lines).encode("cp1252"))
    dm = make_dm(tmp_path, {"format": fmt, "files": {"train": "a.txt"}, "options": {"encoding": "cp1252"}})
    dm.setup()
    expected = expected_tokens(["\n".join(docs)] if fmt == "text" else docs)
    assert sorted(split_tokens(dm, "train") + split_tokens(dm, "val")) == sorted(expected)


def test_missing_text_field_names_the_record(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(ValueError, match=r"a\.jsonl, line 2: no key 'text' \(field 'text'\)"):
        make_dm(tmp_path, {"format": "jsonl", "files": {"train": "a.jsonl"}}).setup()


# ----------------------------------------------------------------------------- the embedded corpus


def test_embedded_corpus_is_large_and_deterministic(tmp_path):
    docs = demo_corpus_documents()
    joined = "\0".join(docs)
    assert len(joined) >= 500_000 and len(docs) == len(set(docs)) and all(docs)
    digest = hashlib.sha256(joined.encode()).hexdigest()
    # A fresh interpreter, other hash seed, none of the libraries loaded here (no torch: fast).
    code = (
        f"import hashlib, runpy; d = runpy.run_path({corpus.__file__!r})"
        "['demo_corpus_documents']; print(hashlib.sha256(chr(0).join(d()).encode()).hexdigest())"
    )
    env = {"PYTHONHASHSEED": "7"}
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert other.stdout.strip() == digest
    dm = make_dm(tmp_path, {"name": "demo", "format": "embedded", "data_dir": None}, block_size=64)
    dm.setup()
    assert dm.num_train_tokens > 200_000 and dm.num_val_tokens > 20_000


# ----------------------------------------------------------------------------- real data


@pytest.mark.data
def test_tinyshakespeare(shared_data, tmp_path):
    task = {
        "name": "tinyshakespeare",
        "kind": "lm",
        "format": "text",
        "data_dir": str(shared_data / "tinyshakespeare"),
        "files": {"train": "input.txt"},
    }
    dm = TextDataModule(task, block_size=256, batch_size=4, cache_dir=str(tmp_path))
    dm.setup()
    # nanoGPT's character split gives 301,966 + 36,059; ours cuts the bytes at a word's end, plus one EOT.
    assert dm.num_train_tokens + dm.num_val_tokens == 338_026
    assert 0.1 * 338_026 < dm.num_val_tokens < 0.11 * 338_026
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 256) and torch.equal(x[:, 1:], y[:, :-1])
    assert get_tokenizer().decode(dm.val_dataloader().dataset[0][0].tolist())
