"""Multirun jobs that survive a failing neighbour and an interrupted sweep.

``gptlab -m ...`` runs one job per combination. This module gives each job four properties:

- **A stable directory.** ``hydra.sweep.subdir`` is the job's overrides
  (``model=gpt-nano,seed=1,task=sst2``, see ``job_dirname``), not its position in the sweep, so a
  re-run of the same multirun (same ``hydra.sweep.dir``) finds each job's directory again.
- **A completion marker.** After ``results.jsonl`` is written, rank 0 writes ``job_complete.json``
  atomically with a hash of the job's config and its final metrics. A re-run skips a job whose
  marker matches its config and returns the stored metrics, so Optuna still gets its value.
- **Resume.** Each attempt records its config hash (``job_attempt.json``). A re-run of a job
  that did not finish, with the same config, resumes from the job's newest valid checkpoint as
  ``ckpt_path=last`` does for a single run (exactly: the same results as an uninterrupted job).
  The rows its earlier attempt wrote at the end are set aside, those written during training
  (in-loop evaluation) kept; checkpoints of an attempt with another config are set aside too.
- **Failure capture.** A job that raises is logged with its traceback (the job's ``.log`` file),
  recorded in ``<sweep dir>/failed_jobs.jsonl`` and returns ``None``: the sweeper goes on with the
  next job (Optuna marks the trial failed). ``SweepSummary``, a Hydra callback, lists the failures
  when the sweep ends and exits non-zero.

Single runs (no ``-m``) are not touched: their exceptions propagate as usual.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from gptlab.atomic import write_atomic
from gptlab.conditions import digest, identity
from gptlab.lit.checkpoint_io import CHECKPOINT_DIR, checkpoint_files, newest_valid_checkpoint
from gptlab.report.results import RESULTS_FILE

log = logging.getLogger("gptlab")

COMPLETE_MARKER = "job_complete.json"
ATTEMPT_MARKER = "job_attempt.json"
STALE_SUFFIX = ".stale"
FAILURES_FILE = "failed_jobs.jsonl"
# A directory name stays well below the usual 255-byte limit of one path component.
_MAX_DIRNAME = 200


def job_dirname(override_dirname: str) -> str:
    """A job directory named after its overrides (Hydra's ``override_dirname``), made path-safe.

    A path inside a value (``model.init_from=runs/a/last.ckpt``) must not nest directories, and an
    over-long name keeps a readable prefix plus a hash of the whole.
    """
    name = re.sub(r"[/\\]", "_", override_dirname) or "defaults"
    if len(name) > _MAX_DIRNAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:12]
        name = f"{name[: _MAX_DIRNAME - 13]}-{digest}"
    return name


def sweep_name() -> str | None:
    """The multirun's directory name (a W&B group), or None outside a multirun."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().sweep.dir).name


OmegaConf.register_new_resolver("gptlab.job_dirname", job_dirname, replace=True)
OmegaConf.register_new_resolver("gptlab.sweep_name", sweep_name, replace=True)


def config_hash(cfg: DictConfig) -> str:
    """Hash of what a job computes (``gptlab.conditions.identity``): a sweep dir that moved, a
    data dir given another way or another logger does not make a finished job stale."""
    return digest(identity(cfg))


def optimized_value(metrics: dict[str, float] | None, name: str | None) -> float | None:
    """The metric a sweeper optimises (``optimized_metric``); None when the job failed or the run
    did not log it (a warning lists what it did log)."""
    if metrics is None or not name:
        return None
    if name not in metrics:
        log.warning("optimized_metric=%s was not logged; this run logged: %s", name, ", ".join(sorted(metrics)))
        return None
    return metrics[name]


def _is_rank_zero() -> bool:
    # Lightning sets this from the launcher's environment (RANK, SLURM_PROCID, ...) at import, before
    # any Trainer exists: under SLURM every task of a job runs the job function, only one writes.
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


@dataclass
class SweepJob:
    """One job of a multirun: its directory, identity and markers."""

    dir: Path
    sweep_dir: Path
    overrides: list[str]
    # rank 0 writes the markers; the other ranks of a SLURM job only read them
    writer: bool

    @classmethod
    def current(cls, cfg: DictConfig) -> SweepJob | None:
        """The running job, or None outside a multirun (a single run or a DDP child process)."""
        if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
            return None
        hydra_cfg = HydraConfig.get()
        return cls(
            dir=Path(hydra_cfg.runtime.output_dir),
            sweep_dir=Path(hydra_cfg.sweep.dir),
            overrides=list(hydra_cfg.overrides.task),
            writer=_is_rank_zero(),
        )

    @property
    def marker(self) -> Path:
        return self.dir / COMPLETE_MARKER

    def stored_metrics(self, digest: str) -> dict[str, float] | None:
        """Final metrics of an earlier complete run of the config hashed ``digest``, else None."""
        try:
            done = json.loads(self.marker.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return done.get("metrics") if done.get("config_hash") == digest else None

    def run(self, task: Callable[[DictConfig], dict[str, float]], cfg: DictConfig) -> dict[str, float] | None:
        """Skip if complete; else run ``task`` and mark the job complete, or record its failure."""
        try:
            digest = config_hash(cfg)  # inside: a config that does not resolve is this job's failure
            stored = self.stored_metrics(digest)
            if stored is not None:
                print(f"[gptlab] {self.dir}: complete in an earlier run of this sweep, skipped")
                return stored
            resume = self.resumable(digest, cfg)
            if self.writer:
                self._set_aside_earlier_attempt(resume is not None, cfg)
                record = {"config_hash": digest, "overrides": self.overrides}
                write_atomic(self.dir / ATTEMPT_MARKER, (json.dumps(record, indent=1) + "\n").encode())
            extra = []
            if resume is not None:
                print(f"[gptlab] {self.dir}: resuming an unfinished earlier attempt from {resume}")
                extra = ["ckpt_path=last"]
                cfg = copy.deepcopy(cfg)
                with read_write(cfg), open_dict(cfg):
                    cfg.ckpt_path = "last"
            with self._isolated(extra):
                metrics = task(cfg)
        except Exception as err:
            log.exception("job %s failed", self.dir)
            if self.writer:
                self._record_failure(err)
            return None
        if self.writer:
            record = {"config_hash": digest, "metrics": metrics, "overrides": self.overrides}
            write_atomic(self.marker, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())
        return metrics

    def resumable(self, digest: str, cfg: DictConfig) -> Path | None:
        """The checkpoint an unfinished earlier attempt of this very config left, if any (and the
        job names no ``ckpt_path`` of its own)."""
        if cfg.get("ckpt_path") is not None:
            return None
        try:
            attempt = json.loads((self.dir / ATTEMPT_MARKER).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if attempt.get("config_hash") != digest:
            return None
        return newest_valid_checkpoint(self.dir / CHECKPOINT_DIR)

    def _set_aside_earlier_attempt(self, resuming: bool, cfg: DictConfig) -> None:
        """What an unfinished or differently configured earlier attempt wrote is kept, but under a
        name that neither the report nor the new attempt reads, so nothing is counted twice:
        its result rows (when resuming, only the final ones: in-loop rows continue their curve)
        and, unless the new attempt resumes from them or names a checkpoint, its checkpoints."""
        self.marker.unlink(missing_ok=True)
        results = self.dir / RESULTS_FILE
        if results.is_file():
            keep: list[str] = []
            final: list[str] = []
            for line in results.read_text(encoding="utf-8").splitlines(keepends=True):
                (keep if resuming and _written_in_loop(line) else final).append(line)
            stale = results.with_name(RESULTS_FILE + STALE_SUFFIX)
            with open(stale, "a", encoding="utf-8") as f:  # earlier stale rows stay
                f.writelines(final)
            if keep:
                write_atomic(results, "".join(keep).encode())
            else:
                results.unlink()
            log.warning("%s: results of an earlier unfinished attempt moved to %s", self.dir, stale.name)
        checkpoints = self.dir / CHECKPOINT_DIR
        if not resuming and cfg.get("ckpt_path") is None and checkpoint_files(checkpoints):
            aside = _free_name(checkpoints.with_name(CHECKPOINT_DIR + STALE_SUFFIX))
            checkpoints.replace(aside)
            log.warning("%s: checkpoints of an earlier attempt with another config moved to %s", self.dir, aside.name)

    def _record_failure(self, err: BaseException) -> None:
        record = {
            "job_dir": str(self.dir),
            "overrides": self.overrides,
            "error": f"{type(err).__name__}: {err}",
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        with open(self.sweep_dir / FAILURES_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    @contextlib.contextmanager
    def _isolated(self, extra: list[str]) -> Iterator[None]:
        """Run in-process, one job after another, as if each were alone.

        Lightning starts DDP ranks 1..N-1 by re-running ``sys.argv`` with ``hydra.run.dir``: in a
        multirun that would start the whole sweep again, elsewhere, so both point at this one job
        (its overrides, plus ``extra`` ones such as a resume's ``ckpt_path``, its directory)
        while it runs. Afterwards the process group and the
        variables the DDP launcher exported (LOCAL_RANK, MASTER_PORT, ...) go away, else the next
        job would take itself for an externally launched rank of a group that no longer exists.
        """
        hydra_cfg = HydraConfig.get()
        saved_argv, saved_run_dir, saved_env = sys.argv, hydra_cfg.run.dir, dict(os.environ)
        sys.argv = [sys.argv[0], *self.overrides, *extra]
        with read_write(hydra_cfg):
            hydra_cfg.run.dir = str(self.dir)
        try:
            yield
        finally:
            sys.argv = saved_argv
            with read_write(hydra_cfg):
                hydra_cfg.run.dir = saved_run_dir
            os.environ.clear()
            os.environ.update(saved_env)
            _destroy_process_group()


def _written_in_loop(line: str) -> bool:
    """Whether a ``results.jsonl`` line is a row written during training (it has a ``step``)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return False
    return isinstance(row, dict) and row.get("step") is not None


def _free_name(path: Path) -> Path:
    """``path``, or ``path-1``, ``path-2``... : the first that does not exist."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def read_failures(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """The failed jobs recorded in a sweep dir, in the order they failed."""
    path = Path(sweep_dir) / FAILURES_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class SweepSummary(Callback):
    """Hydra callback (``hydra.callbacks`` in conf/hydra/default.yaml): a multirun starts with no
    recorded failures and ends by listing the jobs that failed, exiting non-zero if any did."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        # made now, not by the launcher: Optuna opens its SQLite study there before the first job
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / FAILURES_FILE).unlink(missing_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failures = read_failures(sweep_dir)
        if not failures:
            return
        lines = [f"[gptlab] {len(failures)} job(s) of the sweep in {sweep_dir} failed:"]
        for failure in failures:
            lines.append(f"  {failure['job_dir']}\n    {' '.join(failure['overrides'])}\n    {failure['error']}")
        lines.append(f"[gptlab] tracebacks are in each job's .log file; the list is in {sweep_dir / FAILURES_FILE}")
        print("\n".join(lines), file=sys.stderr, flush=True)
        # Hydra turns a callback's exception into a warning, so only SystemExit fails the sweep.
        sys.exit(1)
