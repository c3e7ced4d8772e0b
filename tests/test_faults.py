"""Fault tolerance: runs survive kills and corrupt files, nothing is silently lost or executed.

A kill is a real SIGKILL of a subprocess (the CLI run, or a process dying inside write_atomic), or,
to stay fast, its in-process equivalent: an exception nothing catches, plus the temporary file a
SIGKILL would leave. Corrupt files are built directly (truncated, bit-flipped, code-carrying).
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

import gptlab.atomic
import gptlab.lit.checkpoint_io
from gptlab.atomic import write_atomic
from gptlab.cli.train import build_all, resolve_ckpt_path
from gptlab.data import corpus_units, shards
from gptlab.data.sources import DataFormatError, load_task, read_split
from gptlab.lit.checkpoint_io import AtomicCheckpointIO
from gptlab.model.build import build_gpt
from gptlab.model.checkpoint import CheckpointError, read_checkpoint
from gptlab.model.hf import read_hf_gpt2
from gptlab.data.token_cache import token_shards
from gptlab.tasks.spec import TaskSpec

# One intra-op thread per run: two or three runs share the CPUs, and oversubscribed OpenMP threads
# spin-wait (a tiny model's step goes from 0.2 s to 2.5 s on a busy 2-core machine).
ENV = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
MAX_STEPS = 12


def write_corpus(directory: Path) -> Path:
    words = "the cat sat on a mat and dog ran far away from home quick brown fox".split()
    rng = random.Random(0)
    lines = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(400)]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "corpus.txt").write_text("\n".join(lines))
    return directory


def run_overrides(data_dir: Path) -> list[str]:
    """A tiny deterministic pre-training run that checkpoints every step (dropout on, so the
    random state has to be resumed too)."""
    return [
        "debug=fast", "task=tinyshakespeare", f"task.data_dir={data_dir}", "task.files.train=corpus.txt",
        "model.block_size=32", "model.dropout=0.1", "regime.datamodule.val_windows=4",
        f"trainer.max_steps={MAX_STEPS}", "trainer.val_check_interval=4", "trainer.deterministic=true",
        "callbacks.model_checkpoint.every_n_train_steps=1",
    ]


def start_gptlab(run_dir: Path, overrides: list[str], cache: Path, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:  # a file, not a pipe: a full pipe would stall the run
        return subprocess.Popen(
            [sys.executable, "-m", "gptlab", *overrides, f"hydra.run.dir={run_dir}"],
            stdout=out, stderr=subprocess.STDOUT, env={**ENV, "GPTLAB_CACHE_DIR": str(cache)},
        )


def saved_step(path: Path) -> int | None:
    try:  # a reader never sees a half-written file: saves are renamed into place
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])
    except (FileNotFoundError, RuntimeError):
        return None


def results(run_dir: Path) -> dict[tuple[str, str], float]:
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    return {(r["split"], r["metric"]): r["value"] for r in rows}


@pytest.mark.slow  # three runs of the CLI; test_a_killed_run_resumes_exactly_in_process is the fast variant
def test_a_run_killed_at_a_random_step_resumes_to_the_straight_runs_weights_and_metrics(tmp_path: Path) -> None:
    data, cache = write_corpus(tmp_path / "data"), tmp_path / "cache"
    overrides = run_overrides(data)
    kill_at = random.Random(20240607).randint(2, MAX_STEPS - 4)
    straight = start_gptlab(tmp_path / "straight", overrides, cache, tmp_path / "straight.log")
    killed = start_gptlab(tmp_path / "killed", overrides, cache, tmp_path / "killed.log")
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while killed.poll() is None and (saved_step(last) or 0) < kill_at:
        assert time.monotonic() < deadline, (tmp_path / "killed.log").read_text()[-3000:]
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "killed" / "results.jsonl").exists()
    interrupted_at = saved_step(Path(resolve_ckpt_path("last", tmp_path / "killed")))
    assert interrupted_at is not None and kill_at <= interrupted_at < MAX_STEPS

    resumed = start_gptlab(tmp_path / "killed", [*overrides, "ckpt_path=last"], cache, tmp_path / "resumed.log")
    assert resumed.wait(timeout=240) == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    assert straight.wait(timeout=240) == 0, (tmp_path / "straight.log").read_text()[-3000:]

    a = read_checkpoint(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    b = read_checkpoint(last)
    assert a["global_step"] == b["global_step"] == MAX_STEPS
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), name
    assert results(tmp_path / "straight") == results(tmp_path / "killed")


# ----------------------------------------------------------------------------- kill during a save

# A process that SIGKILLs itself inside write_atomic: while writing, or after writing and syncing
# but before the rename. It loads gptlab/atomic.py alone (the package would import torch), so it
# starts in a fraction of a second.
DIE_IN_WRITE_ATOMIC = """
import importlib.util, os, signal, sys

