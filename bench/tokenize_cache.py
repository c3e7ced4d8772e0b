"""Tokenizing and caching a corpus: gptlab's TextDataModule cache build vs single-threaded tiktoken.

The corpus is WikiText-2 (``wikitext2/test.nonempty-crlf.raw``, one document per line) and tiny
Shakespeare (``tinyshakespeare/input.txt``, one document) from the shared data folder
(``../shared/data`` beside the checkout, or ``$GPTLAB_SHARED_DATA``), read through the shipped
task specs with ``data_dir``/``files`` pointed there. gptlab's side is ``TextDataModule.prepare_data``
into a fresh cache directory (list the files, cut them into units, tokenize those in ``num_proc=2``
worker processes, write the uint16 shards and their sidecars); the peer is ``encode_ordinary`` of the same
BPE (``gptlab.get_tokenizer()``) over the same documents, already in memory, on one thread. A second
``prepare_data`` on the same cache directory is then served from the cache. Targets: the build >= 1.7x
faster than the peer; the cached run >= 20x faster than the build.

Each peer sample also times the ceiling for two threads: tiktoken alone (``encode_to_numpy``) on two
threads over the units gptlab cuts the same documents into, with nothing else to do. No build on two
threads can beat it, so its ratio to the peer shows how much of the target the machine allows. It
also times the same encoding on one thread, from which the profile note derives the best ratio a
build could reach with a perfect two-way split of the encoding.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

import common
from gptlab.data import corpus_units, tokenize, unit_encoding
from gptlab.data.sources import read_split
from gptlab.data.text import TextDataModule
from gptlab.tasks.spec import TaskSpec
from gptlab.data.tokenizer import EOT_ID, get_tokenizer
from gptlab.resources import config_dir

BUILD_TARGET = 1.7
THREADS = 2  # TextDataModule's default num_proc: the processes the build encodes in
CACHE_TARGET = 20.0
# (task spec in tasks/, folder in the shared data, file)
CORPORA = (("wikitext2", "wikitext2", "test.nonempty-crlf.raw"), ("tinyshakespeare", "tinyshakespeare", "input.txt"))
QUICK_BYTES = 32 * 1024


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
    return [example["text"] for example in read_split(TaskSpec.from_config(spec), "train").examples]


def unit_texts(spec: dict[str, Any]) -> list[list[str]]:
    """The texts of each unit the build encodes (``gptlab.data.corpus_units``)."""
    corpus = corpus_units.plan_corpus(TaskSpec.from_config(spec))
    return [[text for _, text, _, _ in unit_encoding.unit_pieces(corpus.reading, unit)[0]] for unit in corpus.units(0)]


def build(spec: dict[str, Any], cache_dir: str) -> TextDataModule:
    datamodule = TextDataModule(spec, block_size=256, batch_size=8, cache_dir=cache_dir)
    datamodule.prepare_data()
    return datamodule


def main(argv: Sequence[str] | None = None) -> common.Report:
    args = common.parse_args(__doc__.splitlines()[0], argv, warmup=1, pairs=11)
    common.setup_torch()
    import datasets

    datasets.disable_progress_bars()  # a bar per split and pair would bury the table
    data_root = common.shared_data_dir()
    with tempfile.TemporaryDirectory() as quick_dir:
        if args.quick:
            data_root = truncated_copy(data_root, Path(quick_dir), QUICK_BYTES)
        return measure(args, task_specs(data_root))


def measure(args: Any, specs: list[dict[str, Any]]) -> common.Report:
    encoder = get_tokenizer()
    docs = {spec["name"]: documents(spec) for spec in specs}
    names = list(docs)
    per_corpus = {n: {"peer": [], "build": [], "cached": [], "ceiling": [], "serial": []} for n in names}
    units = {spec["name"]: unit_texts(spec) for spec in specs}  # as the build cuts them

    def encode_unit(texts: list[str]) -> list[Any]:
        return [tokenize.encode(text) for text in texts]

    def peer() -> float:
        total = 0.0
        for name in names:
            seconds = common.wall(lambda: [encoder.encode_ordinary(d) for d in docs[name]])()
            per_corpus[name]["peer"].append(seconds)
            total += seconds
        with ThreadPoolExecutor(THREADS) as pool:
            for name in names:
                run = lambda: list(pool.map(encode_unit, units[name]))  # noqa: E731
                per_corpus[name]["ceiling"].append(common.wall(run)())
        for name in names:
            per_corpus[name]["serial"].append(common.wall(lambda: [encode_unit(u) for u in units[name]])())
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

    # The same tokens on both sides, checked once before timing: the cache holds exactly
    # encode_ordinary's ids (one EOT after each document), split between train and val.
    for spec in specs:
        name = spec["name"]
        reference = [t for d in docs[name] for t in (*encoder.encode_ordinary(d), EOT_ID)]
        with tempfile.TemporaryDirectory() as cache_dir:
            datamodule = build(spec, cache_dir)
            datamodule.setup()
            ours = [np.fromfile(s.path, dtype=np.uint16) for split in ("train", "val") for s in datamodule.shards(split)]
        assert sorted(np.concatenate(ours).tolist()) == sorted(reference), f"{name}: ids differ"
    tokens = {name: sum(len(ids) + 1 for ids in encoder.encode_ordinary_batch(docs[name])) for name in names}
    sizes = {name: sum(len(d.encode()) for d in docs[name]) for name in names}

    print(f"tokenize_cache: {', '.join(f'{n} {sizes[n] / 1e6:.2f} MB' for n in names)}")
    pairs = common.alternate(gptlab, peer, args.pairs, warmup=args.warmup, names=("gptlab build s", "tiktoken s"))
    for series in per_corpus.values():  # drop the warm-up samples
        for key in series:
            del series[key][: len(series[key]) - args.pairs]

    def total(key: str) -> list[float]:
        return [sum(per_corpus[n][key][i] for n in names) for i in range(args.pairs)]

    median = statistics.median
    build_target = common.Target(
        "tokenize+cache speed, gptlab build / tiktoken single thread", pairs.ratio, BUILD_TARGET
    )
    cache_target = common.Target(
        "cached run speed / first run (build)",
        median(build / cached for build, cached in zip(pairs.a, total("cached"))),
        CACHE_TARGET,
    )
    ceiling = median(peer / ceil for peer, ceil in zip(total("peer"), total("ceiling")))
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
                f"{median(s['ceiling']):.3f} ({median(p / c for p, c in zip(s['peer'], s['ceiling'])):.2f})",
                f"{1e3 * median(s['cached']):.1f}",
            )
        )
    rows.append(
        (
            "**corpus (both)**",
            f"{pairs.median_b:.3f}",
            f"{pairs.median_a:.3f}",
            f"{pairs.ratio:.2f} (per pair {pairs.spread()})",
            f"{median(total('ceiling')):.3f} ({ceiling:.2f})",
            f"{1e3 * median(total('cached')):.1f}",
        )
    )
    report = common.Report(
        key="tokenize_cache",
        title="Tokenize and cache a corpus: TextDataModule vs single-threaded tiktoken",
        headers=(
            "corpus",
            "tiktoken 1 thread (s)",
            "gptlab build (s)",
            "speed ratio",
            f"ceiling: tiktoken alone on {THREADS} threads (s) (ratio)",
            "gptlab cached run (ms)",
        ),
        rows=rows,
        loads=pairs.loads,
        targets=[build_target, cache_target],
        notes=[
            f"{args.pairs} alternating pairs after {args.warmup} warm-up pair(s); times are medians, ratios "
            "medians of the per-pair ratios. gptlab: `TextDataModule(task).prepare_data()` "
            "into a fresh temporary cache directory (the shipped task specs with `data_dir`/`files` set to the "
            f"shared files; defaults: `num_proc={THREADS}`, the processes it encodes in); cached run: a new "
            "datamodule's `prepare_data()` on the same directory right after. Peer: `encode_ordinary` per "
            "document of `gptlab.get_tokenizer()` (the same BPE) over the same documents, already read and "
            "decoded (no I/O, no hashing, no writing).",
            f"gptlab encodes on {THREADS} threads (a corpus under "
            f"{corpus_units.THREADS_BELOW_BYTES // 2**20} MiB; larger ones in as many processes), each reading its "
            f"own units of the files ({corpus_units.SMALL_CORPUS_UNITS} of them for a corpus this small, cut at a "
            "line end, or for a one-document file only "
            "between a non-space and a whitespace character, where GPT-2's pre-tokenizer provably cuts "
            "anyway), and writes shards. Ids checked equal to `encode_ordinary`'s before timing (one EOT per "
            "document included), and the cached token counts too.",
            f"Ceiling: each peer sample also times `encode_to_numpy` alone on {THREADS} threads over the "
            "same units' texts (no reading, splitting, processes or writing); its speed-up over the peer is "
            f"what {THREADS} threads of tiktoken reach on this machine at this load, so no build can beat it.",
        ],
    )
    if not build_target.met or not cache_target.met or args.quick:
        with tempfile.TemporaryDirectory() as cache_dir:
            profile = common.python_profile(lambda: [build(spec, cache_dir) for spec in specs])
        stage = {
            "list the files and cut them into units": profile.cumulative("plan_corpus", "corpus_units.py")
            + profile.cumulative("_file_units", "corpus_units.py"),
            "encode in the workers (waiting for them)": profile.cumulative("_encoded", "unit_encoding.py"),
            "append to the shards": profile.cumulative("add", "shards.py"),
            "close shards + write sidecars": profile.cumulative("close", "shards.py"),
        }
        # The stages that are not tiktoken's encoding; a perfect split halves the encoding only.
        fixed = sum(v for k, v in stage.items() if not k.startswith("encode"))
        serial = median(total("serial"))
        best = median(total("peer")) / (serial / THREADS + fixed)
        report.notes.append(
            f"Profile of one build of both corpora (targets "
            f"{'met' if build_target.met and cache_target.met else 'missed'}), main thread, "
            "cumulative ms by stage: "
            + ", ".join(f"{what} {1e3 * seconds:.0f}" for what, seconds in stage.items())
            + f"; peer for the same text: {1e3 * pairs.median_b:.0f}, ceiling on {THREADS} threads: "
            f"{1e3 * median(total('ceiling')):.0f}, the same encoding on 1 thread: {1e3 * serial:.0f}. "
            "The main process waits for the worker processes. What bounds "
            f"the ratio: the build cannot beat the ceiling ({ceiling:.2f}x here), and it adds the stages "
            f"other than encoding ({1e3 * fixed:.0f} ms: planning, appending, writing). Even a "
            f"perfect split of the 1-thread encoding over {THREADS} threads plus those stages gives "
            f"{1e3 * serial / THREADS:.0f} + {1e3 * fixed:.0f} ms, a ratio of at most {best:.2f}. Own time "
            f"by package: {profile.by_package}."
        )
        report.profiles.append(("Top functions of one build (cProfile own time, main thread):", profile.table))
    report.publish("tokenize_cache.py", args)
    return report


if __name__ == "__main__":
    main()
