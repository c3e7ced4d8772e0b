"""The one reading layer: a task's files in a named format (or a Hub dataset) -> normalised examples.

Every task, of every kind (``gptlab.tasks.kinds``), is read here: ``read_split`` gives one split's
examples as written, ``load_task`` / ``load_split`` the labelled examples with their labels as ids,
``document_source`` (``documents.py``) an ``lm`` corpus's documents. Local files are
``<spec.data_dir>/<spec.files[split]>``, where a split names a file, a glob or a list of them
(read in order, each glob's matches sorted).

**Formats.** ``FORMATS`` lists them: one reader per local file format (``files.py``), ``hub``
(``hub.py``), and the built-in ``demo`` tasks and ``embedded`` corpus, which need no files.

**Carved splits.** A split named in ``task.carve.sizes`` is dealt out of the ``from`` split's
examples (``carve_split``): shuffled with the carve's own seed, cut in the order of ``sizes``, each
part kept in file order, so every run of the task, fine-tuned or prompted, sees the same split. Its
examples keep the file lines they came from.

**Fields.** ``spec.fields`` maps a normalised field to where it lives in a source record
(``records.py``); fixed-layout formats know their fields and a kind may have defaults (an ``lm``
corpus reads column ``text``).

**COPA.** As lm-evaluation-harness builds it: context = the premise, stripped, without its final
period, + ``" because"`` (asks-for cause) or ``" therefore"`` (effect); each answer gets a
lower-case first letter, so ``context + " " + answer`` reads as one sentence.

**Labels.** A class label or NER tag is a name in ``labels``, or an integer index into it (GLUE's
TSVs write 0/1 for the classes in the declared order). A multiple-choice label is a 0-based index
into ``choices``: the answer key's position in ``choice_labels`` when the task names them, else a
letter (A = 0), else an integer minus ``options.label_base``. Regression labels are floats.
Anything else is a ``DataFormatError`` naming the file and line (1-based).

**Encoding.** One decoding for every text format: UTF-8 (a leading BOM is dropped), or the codec
named in ``options.encoding`` (e.g. ``cp1252``). A byte that does not decode is a
``DataFormatError`` naming the file, the line of the first bad byte and the option.

**Skip policy.** Only blank lines are skipped: in TSV, CSV, JSON-lines and line-per-document files
they carry no record (in CoNLL they separate sentences). Each split logs how many it skipped, and
callers that ask get the counts (a run writes them to its results as ``skipped_blank_lines``).
Every other defect (a row with the wrong number of columns, invalid JSON or XML, a missing field,
a label outside the label set, a non-finite regression label) is an error: no row is ever dropped
or relabelled silently.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import random
from pathlib import Path
from typing import Any

from gptlab.data.sources.base import DataFormatError, Loc, Raw, decode, encoding_of
from gptlab.data.sources.files import ANY_ANSWER, FILE_FORMATS, read_parquet
from gptlab.data.sources.hub import read_hub
from gptlab.data.sources.labels import encode_labels, label_set, needs_label_set, train_subset
from gptlab.data.sources.records import check_fields
from gptlab.tasks.kinds import KINDS
from gptlab.tasks.spec import TaskSpec

__all__ = ["DataFormatError", "FORMATS", "load_split", "load_task", "read_split", "split_paths"]

log = logging.getLogger(__name__)

FORMATS = {
    **{name: fmt.description for name, fmt in FILE_FORMATS.items()},
    "hub": "datasets.load_dataset(**hub), e.g. hub: {path, name}; the hub entry's optional splits "
    "(split -> Hub split), fields and options replace the task's for the Hub copy",
    "demo": "gptlab's built-in demo tasks (gptlab.data.demo_tasks); needs no files",
    "embedded": "Python's own documentation as a corpus (gptlab.data.corpus); needs no files",
    "mixture": "several lm corpora in one training stream, each by its weight: mixture: {<source>: {task: "
    "<an lm task>, weight: <share>}} (gptlab.data.mixture)",
}
# Formats that read no local files, with the answer layouts they hold (see files.FileFormat).
_BUILTIN_ANSWERS = {"demo": ("class", "tags", "choice"), "embedded": (None,), "mixture": (None,), "hub": ANY_ANSWER}
DEFAULT_SEED = 1234


def describe(fmt: str) -> str:
    return f"format {fmt!r}: {FORMATS[fmt]}"


def formats_reading(kind: str) -> list[str]:
    """The formats that can read tasks of ``kind``, in ``FORMATS`` order."""
    return [fmt for fmt in FORMATS if KINDS[kind].label in _answers(fmt)]


def _answers(fmt: str) -> tuple[str | None, ...]:
    return FILE_FORMATS[fmt].answers if fmt in FILE_FORMATS else _BUILTIN_ANSWERS[fmt]


def check_format(spec: TaskSpec) -> None:
    """The format exists and reads the task's kind."""
    if spec.format not in FORMATS:
        raise DataFormatError(
            f"task {spec.name!r}: unknown format {spec.format!r}; valid formats: {', '.join(FORMATS)}"
        )
    kinds = [name for name, kind in KINDS.items() if kind.label in _answers(spec.format)]
    if spec.kind not in kinds:
        raise DataFormatError(
            f"task {spec.name!r}: format {spec.format!r} reads kind(s) {', '.join(kinds)}, not {spec.kind!r}"
        )