target, at, source = sys.argv[1:]
spec = importlib.util.spec_from_file_location("atomic", source)
atomic = importlib.util.module_from_spec(spec)
spec.loader.exec_module(atomic)
die = lambda *args: os.kill(os.getpid(), signal.SIGKILL)

def half_then_die(f):
    f.write(b"new " * 1000)
    f.flush()
    die()

if at == "before-rename":
    atomic.os.replace = die
atomic.write_atomic(target, half_then_die if at == "mid-write" else b"new " * 2000)
"""
KILL_POINTS = ["mid-write", "before-rename"]


@pytest.mark.parametrize("at", KILL_POINTS)
def test_a_process_killed_inside_write_atomic_leaves_the_old_file(tmp_path: Path, at: str) -> None:
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")
    source = gptlab.atomic.__file__
    process = subprocess.run([sys.executable, "-c", DIE_IN_WRITE_ATOMIC, str(target), at, source], env=ENV, timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert target.read_bytes() == b"old"
    (leftover,) = tmp_path.glob(".file.bin.*.tmp")  # what the kill left: ignored by every reader
    assert leftover.read_bytes().startswith(b"new ")


@pytest.mark.parametrize("free", [1 << 10, 1 << 30])
def test_a_writer_failing_on_a_full_disk_says_so_and_keeps_the_old_file(tmp_path: Path, monkeypatch, free: int) -> None:
    # torch.save's zip writer turns ENOSPC into this (seen when a disk filled during `make demo`)
    garbled = "[enforce fail at inline_container.cc:672] . unexpected pos 53656192 vs 53656080"

    def torch_save_on_a_full_disk(f) -> None:
        f.write(b"new " * 1000)
        raise RuntimeError(garbled)

    usage = gptlab.atomic.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(gptlab.atomic.shutil, "disk_usage", lambda path: usage._replace(free=free))
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"old")
    with pytest.raises(Exception) as raised:
        write_atomic(target, torch_save_on_a_full_disk)
    if free < gptlab.atomic.NEARLY_FULL_BYTES:
        assert isinstance(raised.value, OSError) and raised.value.errno == errno.ENOSPC
        assert f"no space left on the device writing {target} (1,024 bytes free" in str(raised.value)
        assert garbled in str(raised.value)
    else:  # space to spare: the writer's own error, unchanged
        assert type(raised.value) is RuntimeError and str(raised.value) == garbled
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


class Died(BaseException):
    """Stands for a kill inside a save (a BaseException, like KeyboardInterrupt: nothing catches it)."""


def die_in_write(monkeypatch: pytest.MonkeyPatch, at: str) -> None:
    """Make the checkpoint and token-cache writers die ``at`` a point of their next atomic write,
    leaving the temporary file a SIGKILL would leave (write_atomic removes it on an exception)."""
    real_write_atomic = gptlab.atomic.write_atomic

    def died(*args) -> None:
        raise Died()

    def dying_write_atomic(path, data) -> None:
        path = Path(path)
        try:
            if at == "before-rename":
                with monkeypatch.context() as patch:
                    patch.setattr(gptlab.atomic.os, "replace", died)
                    real_write_atomic(path, data)
            else:
                buffer = io.BytesIO()
                if callable(data):
                    data(buffer)
                else:
                    buffer.write(data)

                def half_then_die(f) -> None:
                    f.write(buffer.getvalue()[: buffer.tell() // 2])
                    died()

                real_write_atomic(path, half_then_die)
        finally:
            (path.parent / f".{path.name}.killed.tmp").write_bytes(b"partial")

    monkeypatch.setattr(gptlab.lit.checkpoint_io, "write_atomic", dying_write_atomic)
    monkeypatch.setattr(shards, "write_atomic", dying_write_atomic)


@pytest.mark.parametrize("at", KILL_POINTS)
def test_a_kill_during_a_checkpoint_save_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog, at: str
) -> None:
    target = tmp_path / "checkpoints" / "last.ckpt"
    plugin = AtomicCheckpointIO()
    plugin.save_checkpoint({"global_step": 1, "w": torch.ones(50_000)}, target)
    die_in_write(monkeypatch, at)
    with pytest.raises(Died):
        plugin.save_checkpoint({"global_step": 2, "w": torch.zeros(50_000)}, target)
    previous = read_checkpoint(target)
    assert previous["global_step"] == 1 and torch.equal(previous["w"], torch.ones(50_000))
    with caplog.at_level(logging.WARNING):
        assert resolve_ckpt_path("last", tmp_path) == str(target)
    assert ".last.ckpt.killed.tmp" in caplog.text  # reported as an interrupted save, never loaded


def lines_corpus(tmp_path: Path) -> dict:
    (tmp_path / "corpus.txt").write_text("\n".join(f"Line {i} of a corpus, in words." for i in range(400)))
    return {"name": "toy", "kind": "lm", "format": "lines", "data_dir": str(tmp_path), "files": {"train": "corpus.txt"}}


@pytest.mark.parametrize("at", KILL_POINTS)
def test_a_kill_during_a_token_cache_write_keeps_a_valid_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at: str
) -> None:
    monkeypatch.setattr(corpus_units, "UNIT_BYTES", 1024)
    spec = TaskSpec.from_config(lines_corpus(tmp_path))
    clean, _ = token_shards(spec, tmp_path / "clean", 1, shard_tokens=1000)
    with monkeypatch.context() as patch:
        die_in_write(patch, at)  # in the first step's sidecar, after its shards were renamed into place
        with pytest.raises(Died):
            token_shards(spec, tmp_path / "cache", 1, shard_tokens=1000)
    again, _ = token_shards(spec, tmp_path / "cache", 1, shard_tokens=1000)
    assert [s.path.read_bytes() for s in again["train"].shards] == [s.path.read_bytes() for s in clean["train"].shards]
    assert len(again["train"].shards) > 1 and not list((tmp_path / "cache").rglob("*.tmp"))


def test_an_exception_during_an_atomic_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")

    def failing_writer(f) -> None:
        f.write(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, failing_writer)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["file.bin"]


# ----------------------------------------------------------------------------- corrupt checkpoints


def save_checkpoints(directory: Path, steps: list[int]) -> list[Path]:
    """Checkpoints written in step order (so modification times increase), the last as last.ckpt."""
    io = AtomicCheckpointIO()
    paths = []
    for i, step in enumerate(steps):
        path = directory / ("last.ckpt" if i == len(steps) - 1 else f"step{step:07d}.ckpt")
        io.save_checkpoint({"global_step": step, "w": torch.full((1000,), float(step))}, path)
        os.utime(path, ns=(i * 10**9, i * 10**9))
        paths.append(path)
    return paths


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_tensor_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # the 4000-byte tensor is most of the file: a silently wrong weight
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [truncate, flip_a_tensor_byte], ids=["truncated", "bit-flipped"])
def test_last_resumes_from_the_newest_valid_checkpoint_and_names_the_bad_one(tmp_path: Path, caplog, damage) -> None:
    older, newer, last = save_checkpoints(tmp_path / "checkpoints", [2, 3, 4])
    mtime = last.stat().st_mtime_ns
    damage(last)
    os.utime(last, ns=(mtime, mtime))
    with caplog.at_level(logging.WARNING):
        assert resolve_ckpt_path("last", tmp_path) == str(newer)
    assert str(last) in caplog.text
    damage(newer)
    assert resolve_ckpt_path("last", tmp_path) == str(older)
    damage(older)
    with pytest.raises(FileNotFoundError, match="ckpt_path=last: no valid checkpoint in"):
        resolve_ckpt_path("last", tmp_path)


def test_last_follows_a_linked_last_ckpt_and_skips_a_dangling_one(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    older, newer, _ = save_checkpoints(directory, [2, 3, 5])
    (directory / "last.ckpt").unlink()
    (directory / "last.ckpt").symlink_to(newer.name)  # Lightning's save_last="link"
    assert Path(resolve_ckpt_path("last", tmp_path)).resolve() == newer.resolve()
    newer.unlink()  # the link now points nowhere
    assert resolve_ckpt_path("last", tmp_path) == str(older)


@pytest.mark.parametrize("damage", [truncate, flip_a_tensor_byte], ids=["truncated", "bit-flipped"])
def test_an_explicit_corrupt_checkpoint_is_an_error_naming_the_file(tmp_path: Path, damage) -> None:
    (path,) = save_checkpoints(tmp_path, [4])
    damage(path)
    with pytest.raises(CheckpointError, match=str(path)):
        resolve_ckpt_path(str(path), tmp_path)
    with pytest.raises(CheckpointError, match=str(path)):  # what the Trainer calls to resume
        AtomicCheckpointIO().load_checkpoint(path)
    with pytest.raises(CheckpointError, match=str(path)):  # model.init_from
        build_gpt(init_from=path, n_layer=1, n_head=1, n_embd=8, block_size=8)


# ----------------------------------------------------------------------------- no pickled code runs


class _Payload:
    """Unpickling this object would create ``marker``: proof that pickled code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoints_and_hf_weights_load_without_running_pickled_code(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"global_step": 1, "state_dict": {}, "payload": _Payload(marker)}, ckpt)
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    torch.save({"wte.weight": torch.zeros(2), "payload": _Payload(marker)}, hf / "pytorch_model.bin")
    for load in (
        lambda: read_checkpoint(ckpt),
        lambda: AtomicCheckpointIO().load_checkpoint(ckpt),
        lambda: build_gpt(init_from=ckpt, n_layer=1, n_head=1, n_embd=8, block_size=8),
        lambda: read_hf_gpt2(str(hf)),
    ):
        with pytest.raises(CheckpointError, match="evil.ckpt|pytorch_model.bin"):
            load()
    assert not marker.exists()
    with pytest.raises(ValueError, match="weights_only=True only"):
        AtomicCheckpointIO().load_checkpoint(ckpt, weights_only=False)
    pickle.loads(pickle.dumps(_Payload(marker)))  # the payload is live: plain unpickling runs it
    assert marker.exists()


