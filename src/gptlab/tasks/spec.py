"""``TaskSpec``: the typed view of one ``tasks/<name>.yaml``.

A task says where its examples come from (local files in a named format, or a ``datasets`` Hub
id), how its fields map onto the normalised example of its kind (``gptlab.tasks.kinds``, which
lists every kind's example, language modelling included), its label set, metrics, and the prompt
used for in-context evaluation. Labels are indices into ``labels`` (class tasks) or floats
(``labels: null`` with ``regression: true``, e.g. STS-B).

**Prompts** (in-context evaluation, and the context of a fine-tuned generation task; see
``gptlab.data.prompts``). ``prompt`` is the task's default template and ``prompts`` maps names to
alternatives (``regime.prompt=<name>`` picks one); each is a ``PromptSpec``. ``template`` is a
``str.format`` string over the normalised example's fields, where a field may name a filter after
a colon (``PROMPT_FILTERS``: ``{text:strip}``, ``{text_b:sentence}``), or a list of them: an
example takes the first whose fields are all non-empty in it (Alpaca's template with and without
an input). ``choices`` are the verbalizers of the class labels, in label order, or
null for multiple choice (each example's own answers).

**Carved splits.** A task whose data has no training split names one to carve: ``carve: {from:
<split in files>, seed: <int>, sizes: {<split>: <count>, ...}}`` shuffles the ``from`` split's
examples with ``seed`` (the task's own, never the run's: every run sees the same split) and deals
them out in the order of ``sizes``, each carved split kept in file order. A size of null takes
all that the others leave.

**Generation** (kind ``generation``). ``generation`` holds the decoding and answer-matching
settings of a ``GenerationSpec``: stop strings (``until``), ``max_gen_toks`` and the
normalisation applied before generations are compared with the targets.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gptlab.bounds import Bound, check_fields
from gptlab.tasks.kinds import KINDS, TaskKind, task_kind

# Keys of earlier task YAMLs -> what replaced them (an old key is an error that names its successor).
RENAMED_KEYS = {"text_field": "fields.text"}
RENAMED_HUB_KEYS = {"text_field": "hub.fields.text", "split_train": "hub.splits.train",
                    "split_validation": "hub.splits.validation"}
# Template filters: ``{field:<filter>}``. ``sentence`` is lm-evaluation-harness's MNLI hypothesis:
# stripped, with a final period added unless it already ends with one.
PROMPT_FILTERS = {
    "strip": str.strip,
    "sentence": lambda text: text.strip() + ("" if text.strip().endswith(".") else "."),
}


@dataclass(frozen=True)
class PromptSpec:
    """One in-context template: how an example becomes a context and its answers continuations.

    Each answer is scored as the continuation ``target_delimiter + choice_prefix + choice`` of the
    rendered example; ``acc_norm`` divides by the characters of ``choice_prefix + choice``.
    ``choice_prefix`` exists for lm-evaluation-harness's COPA, whose answers begin with a space
    of their own on top of the delimiter.
    """

    name: str
    template: str | tuple[str, ...]
    choices: list[str] | None = None
    choice_prefix: str = ""
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"

    @classmethod
    def from_mapping(cls, task: str, name: str, values: Mapping[str, Any]) -> PromptSpec:
        """Build the prompt ``name`` of ``task``; unknown or missing keys are errors naming them."""
        known = {f.name for f in fields(cls)}
        where = f"task {task!r}, prompt {name!r}"
        if not isinstance(values, Mapping):
            raise ValueError(f"{where}: expected a mapping with keys {sorted(known)}, got {values!r}")
        if unknown := sorted(set(values) - known):
            raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(known)}")
        template = values.get("template")
        if not isinstance(template, str) and not (
            isinstance(template, (list, tuple)) and template and all(isinstance(t, str) for t in template)
        ):
            raise ValueError(
                f"{where}: needs a template string (or a list of them), e.g. \"{{text}}\\nAnswer:\""
            )
        if values.get("name", name) != name:
            raise ValueError(f"{where}: its name key says {values['name']!r}; drop it or make it {name!r}")
        choices = values.get("choices")
        if choices is not None and (
            isinstance(choices, str) or not all(isinstance(c, str) and c for c in choices)
        ):
            raise ValueError(f"{where}: choices must be a list of non-empty strings or null, got {choices!r}")
        if not isinstance(template, str):
            template = tuple(template)
        prompt = cls(**{**values, "name": name, "template": template,
                        "choices": None if choices is None else list(choices)})
        for text in prompt.templates:
            try:
                parts = list(string.Formatter().parse(text))
            except ValueError as err:
                raise ValueError(f"{where}: template {text!r} is not a format string ({err})") from None
            for _, _, spec, _ in parts:
                if spec and spec not in PROMPT_FILTERS:
                    raise ValueError(
                        f"{where}: unknown template filter {spec!r}; valid filters: {', '.join(PROMPT_FILTERS)}"
                    )
        return prompt

    @property
    def templates(self) -> tuple[str, ...]:
        """The template strings, in the order an example tries them."""
        return (self.template,) if isinstance(self.template, str) else self.template


@dataclass(frozen=True)
class GenerationSpec:
    """How a generation task decodes and matches its answers (the task YAML's ``generation``).

    Decoding is greedy, as lm-evaluation-harness's ``generate_until``: at most ``max_gen_toks``
    tokens, cut before the first of the stop strings ``until`` (``<|endoftext|>`` always stops).
    A generation is stripped of surrounding whitespace (lm-eval's ``remove_whitespace`` filter),
    then it and each target are normalised: ``regexes_to_ignore`` removed, lower-cased
    (``ignore_case``), punctuation removed (``ignore_punctuation``), digits removed
    (``ignore_numbers``), these in lm-eval's ``exact_match`` order; then the articles a/an/the
    dropped (``ignore_articles``) and runs of whitespace made one space (``collapse_whitespace``),
    as SQuAD's and TriviaQA's official scripts do. The defaults are those scripts' rules.
    ``first_word`` keeps only the first word generated, ending the generation at its end (GPT-2's
    LAMBADA protocol, where the answer is one word). ``samples``: the first so many examples of each
    eval split are generated even when no metric needs it, their answers written to
    ``predictions.jsonl`` (an instruction task's sample answers, beside its response perplexity).
    """

    until: tuple[str, ...] = ()
    max_gen_toks: int = field(default=256, metadata=Bound(ge=1).metadata)
    samples: int = field(default=0, metadata=Bound(ge=0).metadata)
    first_word: bool = False
    ignore_case: bool = True
    ignore_punctuation: bool = True
    ignore_numbers: bool = False
    ignore_articles: bool = True
    collapse_whitespace: bool = True
    regexes_to_ignore: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, task: str, values: Mapping[str, Any] | None) -> GenerationSpec:
        """Build from ``task.generation``; a bad key or value is an error naming ``task.generation.<key>``."""
        values = dict(values or {})
        known = [f.name for f in fields(cls)]
        if unknown := sorted(set(values) - set(known)):
            raise ValueError(f"task {task!r}: unknown key(s) task.generation.{unknown}; valid keys: {known}")
        for key in ("until", "regexes_to_ignore"):
            found = values.get(key, ())
            if isinstance(found, str) or not all(isinstance(v, str) and v for v in found):
                raise ValueError(
                    f"task {task!r}: task.generation.{key}={found!r} must be a list of non-empty strings"
                )
            values[key] = tuple(found)
        for key in ("max_gen_toks", "samples"):
            found = values.get(key, getattr(cls, key))
            bound = next(f.metadata["bound"] for f in fields(cls) if f.name == key)
            integer = isinstance(found, int) and not isinstance(found, bool)
            if problem := bound.problem(found) if integer else "must be an integer":
                raise ValueError(f"task {task!r}: task.generation.{key}={found!r}: {problem}")
        for key in [f.name for f in fields(cls) if f.type == "bool"]:
            if not isinstance(values.get(key, True), bool):
                raise ValueError(f"task {task!r}: task.generation.{key}={values[key]!r} must be true or false")
        return cls(**values)


@dataclass
class TaskSpec:
    """The fields below are also the task node's config schema (``gptlab.schema`` checks a composed
    ``task`` against them, with the bounds in their ``metadata``)."""

    name: str
    kind: str = field(metadata=Bound(choices=tuple(KINDS)).metadata)
    format: str
    data_dir: str | None = None
    # split name -> file name, glob or list of them (relative to data_dir); split names are the task's own
    files: dict[str, Any] = field(default_factory=dict)
    # datasets.load_dataset arguments for users who are online: {path, name, splits, fields, options}
    hub: dict[str, Any] | None = None
    # normalised field -> source column/key (format-specific; see gptlab.data.sources)
    fields: dict[str, Any] = field(default_factory=dict)
    # class names in label-id order; null: read the label set from the training split
    labels: list[str | int] | None = None
    regression: bool = False
    metrics: list[str] = field(default_factory=list)
    train_split: str = "train"
    eval_splits: list[str] = field(default_factory=lambda: ["validation"])
    # format-specific reader options (e.g. {"header": false} for CoLA)
    options: dict[str, Any] = field(default_factory=dict)
    # in-context evaluation: the default template (a PromptSpec mapping; see the module doc)
    prompt: dict[str, Any] | None = None
    # named alternative templates, prompt name -> PromptSpec mapping (regime.prompt=<name>)
    prompts: dict[str, dict[str, Any]] | None = field(default_factory=dict)
    # kind generation: decoding and answer matching (a GenerationSpec mapping; see the module doc)
    generation: dict[str, Any] | None = None
    train_limit: int | None = field(default=None, metadata=Bound(ge=1).metadata)
    # splits carved out of one split with the task's own seed: {from, seed, sizes} (see the module doc)
    carve: dict[str, Any] | None = None
    # lm tasks without a validation split hold out this fraction of their corpus
    val_fraction: float = field(default=0.1, metadata=Bound(gt=0, lt=1).metadata)
    # format mixture: source name -> {task: an lm task's node, weight: its share of the training windows}
    mixture: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        try:
            task_kind(self.kind)
        except ValueError as err:
            raise ValueError(f"task {self.name!r}: {err}") from None
        if not isinstance(self.files or {}, Mapping):
            raise ValueError(
                f"task {self.name!r}: files={self.files!r}; it maps each split to a file name, glob or list "
                "of them, e.g. files: {train: input.txt}"
            )
        self.files = {split: f for split, f in (self.files or {}).items() if f is not None}
        self.fields = dict(self.fields or {})
        self.options = dict(self.options or {})
        check_fields(self)
        if self.regression and not self.task_kind.regression:
            may = [name for name, kind in KINDS.items() if kind.regression]
            raise ValueError(
                f"task {self.name!r}: regression: true, but kind {self.kind!r} has no real-valued labels "
                f"(kinds that may: {', '.join(may)})"
            )
        if self.generation is not None and self.kind != "generation":
            raise ValueError(f"task {self.name!r}: generation settings are for kind 'generation', not {self.kind!r}")
        GenerationSpec.from_mapping(self.name, self.generation)  # a bad setting fails when the task is read
        self._check_carve()
        self.mixture_sources()  # a malformed mixture fails when the task is read
        self.prompts = dict(self.prompts or {})  # `prompts: null` in a YAML means none
        for name in self.prompt_names():  # a malformed template fails when the task is read
            self.prompt_spec(name)

    def _check_carve(self) -> None:
        if self.carve is None:
            return
        where = f"task {self.name!r}: carve"
        example = "e.g. carve: {from: all, seed: 1234, sizes: {train: 2500, validation: null}}"
        if not isinstance(self.carve, Mapping) or set(self.carve) != {"from", "seed", "sizes"}:
            raise ValueError(f"{where}={self.carve!r} must have exactly the keys from, seed and sizes; {example}")
        source, seed, sizes = self.carve["from"], self.carve["seed"], self.carve["sizes"]
        if source not in self.files:
            raise ValueError(f"{where}.from={source!r} is not a split in files ({sorted(self.files)})")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"{where}.seed={seed!r} must be an integer")
        if not isinstance(sizes, Mapping) or not sizes:
            raise ValueError(f"{where}.sizes={sizes!r} must map each carved split to a count; {example}")
        for split, size in sizes.items():
            if split in self.files:
                raise ValueError(f"{where}.sizes: split {split!r} is also in files; carve it or read it, not both")
            if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
                raise ValueError(f"{where}.sizes.{split}={size!r} must be a positive integer or null (the rest)")
        if list(sizes.values()).count(None) > 1:
            raise ValueError(f"{where}.sizes: at most one split may take the rest (null)")

    def mixture_sources(self) -> list[tuple[str, TaskSpec, float]]:
        """(name, task, weight) of each source of a ``mixture`` task, in the order written; [] for others."""
        where = f"task {self.name!r}: mixture"
        if self.format != "mixture":
            if self.mixture is not None:
                raise ValueError(f"{where} is read only by format 'mixture', not {self.format!r}")
            return []
        example = "e.g. mixture: {books: {task: <an lm task>, weight: 0.3}, web: {task: ..., weight: 0.7}}"
        if self.kind != "lm":
            raise ValueError(f"task {self.name!r}: format 'mixture' mixes corpora of kind 'lm', not {self.kind!r}")
        if not isinstance(self.mixture, Mapping) or not self.mixture:
            raise ValueError(f"{where}={self.mixture!r} must map each source's name to its task and weight; {example}")
        sources = []
        for name, source in self.mixture.items():
            if not isinstance(source, Mapping) or set(source) != {"task", "weight"}:
                raise ValueError(f"{where}.{name}={source!r} must have exactly the keys task and weight; {example}")
            weight = source["weight"]
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < float("inf"):
                raise ValueError(f"{where}.{name}.weight={weight!r} must be a positive number")
            if not isinstance(source["task"], Mapping):
                raise ValueError(f"{where}.{name}.task={source['task']!r} must be a task's node; {example}")
            try:
                task = TaskSpec.from_config(source["task"])
            except ValueError as err:
                raise ValueError(f"{where}.{name}.task: {err}") from None
            if task.kind != "lm" or task.format == "mixture":
                raise ValueError(
                    f"{where}.{name}.task: {task.name!r} is of kind {task.kind!r}, format {task.format!r}; a mixture "
                    "mixes corpora (kind 'lm') that are not mixtures themselves"
                )
            sources.append((str(name), task, float(weight)))
        return sources

    @property
    def carved(self) -> dict[str, int | None]:
        """Carved split -> its size (null: the rest); empty without ``carve``."""
        return dict(self.carve["sizes"]) if self.carve else {}

    def has_split(self, split: str) -> bool:
        """Whether the task's local data has ``split`` (a file entry or a carved split)."""
        return split in self.files or split in self.carved

    @classmethod
    def from_config(cls, task: Mapping[str, Any] | DictConfig) -> TaskSpec:
        """Build from the composed ``task`` node; unknown keys are an error naming them."""
        values = OmegaConf.to_container(task, resolve=True) if isinstance(task, DictConfig) else dict(task)
        assert isinstance(values, dict)
        known = {f.name for f in fields(cls)}
        name = values.get("name", "?")
        _refuse_renamed(name, values)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"task {name!r}: unknown key(s) {unknown}; valid keys: {sorted(known)}")
        for required in ("name", "kind", "format"):
            if values.get(required) is None:
                raise ValueError(f"task {name!r}: missing required key {required!r}")
        return cls(**values)

    @property
    def task_kind(self) -> TaskKind:
        """The record of this task's kind (``gptlab.tasks.kinds``)."""
        return task_kind(self.kind)

    @property
    def generation_spec(self) -> GenerationSpec:
        """Decoding and answer matching of a generation task (defaults where ``generation`` is null)."""
        return GenerationSpec.from_mapping(self.name, self.generation)

    @property
    def fields_or_defaults(self) -> dict[str, Any]:
        """``fields``, with the kind's defaults for the fields it leaves out."""
        return {**dict(self.task_kind.default_fields), **self.fields}

    @property
    def num_labels(self) -> int:
        """Outputs of the task head: 1 for regression, else the number of classes."""
        if self.regression:
            return 1
        if self.labels is None:
            raise ValueError(f"task {self.name!r}: the label set is not known yet (labels: null)")
        return len(self.labels)

    def prompt_names(self) -> list[str]:
        """Names ``regime.prompt`` accepts: the default prompt's, then the named alternatives."""
        default = [str((self.prompt or {}).get("name", "default"))] if self.prompt is not None else []
        return [*default, *self.prompts]

    def prompt_spec(self, name: str | None = None) -> PromptSpec:
        """The template called ``name`` (``None``: the default ``prompt``), checked."""
        if name is None or (self.prompt is not None and name == self.prompt_names()[0]):
            if self.prompt is None:
                named = f"; its named prompts: {', '.join(self.prompts)}" if self.prompts else ""
                raise ValueError(
                    f"task {self.name!r} has no prompt (prompt: null), so it cannot be evaluated in "
                    f"context{named}; add a prompt section (template, choices) to its task YAML"
                )
            return PromptSpec.from_mapping(self.name, self.prompt_names()[0], self.prompt)
        if name not in self.prompts:
            valid = ", ".join(self.prompt_names()) or "none"
            raise ValueError(f"task {self.name!r} has no prompt named {name!r}; valid prompts: {valid}")
        return PromptSpec.from_mapping(self.name, name, self.prompts[name])


def renamed_keys(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(old key, its replacement) for each key of an earlier task dialect in a task node."""
    hub = values.get("hub")
    old = [(key, new) for key, new in RENAMED_KEYS.items() if key in values]
    if isinstance(hub, Mapping):
        old += [(f"hub.{key}", new) for key, new in RENAMED_HUB_KEYS.items() if key in hub]
    return old


def _refuse_renamed(name: str, values: Mapping[str, Any]) -> None:
    """An old key of the task or its hub entry is an error naming the key that replaced it."""
    if old := renamed_keys(values):
        said = "; ".join(f"{key} is now {new} (task.{new}=...)" for key, new in old)
        raise ValueError(f"task {name!r}: {said}")
