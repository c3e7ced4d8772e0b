"""The sharded token cache: shards, processes, resuming a build, cheap cache hits, corrupt shards."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from gptlab.data import corpus_units, shards, unit_encoding
from gptlab.data.sources import DataFormatError
from gptlab.data.text import TextDataModule
from gptlab.data.tokenizer import EOT_ID, get_tokenizer

DOCS = [f"Line {i}: {' '.join(f'w{j}' for j in range(i % 13))} and the end of it." for i in range(600)]


def expected_tokens(docs: list[str]) -> list[int]:
    enc = get_tokenizer()
    return [t for doc in docs for t in [*enc.encode_ordinary(doc), EOT_ID]]


@pytest.fixture(params=["threads", "processes"])
def pool(request, monkeypatch) -> str:
    """Encode on threads (a small corpus) or in processes (a large one: any corpus, here)."""
    if request.param == "processes":
        monkeypatch.setattr(corpus_units, "THREADS_BELOW_BYTES", 0)
    return request.param


@pytest.fixture
def small_units(monkeypatch):
    """Units of about 1 kB, so a small corpus makes many units and shards."""
    monkeypatch.setattr(corpus_units, "UNIT_BYTES", 1024)


def make_dm(tmp_path: Path, task: dict, num_proc: int = 1, shard_tokens: int = 2000, **kwargs) -> TextDataModule:
    task = {"name": "toy", "kind": "lm", "data_dir": str(tmp_path), **task}
    return TextDataModule(
        task, 8, 2, cache_dir=str(tmp_path / "cache"), num_proc=num_proc, shard_tokens=shard_tokens, **kwargs
    )


def lines_task(tmp_path: Path, docs: list[str] = DOCS) -> dict:
    (tmp_path / "train.txt").write_text("\n".join(docs[:500]) + "\n")
    (tmp_path / "val.txt").write_text("\n".join(docs[500:]) + "\n")
    return {"format": "lines", "files": {"train": "train.txt", "validation": "val.txt"}}


def tokens_of(dm: TextDataModule, split: str) -> list[int]:
    return [t for shard in dm.shards(split) for t in np.fromfile(shard.path, dtype=np.uint16).tolist()]


def shard_bytes(dm: TextDataModule) -> list[bytes]:
    return [shard.path.read_bytes() for split in ("train", "val") for shard in dm.shards(split)]


def test_a_corpus_streams_into_many_shards_with_the_ids_of_the_whole(tmp_path, small_units):
    dm = make_dm(tmp_path, lines_task(tmp_path))
    dm.setup()
    train = dm.shards("train")
    assert len(train) > 3 and all(2000 <= s.tokens < 2000 + 1024 for s in train[:-1])
    assert tokens_of(dm, "train") == expected_tokens(DOCS[:500])
    assert tokens_of(dm, "val") == expected_tokens(DOCS[500:])
    windows = dm.train_dataloader().dataset
    assert len(windows) == sum((s.tokens - 1) // 8 for s in train)
    for i in range(len(windows)):  # no window spans two shards
        x, y = windows[i]
        assert x[1:].tolist() == y[:-1].tolist()
    first, last = windows[0], windows[len(windows) - 1]
    assert first[0].tolist() == tokens_of(dm, "train")[:8]
    tail = np.fromfile(train[-1].path, dtype=np.uint16).tolist()
    start = ((train[-1].tokens - 1) // 8 - 1) * 8
    assert last[1].tolist() == tail[start + 1 : start + 9]


@pytest.mark.parametrize("fmt", ["text", "lines", "jsonl"])
def test_the_same_shards_for_any_number_of_processes(tmp_path, small_units, pool, fmt):
    if fmt == "text":
        task = {"format": "text", "files": {"train": "a.txt"}}
        (tmp_path / "a.txt").write_text("\r\n".join(DOCS))
    elif fmt == "lines":
        task = lines_task(tmp_path)
    else:
        (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
        task = {"format": "jsonl", "files": {"train": "a.jsonl"}}
    built = []
    for num_proc in (1, 2, 3):
        dm = make_dm(tmp_path / str(num_proc), {**task, "data_dir": str(tmp_path)}, num_proc=num_proc)
        dm.setup()
        built.append(shard_bytes(dm))
    assert built[0] == built[1] == built[2] and len(built[0]) > 4
    whole = "\n".join(DOCS) if fmt == "text" else None
    if whole is not None:  # a document cut into units encodes to the ids of the whole
        assert tokens_of(dm, "train") + tokens_of(dm, "val") == expected_tokens([whole])


class Killed(Exception):
    pass


def test_a_killed_build_keeps_its_steps_and_resumes_after_them(tmp_path, small_units, monkeypatch, caplog):
    task = lines_task(tmp_path)
    straight = make_dm(tmp_path / "straight", {**task, "data_dir": str(tmp_path)})
    straight.setup()
    real_close, closed = shards._Step.close, []

    def close_then_die(step, corpus):
        meta = real_close(step, corpus)
        closed.append(meta)
        if len(closed) == 3:
            (step.folder / ".train-000003.bin.x.tmp").write_bytes(b"half a shard")
            raise Killed
        return meta

    monkeypatch.setattr(shards._Step, "close", close_then_die)
    with pytest.raises(Killed):
        make_dm(tmp_path, task).setup()
    monkeypatch.setattr(shards._Step, "close", real_close)
    folder = next((tmp_path / "cache").iterdir())
    assert not (folder / shards.MANIFEST).exists() and list(folder.glob(".*.tmp"))
    encoded = counting_units(monkeypatch)
    with caplog.at_level(logging.INFO):
        resumed = make_dm(tmp_path, task)
        resumed.setup()
    assert "resuming after 3 complete step(s)" in caplog.text
    assert encoded[0] == next(corpus_units.plan_corpus(resumed.spec).units(closed[2]["units"][1]))
    assert shard_bytes(resumed) == shard_bytes(straight) and not list(folder.glob(".*.tmp"))


def counting_units(monkeypatch) -> list:
    """The units the next builds encode, in order."""
    encoded, real_encode = [], unit_encoding.encode_unit

    def counting(reading, unit):
        encoded.append(unit)
        return real_encode(reading, unit)

    monkeypatch.setattr(unit_encoding, "encode_unit", counting)
    return encoded


def test_a_bad_record_deep_in_a_file_names_its_line_and_a_fix_keeps_the_steps_before(
    tmp_path, small_units, pool, monkeypatch
):
    lines = [json.dumps({"text": d}) for d in DOCS]
    good = "\n".join(lines) + "\n"
    lines[450] = '{"text": "unterminated}'
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    task = {"format": "jsonl", "files": {"train": "a.jsonl"}}
    with pytest.raises(DataFormatError, match=r"a\.jsonl, line 451: not valid JSON"):
        make_dm(tmp_path, task, num_proc=2).setup()
    folder = next((tmp_path / "cache").iterdir())
    kept = len(list(folder.glob("step-*.json")))
    resume_at = json.loads((folder / f"step-{kept - 1:06d}.json").read_text())["units"][1]
    assert kept >= 3 and resume_at <= 40
    (tmp_path / "a.jsonl").write_text(good)  # fixed: the file changed after the bytes the steps read
    encoded = counting_units(monkeypatch)
    fixed = make_dm(tmp_path, task, num_proc=1)
    fixed.setup()
    assert encoded[0] == next(corpus_units.plan_corpus(fixed.spec).units(resume_at))
    straight = make_dm(tmp_path / "straight", {**task, "data_dir": str(tmp_path)})
    straight.setup()
    assert shard_bytes(fixed) == shard_bytes(straight)


def test_undecodable_bytes_deep_in_a_text_file_name_their_line(tmp_path, small_units):
    data = "\n".join(DOCS).encode()
    at = data.index(b"Line 333:")
    (tmp_path / "a.txt").write_bytes(data[:at] + b"caf\xe9 " + data[at:])
    with pytest.raises(DataFormatError, match=r"a\.txt, line 334: bytes b'\\xe9' are not UTF-8"):
        make_dm(tmp_path, {"format": "text", "files": {"train": "a.txt"}}).setup()


def test_an_unreadable_file_among_many_is_named(tmp_path):
    for n in range(5):
        (tmp_path / f"part{n}.txt").write_text("\n".join(DOCS[n::5]))
    (tmp_path / "part5.txt").symlink_to(tmp_path / "gone.txt")
    task = {"format": "lines", "files": {"train": [f"part{n}.txt" for n in range(6)]}}
    with pytest.raises(DataFormatError, match=r"part5\.txt: no such file"):
        make_dm(tmp_path, task).setup()
    with pytest.raises(DataFormatError, match=r"part5\.txt: .*cannot be read"):
        make_dm(tmp_path, {**task, "files": {"train": "part*.txt"}}).setup()


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_corrupt_shard_is_found_when_read_and_rebuilt(tmp_path, small_units, caplog, num_workers):
    task = lines_task(tmp_path)
    dm = make_dm(tmp_path, task, num_workers=num_workers)
    dm.setup()
    expected = [x for x, _ in dm.train_dataloader()]
    shard = dm.shards("train")[2]
    good = shard.path.read_bytes()
    shard.path.write_bytes(good[:100] + bytes([good[100] ^ 1]) + good[101:])  # same size: a cheap check passes
    again = make_dm(tmp_path, task, num_workers=num_workers)
    again.setup()
    with caplog.at_level(logging.WARNING):
        batches = [x for x, _ in again.train_dataloader()]
    assert shard.path.read_bytes() == good
    assert len(batches) == len(expected) and all(a.equal(b) for a, b in zip(batches, expected))
    if num_workers == 0:  # a worker process logs to its own stderr
        assert "fails its crc32; rebuilding step 2" in caplog.text


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest"])
def test_a_damaged_cache_is_rebuilt_at_start(tmp_path, small_units, caplog, damage):
    task = lines_task(tmp_path)
    dm = make_dm(tmp_path, task)
    dm.setup()
    shard = dm.shards("train")[1]
    good = shard.path.read_bytes()
    folder = shard.path.parent
    if damage == "truncate":
        shard.path.write_bytes(good[:-2])
    elif damage == "flip":
        shard.path.write_bytes(bytes([good[0] ^ 1]) + good[1:])
    else:
        (folder / shards.MANIFEST).write_text("{")
    again = make_dm(tmp_path, task, verify_cache=damage == "flip")
    with caplog.at_level(logging.INFO):
        again.setup()
    assert "rebuilding" in caplog.text
    assert shard.path.read_bytes() == good and shard_bytes(again) == shard_bytes(dm)


def test_a_shard_that_cannot_be_rebuilt_as_recorded_is_an_error(tmp_path, small_units):
    dm = make_dm(tmp_path, lines_task(tmp_path))
    dm.setup()
    folder = dm.shards("train")[0].path.parent
    meta_path = folder / "step-000001.json"
    meta = json.loads(meta_path.read_text())
    meta["shards"]["train"]["crc32"][0] ^= 1  # as if the corpus changed since, keeping sizes and mtimes
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(shards.CorruptCacheError, match="step 1 rebuilt to other tokens"):
        shards.rebuild_step(corpus_units.plan_corpus(dm.spec), folder, 1)


@pytest.mark.parametrize("validation", [False, True])
def test_a_streamed_hub_dataset_gives_the_shards_of_a_downloaded_one(tmp_path, monkeypatch, validation):
    monkeypatch.setattr(corpus_units, "UNIT_ROWS", 64)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"body": d}) + "\n" for d in DOCS[:500]))
    (tmp_path / "val.jsonl").write_text("".join(json.dumps({"body": d}) + "\n" for d in DOCS[500:]))
    data_files = {"train": str(tmp_path / "train.jsonl"), "validation": str(tmp_path / "val.jsonl")}
    hub = {"path": "json", "data_files": data_files, "fields": {"text": "body"},
           **({"splits": {"train": "train", "validation": "validation"}} if validation else {})}  # fmt: skip
    built = {}
    for streaming in (False, True):
        task = {"format": "hub", "data_dir": None, "hub": {**hub, "streaming": streaming}}
        dm = make_dm(tmp_path / str(streaming), task)
        dm.setup()
        built[streaming] = shard_bytes(dm)
    assert built[True] == built[False] and len(built[True]) > 1
    if validation:
        assert tokens_of(dm, "val") == expected_tokens(DOCS[500:])


def test_a_resumed_fit_continues_a_stream_over_many_shards_exactly(tmp_path, small_units):
    from test_text_data import fit  # the Lightning fit that records its batches

    task = lines_task(tmp_path)
    dm = make_dm(tmp_path, task)
    first = fit(dm, tmp_path / "ckpt", max_steps=12)
    assert len(dm.shards("train")) > 3
    (ckpt,) = (tmp_path / "ckpt").glob("*step=6.ckpt")
    resumed = fit(make_dm(tmp_path, task), tmp_path / "ckpt2", ckpt_path=ckpt, max_steps=12)
    assert len(resumed.batches) == 6
    assert all(a.equal(b) for a, b in zip(first.batches[6:], resumed.batches, strict=True))


def test_a_parquet_corpus_is_read_by_row_group_and_a_bad_row_is_named_by_its_table_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": DOCS[:100]}), tmp_path / "a.parquet", row_group_size=7)
    task = {"format": "parquet", "files": {"train": "a.parquet", "validation": "a.parquet"}, "fields": {"text": "body"}}
    dm = make_dm(tmp_path, task)
    dm.setup()
    assert tokens_of(dm, "train") == expected_tokens(DOCS[:100])
    assert len(list(corpus_units.plan_corpus(dm.spec).units(0))) == 2 * 15  # 15 row groups per split
    pq.write_table(pa.table({"body": [*DOCS[:40], None, *DOCS[41:100]]}), tmp_path / "b.parquet", row_group_size=7)
    with pytest.raises(DataFormatError, match=r"b\.parquet, row 41: field 'text' is None, not a string"):
        make_dm(tmp_path, {**task, "files": {"train": "b.parquet"}}).setup()