# ----------------------------------------------------------------------------- NaN / Inf loss


def test_a_nan_loss_exits_non_zero_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    data = write_corpus(tmp_path / "data")
    # a learning rate this large makes every weight ~1e30 after one step: the next loss is inf/nan
    overrides = [*run_overrides(data), "regime.module.lr=1e30", "regime.module.warmup_steps=0"]
    process = start_gptlab(tmp_path / "run", overrides, tmp_path / "cache", tmp_path / "run.log")
    assert process.wait(timeout=240) != 0
    log = (tmp_path / "run.log").read_text()
    assert "NonFiniteLossError" in log and "at step 1 " in log, log[-3000:]
    last = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 1
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())
    assert not (tmp_path / "run" / "results.jsonl").exists()


# ----------------------------------------------------------------------------- dropout after a resume


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Killed(Exception):
    """Raised by ``KillAt``: Lightning saves nothing on an exception, so this is a kill in-process."""


class KillAt(pl.Callback):
    """Dies as the first batch after optimizer step ``step`` starts."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise Killed(f"killed after step {self.step}")


def fit_in(
    compose_config, tmp_path: Path, run: str, overrides: list[str], kill_after: int | None = None,
    ckpt_path: str | None = None,
) -> dict[str, torch.Tensor]:
    """Fit in ``tmp_path/run`` (dying after step ``kill_after``, if given); the module's final state."""
    cfg = compose_config(*overrides, f"paths.output_dir={tmp_path / run}", f"paths.cache_dir={tmp_path / 'cache'}")
    pl.seed_everything(cfg.seed)
    datamodule, module, trainer = build_all(cfg)
    if kill_after is not None:
        trainer.callbacks.append(KillAt(kill_after))
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return module.state_dict()


