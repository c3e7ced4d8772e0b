"""What defines an experiment, read from a run's composed config.

A run's **identity** is its resolved config less where its files live (``paths.*``) and how it is
tracked or displayed (``NON_IDENTITY_KEYS``): two runs of equal identity compute the same thing,
so a sweep skips a job whose identity already finished (``gptlab.cli.sweep``). Its **condition**
is the identity less its seeds (``SEED_KEYS``): runs of one condition differ only in seeds, so the
report averages them and tells conditions apart by the values that differ
(``gptlab.report.aggregate``). Every result row carries its condition as a hash and as flat values
(``{"regime.module.lm_lambda": 0.5, ...}``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

# Keys that say how a run is tracked or displayed, not what it computes: changing them neither
# changes a run's identity nor moves a sweep job to another directory (conf/hydra/default.yaml
# leaves the same keys out of the job's directory name).
NON_IDENTITY_KEYS = (
    "logger",
    "tags",
    "ckpt_path",
    "sample",
    "callbacks.progress_bar",
    "callbacks.model_checkpoint",
    "callbacks.lr_monitor",
    "callbacks.throughput",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
)
# The seeds a condition is averaged over: the training seed and the few-shot sampling seed.
# Values interpolated from them (``regime.datamodule.seed: ${seed}``) follow them out.
SEED_KEYS = ("seed", "regime.fewshot_seed")
_SEED_PLACEHOLDER = "<seed>"


def identity(cfg: DictConfig, *, seeds: bool = True) -> dict[str, Any]:
    """The resolved config that defines what ``cfg`` computes (with or without its seeds).

    Every ``paths.*`` value (and without ``seeds`` every seed) becomes a placeholder before
    resolving, so a run dir that moved, a data dir given another way or a value interpolated from
    a seed leaves the result unchanged.
    """
    plain = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(plain):
        for key in plain.get("paths") or {}:
            plain.paths[key] = f"<paths.{key}>"
        for dotted in NON_IDENTITY_KEYS + (() if seeds else SEED_KEYS):
            parent, _, leaf = dotted.rpartition(".")
            node = OmegaConf.select(plain, parent) if parent else plain
            if node is None or leaf not in node:
                continue
            if dotted in SEED_KEYS:
                node[leaf] = _SEED_PLACEHOLDER  # resolved into what interpolates it, then dropped
            else:
                del node[leaf]
    resolved = OmegaConf.to_container(plain, resolve=True)
    resolved.pop("paths", None)  # placeholders now, wherever they were interpolated
    if not seeds:
        for dotted in SEED_KEYS:
            parent, _, leaf = dotted.rpartition(".")
            node = _select(resolved, parent)
            if isinstance(node, dict):
                node.pop(leaf, None)
    return resolved


def _select(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in filter(None, dotted.split(".")):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and scalars are values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def digest(tree: Any) -> str:
    """A stable short hash of a JSON-able value (key order does not matter)."""
    text = json.dumps(tree, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _derived(cfg: DictConfig) -> list[str]:
    """Dotted keys whose value interpolates others (``regime.module.model: ${model}``): copies
    that say nothing their sources do not."""
    written = flatten(OmegaConf.to_container(cfg, resolve=False))
    return [key for key, value in written.items() if isinstance(value, str) and "${" in value]


@dataclass(frozen=True)
class Condition:
    """A run's condition: ``values`` (flat dotted keys, each value where it is written, not its
    interpolated copies) and their ``hash``."""

    hash: str
    values: dict[str, Any]

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> Condition:
        """The condition of a run defined by ``values`` (flat keys) rather than by a config."""
        return cls(digest(dict(values)), dict(values))

    @classmethod
    def of(cls, cfg: DictConfig) -> Condition:
        derived = tuple(f"{key}." for key in _derived(cfg)) + tuple(_derived(cfg))
        values = {
            key: value for key, value in flatten(identity(cfg, seeds=False)).items()
            if not (key in derived or key.startswith(derived))
        }
        return cls.from_values(values)
