"""Tokenizing and caching a corpus: gptlab's TextDataModule cache build vs single-threaded tiktoken.

The corpus is WikiText-2 (``wikitext2/test.nonempty-crlf.raw``, one document per line) and tiny
Shakespeare (``tinyshakespeare/input.txt``, one document) from the shared data folder
(``../shared/data`` beside the checkout, or ``$GPTLAB_SHARED_DATA``), read through the shipped
task specs with ``data_dir``/``files`` pointed there. gptlab's side is ``TextDataModule.prepare_data``
into a fresh cache directory (hash the sources, read the documents, tokenize, write the uint16 token
files and their sidecars); the peer is ``encode_ordinary`` of the same BPE (``gptlab.get_tokenizer()``)
over the same documents, already in memory, on one thread. A second ``prepare_data`` on the same
cache directory is then served from the cache. Targets: the build >= 1.7x faster than the peer;
the cached run >= 20x faster than the build.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

import common
from gptlab.data.text import TextDataModule, TextTask, _read_documents
from gptlab.data.tokenizer import get_tokenizer
from gptlab.resources import config_dir

BUILD_TARGET = 1.7
CACHE_TARGET = 20.0
# (task spec in tasks/, folder in the shared data, file)
CORPORA = (("wikitext2", "wikitext2", "test.nonempty-crlf.raw"), ("tinyshakespeare", "tinyshakespeare", "input.txt"))
QUICK_BYTES = 32 * 1024


def shared_data_dir() -> Path:
    root = Path(os.environ.get("GPTLAB_SHARED_DATA") or common.REPO.parent / "shared" / "data")
    if not root.is_dir():
        raise SystemExit(f"tokenize_cache: shared data folder {root} is missing (set GPTLAB_SHARED_DATA)")
    return root


def task_specs(data_root: Path) -> list[dict[str, Any]]:
    """The shipped task specs, pointed at the shared files (the train split; val is held out)."""
    specs = []
    for task, folder, file in CORPORA:
        spec = OmegaConf.to_container(OmegaConf.load(config_dir() / "task" / f"{task}.yaml"), resolve=False)
        spec.update(data_dir=str(data_root / folder), files={"train": file})
        specs.append(spec)
    return specs


def truncated_copy(data_root: Path, into: Path, size: int) -> Path:
    """The corpus files cut to their first ``size`` bytes (at a line end), for ``--quick``."""
    for _, folder, file in CORPORA:
        text = (data_root / folder / file).read_bytes()[:size]
        (into / folder).mkdir(parents=True, exist_ok=True)
        (into / folder / file).write_bytes(text[: text.rfind(b"\n") + 1])
    return into


def documents(spec: dict[str, Any]) -> list[str]:
    """The documents the datamodule tokenizes (its own reader: same decoding, same document split)."""
    task = TextTask.from_spec(spec)
    assert task.data_dir is not None
    return [doc for file in task.files["train"] for doc in _read_documents(task, task.data_dir / file)]


def build(spec: dict[str, Any], cache_dir: str) -> TextDataModule:
    datamodule = TextDataModule(spec, block_size=256, batch_size=8, cache_dir=cache_dir)
    datamodule.prepare_data()
    return datamodule


def main(argv: Sequence[str] | None = None) -> common.Report:
    args = common.parse_args(__doc__.splitlines()[0], argv, warmup=1, pairs=11)
    common.setup_torch()
    import datasets

    datasets.disable_progress_bars()  # a bar per split and pair would bury the table
    data_root = shared_data_dir()
    with tempfile.TemporaryDirectory() as quick_dir:
        if args.quick:
            data_root = truncated_copy(data_root, Path(quick_dir), QUICK_BYTES)
        return measure(args, task_specs(data_root))


def measure(args: Any, specs: list[dict[str, Any]]) -> common.Report:
    encoder = get_tokenizer()
    docs = {spec["name"]: documents(spec) for spec in specs}
    names = list(docs)
    per_corpus: dict[str, dict[str, list[float]]] = {n: {"peer": [], "build": [], "cached": []} for n in names}

    def peer() -> float:
        total = 0.0
        for name in names:
            seconds = common.wall(lambda: [encoder.encode_ordinary(d) for d in docs[name]])()
            per_corpus[name]["peer"].append(seconds)
            total += seconds
        return total

    def gptlab() -> float:
        total = 0.0
        with tempfile.TemporaryDirectory() as cache_dir:
            for spec in specs:
                name = spec["name"]
                seconds = common.wall(lambda: build(spec, cache_dir))()
                per_corpus[name]["build"].append(seconds)
                per_corpus[name]["cached"].append(common.wall(lambda: build(spec, cache_dir))())
                total += seconds
        return total

    # The same tokens on both sides (one EOT after each document), checked once before timing.
    with tempfile.TemporaryDirectory() as cache_dir:
        for spec in specs:
            datamodule = build(spec, cache_dir)
            datamodule.setup()
            ours = datamodule.num_train_tokens + datamodule.num_val_tokens
            theirs = sum(len(ids) + 1 for ids in encoder.encode_ordinary_batch(docs[spec["name"]]))
            assert ours == theirs, f"{spec['name']}: gptlab cached {ours} tokens, tiktoken gives {theirs}"
    tokens = {name: sum(len(ids) + 1 for ids in encoder.encode_ordinary_batch(docs[name])) for name in names}
    sizes = {name: sum(len(d.encode()) for d in docs[name]) for name in names}

    print(f"tokenize_cache: {', '.join(f'{n} {sizes[n] / 1e6:.2f} MB' for n in names)}")
    pairs = common.alternate(gptlab, peer, args.pairs, warmup=args.warmup, names=("gptlab build s", "tiktoken s"))
    for series in per_corpus.values():  # drop the warm-up samples
        for key in series:
            del series[key][: len(series[key]) - args.pairs]
    cached_total = [sum(per_corpus[n]["cached"][i] for n in names) for i in range(args.pairs)]
    median = statistics.median
    build_target = common.Target(
        "tokenize+cache speed, gptlab build / tiktoken single thread", pairs.ratio, BUILD_TARGET
    )
    cache_target = common.Target(
        "cached run speed / first run (build)",
        median(build / cached for build, cached in zip(pairs.a, cached_total)),
        CACHE_TARGET,
    )
    rows = []
    for name in names:
        s = per_corpus[name]
        rows.append(
            (
                f"{name} ({len(docs[name]):,} document{'s' if len(docs[name]) != 1 else ''}, "
                f"{sizes[name] / 1e6:.2f} MB, {tokens[name]:,} tokens)",
                f"{median(s['peer']):.3f}",
                f"{median(s['build']):.3f}",
                f"{median(peer / build for peer, build in zip(s['peer'], s['build'])):.2f}",
                f"{1e3 * median(s['cached']):.1f}",
            )
        )
    rows.append(
        (
            "**corpus (both)**",
            f"{pairs.median_b:.3f}",
            f"{pairs.median_a:.3f}",
            f"{pairs.ratio:.2f} (per pair {pairs.spread()})",
            f"{1e3 * median(cached_total):.1f}",
        )
    )
    report = common.Report(
        key="tokenize_cache",
        title="Tokenize and cache a corpus: TextDataModule vs single-threaded tiktoken",
        headers=("corpus", "tiktoken 1 thread (s)", "gptlab build (s)", "speed ratio", "gptlab cached run (ms)"),
        rows=rows,
        loads=pairs.loads,
        targets=[build_target, cache_target],
        notes=[
            f"{args.pairs} alternating pairs after {args.warmup} warm-up pair(s); times are medians, ratios "
            "medians of the per-pair ratios. gptlab: `TextDataModule(task).prepare_data()` "
            "into a fresh temporary cache directory (the shipped task specs with `data_dir`/`files` set to the "
            "shared files; defaults: `num_proc=2`); cached run: a new datamodule's `prepare_data()` on the same "
            "directory right after. Peer: `encode_ordinary` per document of `gptlab.get_tokenizer()` (the same "
            "BPE) over the same documents, already read and decoded (no I/O, no hashing, no writing).",
            "Token counts of both sides are checked equal before timing (one EOT per document included).",
        ],
    )
    if not build_target.met or not cache_target.met or args.quick:
        with tempfile.TemporaryDirectory() as cache_dir:
            profile = common.python_profile(lambda: [build(spec, cache_dir) for spec in specs])
        stage = {
            "hash the sources": profile.cumulative("_sha256_file", "text.py"),
            "read the documents": profile.cumulative("load", "text.py"),
            "tokenize (datasets map)": profile.cumulative("tokenize_documents", "text.py"),
            "of which tiktoken's encode_ordinary_batch": profile.cumulative("encode_ordinary_batch", "core.py"),
            "write tokens + sidecars": profile.cumulative("_write_tokens", "text.py"),
        }
        report.notes.append(
            f"Profile of one build of both corpora (targets "
            f"{'met' if build_target.met and cache_target.met else 'missed'}), "
            "cumulative ms by stage: "
            + ", ".join(f"{what} {1e3 * seconds:.0f}" for what, seconds in stage.items())
            + f"; peer for the same text: {1e3 * pairs.median_b:.0f}. tiktoken's `encode_ordinary_batch` "
            "runs a batch's documents on a thread pool (one future per document) while the main thread waits "
            "(`_thread.lock.acquire` below), so a one-document corpus (tiny Shakespeare) gets one thread, and a "
            "many-document one gains only when a second core is free. Own time by package: "
            f"{profile.by_package}."
        )
        report.profiles.append(("Top functions of one build (cProfile own time, main thread):", profile.table))
    report.publish("tokenize_cache.py", args)
    return report


if __name__ == "__main__":
    main()