def test_a_killed_run_resumes_exactly_in_process(tmp_path: Path, one_thread, compose_config) -> None:
    overrides = [
        *run_overrides(write_corpus(tmp_path / "data")), "trainer.max_steps=6", "trainer.val_check_interval=3",
        "callbacks.model_checkpoint.every_n_train_steps=2",
    ]

    def fit(run: str, kill_after: int | None = None, ckpt_path: str | None = None):
        return fit_in(compose_config, tmp_path, run, overrides, kill_after, ckpt_path)

    straight = fit("a")
    with pytest.raises(Killed):
        fit("b", kill_after=4)  # after the step-4 checkpoint; a validation ran at step 3 before it
    torch.manual_seed(999)  # a restarted process starts from another random state
    last = resolve_ckpt_path("last", tmp_path / "b")
    assert read_checkpoint(last)["global_step"] == 4
    resumed = fit("b", ckpt_path=last)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_a_fine_tuning_run_killed_mid_epoch_resumes_exactly(tmp_path: Path, one_thread, compose_config) -> None:
    overrides = [
        "regime=finetune", "task=demo_topic", "task.train_limit=48", "model=gpt-nano",
        "model.block_size=64", "model.dropout=0.1", "regime.batch_size=8", "regime.global_batch_size=8",
        "trainer.max_epochs=2", "trainer.deterministic=true", "callbacks.progress_bar=null",
        "trainer.enable_progress_bar=false", "callbacks.model_checkpoint.every_n_train_steps=1",
    ]

    def fit(run: str, kill_after: int | None = None, ckpt_path: str | None = None):
        return fit_in(compose_config, tmp_path, run, overrides, kill_after, ckpt_path)

    straight = fit("a")  # 6 steps an epoch
    with pytest.raises(Killed):
        fit("b", kill_after=9)  # in the middle of the second epoch
    torch.manual_seed(999)
    resumed = fit("b", ckpt_path=resolve_ckpt_path("last", tmp_path / "b"))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


