"""The task kinds: one record per kind, and the only list of them.

A record says everything the platform needs to know about a kind; the code that acts on it looks
the kind up here and follows the record's entries, each naming a shape whose implementation lives
with its job:

==================  ========================================================================
entry               meaning, and where the named shape is implemented
==================  ========================================================================
``fields``          normalised fields every example has (``gptlab.data.sources`` fills them)
``label``           how the example's answer is written: ``class`` (a label name or index, a
                    float for regression tasks), ``tags`` (one label name per word),
                    ``choice`` (an index into the example's own ``choices``), ``text`` (a
                    target string and its accepted ``aliases``), or None
``transform``       GPT-1 input transformation (``gptlab.data.transforms.TRANSFORMS``)
``head``            head shape and loss (``gptlab.model.heads.HEAD_SHAPES``)
``metrics``         metric family, which names ``task.metrics`` may hold
                    (``gptlab.tasks.metrics.METRIC_FAMILIES``)
``chance``          chance-level rule (``gptlab.tasks.chance.CHANCE_RULES``), or None
``incontext``       how it is scored in context: ``choice`` (rank answer continuations,
                    ``gptlab.data.incontext``), ``generate`` (greedy generation and the
                    target's likelihood, ``gptlab.data.generative``), ``perplexity`` (rolling
                    log-likelihood of the documents, ``gptlab.data.rolling``), or None
                    (``not_incontext`` says why). A scorer other than ``choice`` is built from
                    the regime node of its name (``regime.generate``, ``regime.perplexity``)
``finetune``        how ``regime=finetune`` trains it: ``head`` (a task head on the GPT-1
                    transform, ``gptlab.lit.finetune``; the regime's own datamodule/module),
                    ``generate`` (the LM loss on the target tokens only, evaluated by
                    generating as in context, ``gptlab.data.sft``; built from the regime node
                    ``regime.generate``), or None (not fine-tuned)
``regimes``         which regime natures run it (``REGIME_NATURES``; a regime YAML declares
                    its ``nature``)
==================  ========================================================================

Adding a kind is adding its record here, plus its transform, head, metric family, chance rule or
scorer where its shape is new (README, "Adding a task kind").
"""

from __future__ import annotations

from dataclasses import dataclass

# What a regime does with a task: pre-train on it, fine-tune a head on it, or evaluate in context.
REGIME_NATURES = ("pretrain", "finetune", "incontext")
# The in-context regimes whose name fixes the number of demonstrations, and the one of any other k.
FIXED_K = {"zero_shot": 0, "one_shot": 1}
FEW_SHOT = "few_shot"
LABEL_RULES = ("class", "tags", "choice", "text")
INCONTEXT_SCORERS = ("choice", "generate", "perplexity")
FINETUNE_OBJECTIVES = ("head", "generate")
# the objectives and scorers built from the regime's own datamodule/module; any other is built from
# the regime node named after it (regime.generate, regime.perplexity)
OWN_NODE = ("choice", "head")


@dataclass(frozen=True)
class TaskKind:
    """One task kind (see the module doc for each entry)."""

    name: str
    example: str  # the normalised example, for docs and error messages
    fields: tuple[str, ...]
    optional_fields: tuple[str, ...] = ()
    label: str | None = None
    regression: bool = False  # whether a task of this kind may have real-valued labels
    transform: str | None = None
    head: str | None = None
    metrics: str = "class"
    chance: str | None = None
    incontext: str | None = None
    not_incontext: str = ""
    finetune: str | None = None
    regimes: tuple[str, ...] = ()
    # normalised field -> source key used when a task names none (an lm corpus's "text" column)
    default_fields: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        assert self.label in (None, *LABEL_RULES), self.label
        assert self.incontext in (None, *INCONTEXT_SCORERS), self.incontext
        assert set(self.regimes) <= set(REGIME_NATURES), self.regimes
        assert (self.incontext is None) == bool(self.not_incontext), self.name
        assert self.finetune in (None, *FINETUNE_OBJECTIVES), self.finetune
        assert ("finetune" in self.regimes) == (self.finetune is not None), self.name
        with_head = self.head is not None and self.transform is not None
        assert (self.finetune == "head") == with_head, self.name

    @property
    def all_fields(self) -> tuple[str, ...]:
        return (*self.fields, *self.optional_fields)

    @property
    def label_field(self) -> str | None:
        """The field that holds the answer: ``tags`` (one per word), ``target`` or ``label``."""
        return {None: None, "tags": "tags", "text": "target"}.get(self.label, "label")

    @property
    def has_class_labels(self) -> bool:
        """Whether examples carry label names to map onto ``task.labels`` (a label set to read)."""
        return self.label in ("class", "tags")