def split_paths(spec: TaskSpec, split: str) -> list[Path]:
    """The local files of ``split``: each name, glob or list entry in ``spec.files[split]``, in order."""
    if spec.data_dir is None:
        raise DataFormatError(
            f"task {spec.name!r}: {describe(spec.format)} reads local files, but data_dir is not set "
            "(set paths.data_dir or task.data_dir)"
        )
    if split not in spec.files:
        raise DataFormatError(f"task {spec.name!r}: no file for split {split!r}; files: {dict(spec.files)}")
    data_dir = Path(spec.data_dir).expanduser()
    entries = spec.files[split]
    paths: list[Path] = []
    for pattern in [entries] if isinstance(entries, str) else entries:
        matches = sorted(p for p in data_dir.glob(pattern) if p.is_file() or p.is_symlink()) if glob.has_magic(
            pattern
        ) else [data_dir / pattern]
        if broken := [p for p in matches if glob.has_magic(pattern) and not p.is_file()]:  # never skipped silently
            raise DataFormatError(
                f"{broken[0]}: a link to a file that does not exist, so it cannot be read (task {spec.name!r}, "
                f"split {split!r}, files {pattern!r})"
            )
        if not matches or not matches[0].is_file():
            online = " (online, task.format=hub reads the Hub copy)" if spec.hub else ""
            what = "no file matches" if glob.has_magic(pattern) else "no such file"
            raise DataFormatError(
                f"{data_dir / pattern}: {what} (task {spec.name!r}, split {split!r}); expected "
                f"{describe(spec.format)}{online}"
            )
        paths += matches
    return paths


def read_split(spec: TaskSpec, split: str, carved_from: Raw | None = None) -> Raw:
    """One split's examples as written (class labels not yet ids), with where each came from.
    ``carved_from``: the carve's ``from`` split, when the caller has read it already."""
    check_format(spec)
    if split in spec.carved:
        raw = carve_split(spec, split, carved_from or read_split(spec, spec.carve["from"]))
    elif spec.format == "demo":
        raw = _read_demo(spec, split)
    elif spec.format == "hub":
        raw = read_hub(spec, split)
    else:
        raw = _read_files(spec, split)
    if not raw.examples:
        raise DataFormatError(f"{raw.source}: no examples in split {split!r} of task {spec.name!r}")
    if raw.blank_lines:
        log.info("task %r, split %r: %s: skipped %d blank line(s)", spec.name, split, raw.source, raw.blank_lines)
    return raw