# ----------------------------------------------------------------------------- token cache


def test_a_cache_written_by_another_cache_version_is_rebuilt(tmp_path: Path, caplog) -> None:
    spec = TaskSpec.from_config(lines_corpus(tmp_path))
    built, _ = token_shards(spec, tmp_path, 1)
    folder = built["train"].folder
    for name in (shards.MANIFEST, "step-000000.json"):
        meta = json.loads((folder / name).read_text())
        (folder / name).write_text(json.dumps({**meta, "cache_version": shards.CACHE_VERSION - 1}))
    with caplog.at_level(logging.INFO):
        again, _ = token_shards(spec, tmp_path, 1)
    assert "cache version changed" in caplog.text and "written by cache version" in caplog.text
    assert json.loads((folder / shards.MANIFEST).read_text())["cache_version"] == shards.CACHE_VERSION
    assert again["train"].tokens == built["train"].tokens


# ----------------------------------------------------------------------------- bad data files


def tsv_spec(directory: Path, content: bytes, **overrides) -> TaskSpec:
    (directory / "train.tsv").write_bytes(content)
    values = {
        "name": "tiny", "kind": "classification", "format": "glue_tsv", "data_dir": str(directory),
        "files": {"train": "train.tsv"}, "fields": {"text": "sentence", "label": "label"},
        "labels": ["negative", "positive"], "eval_splits": [],
    }
    return TaskSpec(**{**values, **overrides})


CP1252 = "sentence\tlabel\nfine\t1\n\u201cquoted\u201d caf\u00e9\t0\n".encode("cp1252")


def test_a_windows_1252_file_names_the_line_and_the_encoding_option(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError) as err:
        load_task(tsv_spec(tmp_path, CP1252))
    message = str(err.value)
    assert f"{tmp_path / 'train.tsv'}, line 3: bytes b'\\x93'" in message and "task.options.encoding" in message
    _, data = load_task(tsv_spec(tmp_path, CP1252, options={"encoding": "cp1252"}))
    assert data["train"] == [{"text": "fine", "label": 1}, {"text": "\u201cquoted\u201d caf\u00e9", "label": 0}]
    with pytest.raises(DataFormatError, match="unknown encoding 'klingon'"):
        load_task(tsv_spec(tmp_path, CP1252, options={"encoding": "klingon"}))


