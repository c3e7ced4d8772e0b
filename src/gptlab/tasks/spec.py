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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf

KINDS = ("lm", "classification", "entailment", "similarity", "multiple_choice", "ner")


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
    # in-context evaluation: template, verbalizers, delimiters (see the in-context regime)
    prompt: dict[str, Any] | None = None
    train_limit: int | None = None
    val_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: kind={self.kind!r}; valid kinds: {', '.join(KINDS)}")

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