def carve_split(spec: TaskSpec, split: str, whole: Raw) -> Raw:
    """Carved split ``split`` of the examples ``whole`` of ``spec.carve['from']`` (see the module doc)."""
    sizes, n = spec.carved, len(whole.examples)
    fixed = sum(size for size in sizes.values() if size is not None)
    rest = n - fixed
    if rest < 0 or (rest == 0 and None in sizes.values()):
        raise DataFormatError(
            f"task {spec.name!r}: carve.sizes {sizes} ask for {fixed} examples"
            f"{' and a non-empty rest' if None in sizes.values() else ''}, but split "
            f"{spec.carve['from']!r} ({whole.source}) has {n}"
        )
    order = random.Random(spec.carve["seed"]).sample(range(n), n)
    start = 0
    for name, size in sizes.items():
        size = rest if size is None else size
        if name == split:
            keep = sorted(order[start : start + size])
            break
        start += size
    first = next(iter(sizes)) == split  # the source's blank lines are counted once, with its first part
    return Raw(
        f"{whole.source} (carved: {split!r}, {len(keep)} of {n}, carve.seed={spec.carve['seed']})",
        [whole.examples[i] for i in keep],
        [whole.locs[i] for i in keep],
        whole.tags_on_lines,
        whole.blank_lines if first else 0,
    )


def _read_files(spec: TaskSpec, split: str) -> Raw:
    fmt = FILE_FORMATS[spec.format]
    fields = {**(fmt.fields or {}), **spec.fields_or_defaults}
    options = {**(fmt.options or {}), **spec.options}
    check_fields(spec, fields)
    paths = split_paths(spec, split)
    raw = Raw(", ".join(map(str, paths)))
    for path in paths:
        if fmt.reader is None:
            raw.extend(read_parquet(spec, path, fields, options))
            continue
        text = decode(path, encoding_of(options), describe(spec.format))
        raw.extend(fmt.reader(spec, path, text, fields, options))
    return raw


def _read_demo(spec: TaskSpec, split: str) -> Raw:
    from gptlab.data.demo_tasks import read_demo_split  # lazy: the demo tasks are optional here

    source = f"demo task {spec.name!r} split {split!r}"
    examples = read_demo_split(spec, split)  # fresh copies, so encoding labels in place is safe
    return Raw(source, examples, [Loc(source, "example", n) for n in range(1, len(examples) + 1)])


def load_split(spec: TaskSpec, split: str, skipped_lines: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """All normalised examples of one split (``train_limit`` is applied by ``load_task``).

    With ``labels: null`` the label set is read from the training split, as ``load_task`` does.
    ``skipped_lines``, when given, receives ``split`` -> blank lines skipped (the skip policy).
    """
    labels = spec.labels
    if labels is None and needs_label_set(spec):
        labels = label_set(read_split(spec, spec.train_split), spec.task_kind.label_field)
    raw = read_split(spec, split)
    if skipped_lines is not None:
        skipped_lines[split] = raw.blank_lines
    return encode_labels(spec, labels, raw)


def load_task(
    spec: TaskSpec, seed: int = DEFAULT_SEED, skipped_lines: dict[str, int] | None = None
) -> tuple[TaskSpec, dict[str, list[dict[str, Any]]]]:
    """The spec with its label set resolved, and split -> examples for train and every eval split.

    ``train_limit`` keeps that many training examples, drawn with ``seed`` (same seed, same subset)
    and kept in file order. ``skipped_lines``, when given, receives split -> blank lines skipped
    (the skip policy in the module doc).
    """
    if spec.task_kind.label is None:
        raise DataFormatError(
            f"task {spec.name!r}: kind {spec.kind!r} has no labelled examples (its documents are read by "
            "gptlab.data.sources.documents)"
        )
    splits = [spec.train_split, *(s for s in spec.eval_splits if s != spec.train_split)]
    # the file the carved splits are dealt from is read once for all of them
    whole = read_split(spec, spec.carve["from"]) if any(s in spec.carved for s in splits) else None
    raw = {split: read_split(spec, split, whole) for split in splits}
    if spec.labels is None and needs_label_set(spec):
        spec = dataclasses.replace(spec, labels=label_set(raw[spec.train_split], spec.task_kind.label_field))
        log.info(
            "task %r: labels: null, so the label set was read from %s: %s",
            spec.name, raw[spec.train_split].source, spec.labels,
        )
    data = {split: encode_labels(spec, spec.labels, r) for split, r in raw.items()}
    if skipped_lines is not None:
        skipped_lines.update({split: r.blank_lines for split, r in raw.items()})
    if spec.train_limit is not None:
        data[spec.train_split] = train_subset(spec, data[spec.train_split], raw[spec.train_split].source, seed)
    return spec, data
