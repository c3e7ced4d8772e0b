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
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
)
# The seeds a condition is averaged over: the training seed and the few-shot sampling seed (the
# values interpolated from them, ``regime.datamodule.seed: ${seed}``, are copies: see ``_derived``).
SEED_KEYS = ("seed", "regime.fewshot_seed")


def identity(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config that defines what ``cfg`` computes.

    Every ``paths.*`` value becomes a placeholder before resolving, so a run dir that moved or a
    data dir given another way (relative, absolute) leaves the result unchanged.
    """
    plain = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(plain):
        for key in plain.get("paths") or {}:
            plain.paths[key] = f"<paths.{key}>"
        for dotted in NON_IDENTITY_KEYS:
            parent, _, leaf = dotted.rpartition(".")
            node = OmegaConf.select(plain, parent) if parent else plain
            if node is not None and leaf in node:
                del node[leaf]
    resolved = OmegaConf.to_container(plain, resolve=True)
    resolved.pop("paths", None)  # placeholders now, wherever they were interpolated
    return resolved


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
        derived = set(_derived(cfg))
        below = tuple(f"{key}." for key in derived)
        values = {
            key: value for key, value in flatten(identity(cfg)).items()
            if key not in SEED_KEYS and key not in derived and not key.startswith(below)
        }
        return cls.from_values(values)
