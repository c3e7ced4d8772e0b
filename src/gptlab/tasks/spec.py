"""``TaskSpec``: the typed view of one ``tasks/<name>.yaml``.

A task says where its examples come from (local files in a named format, or a ``datasets`` Hub
id), how its fields map onto the normalised example of its kind, its label set, metrics, and the
prompt used for in-context evaluation. Every reader yields normalised examples:

=================  ===========================================================
kind               example
=================  ===========================================================
classification     ``{"text": str, "label": int | float}``
entailment         ``{"text_a": premise, "text_b": hypothesis, "label": int}``
similarity         ``{"text_a": str, "text_b": str, "label": int | float}``
multiple_choice    ``{"context": str, "choices": list[str], "label": int}``
ner                ``{"tokens": list[str], "tags": list[int]}``
lm                 raw text (see ``gptlab.data.text``)
=================  ===========================================================

Labels are indices into ``labels`` (class tasks) or floats (``labels: null`` with
``regression: true``, e.g. STS-B).

**Prompts** (in-context evaluation, see ``gptlab.data.prompts``). ``prompt`` is the task's default
template and ``prompts`` maps names to alternatives (``regime.prompt=<name>`` picks one); each is
a ``PromptSpec``. ``template`` is a ``str.format`` string over the normalised example's fields,
where a field may name a filter after a colon (``PROMPT_FILTERS``: ``{text:strip}``,
``{text_b:sentence}``). ``choices`` are the verbalizers of the class labels, in label order, or
null for multiple choice (each example's own answers).
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf

KINDS = ("lm", "classification", "entailment", "similarity", "multiple_choice", "ner")
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
    template: str
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
        if not isinstance(values.get("template"), str):
            raise ValueError(f"{where}: needs a template string, e.g. \"{{text}}\\nAnswer:\"")
        if values.get("name", name) != name:
            raise ValueError(f"{where}: its name key says {values['name']!r}; drop it or make it {name!r}")
        choices = values.get("choices")
        if choices is not None and (
            isinstance(choices, str) or not all(isinstance(c, str) and c for c in choices)
        ):
            raise ValueError(f"{where}: choices must be a list of non-empty strings or null, got {choices!r}")
        prompt = cls(**{**values, "name": name, "choices": None if choices is None else list(choices)})
        try:
            parts = list(string.Formatter().parse(prompt.template))
        except ValueError as err:
            raise ValueError(f"{where}: template {prompt.template!r} is not a format string ({err})") from None
        for _, _, spec, _ in parts:
            if spec and spec not in PROMPT_FILTERS:
                raise ValueError(
                    f"{where}: unknown template filter {spec!r}; valid filters: {', '.join(PROMPT_FILTERS)}"
                )
        return prompt


@dataclass
class TaskSpec:
    name: str
    kind: str
    format: str
    data_dir: str | None = None
    # split name -> file name (relative to data_dir); split names are the task's own
    files: dict[str, str] = field(default_factory=dict)
    # datasets.load_dataset arguments for users who are online: {path, name}
    hub: dict[str, Any] | None = None
    # normalised field -> source column/key (format-specific; see gptlab.data.formats)
    fields: dict[str, Any] = field(default_factory=dict)
    # class names in label-id order; null: read the label set from the training split
    labels: list[str] | None = None
    regression: bool = False
    metrics: list[str] = field(default_factory=list)
    train_split: str = "train"
    eval_splits: list[str] = field(default_factory=lambda: ["validation"])
    # format-specific reader options (e.g. {"header": false} for CoLA)
    options: dict[str, Any] = field(default_factory=dict)
    # in-context evaluation: the default template (a PromptSpec mapping; see the module doc)
    prompt: dict[str, Any] | None = None
    # named alternative templates, prompt name -> PromptSpec mapping (regime.prompt=<name>)
    prompts: dict[str, dict[str, Any]] = field(default_factory=dict)
    train_limit: int | None = None
    val_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: kind={self.kind!r}; valid kinds: {', '.join(KINDS)}")
        self.prompts = dict(self.prompts or {})  # `prompts: null` in a YAML means none
        for name in self.prompt_names():  # a malformed template fails when the task is read
            self.prompt_spec(name)

    @classmethod
    def from_config(cls, task: Mapping[str, Any] | DictConfig) -> TaskSpec:
        """Build from the composed ``task`` node; unknown keys are an error naming them."""
        values = OmegaConf.to_container(task, resolve=True) if isinstance(task, DictConfig) else dict(task)
        assert isinstance(values, dict)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        name = values.get("name", "?")
        if unknown:
            raise ValueError(f"task {name!r}: unknown key(s) {unknown}; valid keys: {sorted(known)}")
        for required in ("name", "kind", "format"):
            if values.get(required) is None:
                raise ValueError(f"task {name!r}: missing required key {required!r}")
        return cls(**values)

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