_KINDS = (
    TaskKind(
        name="lm",
        example='{"text": str}, one document',
        fields=("text",),
        default_fields=(("text", "text"),),
        metrics="lm",
        incontext="perplexity",
        regimes=("pretrain", "incontext"),
    ),
    TaskKind(
        name="classification",
        example='{"text": str, "label": int | float}',
        fields=("text", "label"),
        label="class",
        regression=True,
        transform="single",
        head="pooled",
        chance="majority",
        incontext="choice",
        finetune="head",
        regimes=("finetune", "incontext"),
    ),
    TaskKind(
        name="entailment",
        example='{"text_a": premise, "text_b": hypothesis, "label": int}',
        fields=("text_a", "text_b", "label"),
        label="class",
        transform="pair",
        head="pooled",
        chance="majority",
        incontext="choice",
        finetune="head",
        regimes=("finetune", "incontext"),
    ),
    TaskKind(
        name="similarity",
        example='{"text_a": str, "text_b": str, "label": int | float}',
        fields=("text_a", "text_b", "label"),
        label="class",
        regression=True,
        transform="both_orders",
        head="pooled_sum",
        chance="majority",
        incontext="choice",
        finetune="head",
        regimes=("finetune", "incontext"),
    ),
    TaskKind(
        name="multiple_choice",
        example='{"context": str, "choices": list[str], "label": int}',
        fields=("context", "choices", "label"),
        optional_fields=("choice_labels", "asks_for"),
        label="choice",
        transform="choices",
        head="per_choice",
        chance="uniform_choice",
        incontext="choice",
        finetune="head",
        regimes=("finetune", "incontext"),
    ),
    TaskKind(
        name="multiple_input",
        example=(
            '{"choices": list[str], "continuation": str, "label": int}; the choices are contexts, '
            "each scored by the likelihood of the one continuation after it (GPT-3's partial "
            "evaluation, lm-eval's multiple-input tasks: WinoGrande)"
        ),
        fields=("choices", "continuation", "label"),
        label="choice",
        chance="uniform_choice",
        incontext="choice",
        regimes=("incontext",),
    ),
    TaskKind(
        name="generation",
        example=(
            '{"context": str, "target": str, "aliases": list[str], "input": str}; targets = [target, '
            "*aliases]; input: a second part of the context for the prompt template (Alpaca's input)"
        ),
        fields=("context", "target"),
        optional_fields=("aliases", "input"),
        label="text",
        metrics="generation",
        incontext="generate",
        finetune="generate",
        regimes=("finetune", "incontext"),
    ),
    TaskKind(
        name="ner",
        example='{"tokens": list[str], "tags": list[int]}',
        fields=("tokens", "tags"),
        label="tags",
        transform="words",
        head="per_token",
        metrics="entity",
        finetune="head",
        not_incontext=(
            "NER has a tag for every word: in-context scoring ranks whole answer continuations and "
            "has no per-word output; evaluate it with regime=finetune"
        ),
        regimes=("finetune",),
    ),
)
KINDS: dict[str, TaskKind] = {kind.name: kind for kind in _KINDS}


def task_kind(name: str) -> TaskKind:
    """The record of kind ``name``; an unknown name is an error listing the valid ones."""
    if name not in KINDS:
        raise ValueError(f"kind={name!r}; valid kinds: {', '.join(KINDS)}")
    return KINDS[name]


def regime_node(kind: str, nature: str) -> str | None:
    """The regime node a run of ``kind`` under a regime of ``nature`` is built from (``generate``,
    ``perplexity``), or None for the regime's own datamodule/module."""
    record = task_kind(kind)
    node = {"incontext": record.incontext, "finetune": record.finetune}.get(nature)
    return None if node in (None, *OWN_NODE) else node


def kinds_run_by(nature: str) -> list[str]:
    """The kinds a regime of ``nature`` runs, in registry order."""
    if nature not in REGIME_NATURES:
        raise ValueError(f"regime nature {nature!r}; valid natures: {', '.join(REGIME_NATURES)}")
    return [kind.name for kind in _KINDS if nature in kind.regimes]


def regime_for_k(k: int) -> str:
    """The in-context regime that runs ``k`` demonstrations (zero_shot, one_shot, few_shot)."""
    return next((name for name, fixed in FIXED_K.items() if fixed == k), FEW_SHOT)