def test_a_windows_1252_corpus_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes("line one\nna\u00efve\n".encode("cp1252"))
    task = TaskSpec(name="toy", kind="lm", format="text", data_dir=str(tmp_path), files={"train": "a.txt"})
    with pytest.raises(DataFormatError, match=r"a\.txt, line 2: bytes b'\\xef' are not UTF-8"):
        read_split(task, "train")


def test_blank_lines_are_skipped_and_counted(tmp_path: Path, caplog) -> None:
    spec = tsv_spec(tmp_path, b"sentence\tlabel\n\na\t1\n\r\nb\t0\n\n")
    skipped: dict[str, int] = {}
    with caplog.at_level(logging.INFO, logger="gptlab.data.sources"):
        _, data = load_task(spec, skipped_lines=skipped)
    assert [e["text"] for e in data["train"]] == ["a", "b"]
    assert skipped == {"train": 3}
    assert "skipped 3 blank line(s)" in caplog.text and str(tmp_path / "train.tsv") in caplog.text
    (tmp_path / "c.jsonl").write_text('{"text": "x"}\n\n   \n{"text": "y"}\n')
    task = TaskSpec(name="toy", kind="lm", format="jsonl", data_dir=str(tmp_path), files={"train": "c.jsonl"})
    with caplog.at_level(logging.INFO, logger="gptlab.data.sources"):
        raw = read_split(task, "train")
    assert ([e["text"] for e in raw.examples], raw.blank_lines) == (["x", "y"], 2)
    assert "skipped 2 blank line(s)" in caplog.text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"sentence\tlabel\n   \t1\nb\t\n", r"line 3: label '' is not one of the labels"),  # missing label
        (b"sentence\tlabel\na\tpositive\nb\tneutral\n", r"line 3: label 'neutral' is not one of"),
        (b"sentence\tlabel\na\t1\nb\n", r"line 3: 1 tab-separated columns, expected 2"),
        (b"sentence\tlabel\n   \n", r"line 2: 1 tab-separated columns, expected 2"),  # spaces are a row
    ],
)
def test_malformed_or_unlabelled_rows_name_file_and_line(tmp_path: Path, content: bytes, message: str) -> None:
    with pytest.raises(DataFormatError, match=f"{tmp_path / 'train.tsv'}, {message}"):
        load_task(tsv_spec(tmp_path, content))


@pytest.mark.parametrize("label", ["nan", "inf", "-inf"])
def test_non_finite_regression_labels_are_errors(tmp_path: Path, label: str) -> None:
    spec = tsv_spec(tmp_path, f"sentence\tlabel\na\t1.5\nb\t{label}\n".encode(), labels=None, regression=True)
    with pytest.raises(DataFormatError, match=f"line 3: regression label '{label}' is not a finite number"):
        load_task(spec)


def test_a_very_long_csv_field_names_the_line(tmp_path: Path) -> None:
    header = "InputSentence1,InputSentence2,InputSentence3,InputSentence4,RandomFifthSentenceQuiz1,RandomFifthSentenceQuiz2,AnswerRightEnding\n"
    (tmp_path / "val.csv").write_text(header + "a,b,c,d,e,f,1\n" + "a" * 200_000 + ",b,c,d,e,f,2\n")
    spec = TaskSpec(name="sc", kind="multiple_choice", format="storycloze_csv", data_dir=str(tmp_path),
                    files={"train": "val.csv"}, eval_splits=[], options={"label_base": 1})
    with pytest.raises(DataFormatError, match=r"val\.csv, line 3: malformed CSV \(field larger than field limit"):
        load_task(spec)


def test_a_conll_file_with_inconsistent_columns_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("-DOCSTART- -X- -X- O\n\nEU NNP I-NP I-ORG\nrejects VBZ O\n")
    spec = TaskSpec(name="ner", kind="ner", format="conll", data_dir=str(tmp_path), files={"train": "train.txt"},
                    labels=["O", "I-ORG"], eval_splits=[])
    with pytest.raises(DataFormatError, match=r"train\.txt, line 4: 3 columns, expected 4"):
        load_task(spec)
