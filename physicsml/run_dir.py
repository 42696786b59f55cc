"""A run directory holds one run: ``run.json`` records what identifies it, so that a run started
in a directory that already holds one resumes it only when it is the same run.

A run's identity is its resolved config less ``NOT_IDENTITY`` (keys that only extend, place or
re-label training) and the content hashes of the stores of every data source. A directory holds
a run once that run has trained something (a checkpoint, ``model.pt`` or ``metrics.json``): an
attempt that failed before its first checkpoint leaves nothing to lose and is started over.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from physicsml.config.errors import ConfigError
from physicsml.data.datamodule import source_paths
from physicsml.data.sources import open_source

RUN_FILE = "run.json"
PREEMPTED_CKPT = "checkpoints/preempted.ckpt"
DATA_KEYS = ("dataset", "train_data", "validation_data", "test_data", "predict_data")
"""The ``datamodule`` keys that name data sources: their stores' content hashes identify a run."""

STOP_KEYS = ("trainer.max_epochs", "trainer.max_steps", "trainer.max_time")
"""How far to train: a finished run trained with other values of these continues."""

NOT_IDENTITY = (
    *STOP_KEYS,
    # where training starts from (resuming deliberately) and what runs after it
    "ckpt_path",
    "test",
    "datamodule.test",  # the test and predict batch sizes: no training step uses them
    "datamodule.predict",
    # what a run reports and keeps: loggers, callbacks (checkpoints, early stopping, the epoch
    # line), progress bars, summaries, the sanity check before the first epoch
    "logger",
    "callbacks",
    "trainer.callbacks",
    "trainer.enable_checkpointing",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "trainer.num_sanity_val_steps",
    # names and places
    "hydra",
    "task_name",
    "optimized_metric",
    "trainer.default_root_dir",
    "datamodule.cache_dir",
    "datamodule.pre_batch_dir",
    # speed alone
    "datamodule.num_workers",
    "keep_freed_memory_mb",
    # the paths of the data: the content hashes of their stores stand in for them
    *(f"datamodule.{key}" for key in DATA_KEYS),
)
"""Config keys (and everything under them) that do not identify a run."""

_ABSENT = "(absent)"
_NEW_DIRECTORY = (
    "start a new run directory (hydra.run.dir=...) or resume deliberately with "
    "ckpt_path={ckpt} in a new directory"
)


class RunDirConflict(ConfigError):
    """The run directory holds another run (other settings or data, or unknown ones)."""


@dataclass(frozen=True)
class RunIdentity:
    """What identifies a run (the content of ``run.json``)."""

    settings: dict[str, Any]
    """Dotted config key -> resolved value, without ``NOT_IDENTITY``."""
    data: dict[str, list[str]] | None
    """``datamodule.<source>`` -> content hashes of its stores; None for a run recorded before
    ``run.json`` existed (its ``config.yaml`` names its data by path only)."""
    sources: dict[str, list[str]]
    """``datamodule.<source>`` -> the paths as configured."""
    stop: dict[str, Any]
    """``STOP_KEYS`` -> values."""

    def differences(self, new: RunIdentity) -> list[str]:
        """What differs from ``new``: ``key: old -> new`` and ``data of <source> differ``."""
        keys = sorted(self.settings.keys() | new.settings.keys())
        out = [
            f"{k}: {_show(self.settings.get(k, _ABSENT))} -> {_show(new.settings.get(k, _ABSENT))}"
            for k in keys
            if _setting(self.settings, k) != _setting(new.settings, k)
        ]
        if self.data is None:  # a run older than run.json: its data are known by path alone
            old_data, new_data = self.sources, new.sources
        else:
            old_data, new_data = self.data, new.data or {}
        out += [
            f"data of {k} differ"
            for k in sorted(old_data.keys() | new_data.keys())
            if old_data.get(k) != new_data.get(k)
        ]
        return out


def run_identity(cfg: DictConfig) -> RunIdentity:
    """The identity of a run of ``cfg``; opens (and verifies) every data source's store."""
    config = _resolved(cfg)
    identity = _identity(config)
    cache_dir = config["datamodule"]["cache_dir"]
    data = {
        key: [open_source(path, cache_dir).content_hash() for path in paths]
        for key, paths in identity.sources.items()
    }
    return RunIdentity(identity.settings, data, identity.sources, identity.stop)


def recorded_identity(run_dir: Path) -> RunIdentity | None:
    """The identity recorded in ``run_dir``: its ``run.json``, else (a run older than
    ``run.json``) what its ``config.yaml`` says; None when it has neither."""
    if (run_dir / RUN_FILE).is_file():
        return RunIdentity(**json.loads((run_dir / RUN_FILE).read_text()))
    if (run_dir / "config.yaml").is_file():
        config = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), enum_to_str=True)
        return _identity(config if isinstance(config, dict) else {})
    return None


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint an earlier attempt of the run in ``run_dir`` left:
    ``checkpoints/last.ckpt`` (every epoch end), ``checkpoints/preempted.ckpt``
    (``physicsml.train.PreemptionCheckpoint``) or Lightning's ``hpc_ckpt_*.ckpt``."""
    found = [
        *run_dir.glob("hpc_ckpt_*.ckpt"),
        run_dir / "checkpoints" / "last.ckpt",
        run_dir / PREEMPTED_CKPT,
    ]
    found = [p for p in found if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def holds_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run that trained something."""
    trained = (run_dir / "metrics.json").is_file() or (run_dir / "model.pt").is_file()
    return trained or latest_checkpoint(run_dir) is not None


def check_run_dir(cfg: DictConfig, run_dir: Path) -> tuple[RunIdentity, dict[str, Any] | None]:
    """The identity of a run of ``cfg`` in ``run_dir`` and, when ``run_dir`` holds this run
    finished as far as ``cfg`` trains, its metrics (nothing to do); else None (start, or
    resume). Writes nothing; raises ``RunDirConflict`` when ``run_dir`` holds another run."""
    identity = run_identity(cfg)
    if cfg.ckpt_path:
        check_resumed_data(Path(str(cfg.ckpt_path)).expanduser(), identity)
    if not holds_run(run_dir):
        return identity, None
    ckpt = latest_checkpoint(run_dir) or run_dir / "checkpoints" / "last.ckpt"
    recorded = recorded_identity(run_dir)
    if recorded is None:
        raise RunDirConflict(
            f"{run_dir} holds a run of unknown settings (no {RUN_FILE} or config.yaml): "
            + _NEW_DIRECTORY.format(ckpt=ckpt)
        )
    differences = recorded.differences(identity)
    if differences:
        shown = "; ".join(differences[:5])
        if len(differences) > 5:
            shown += f"; and {len(differences) - 5} more"
        raise RunDirConflict(
            f"{run_dir} holds a run with other settings ({shown}): "
            + _NEW_DIRECTORY.format(ckpt=ckpt)
        )
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():
        return identity, None  # interrupted: it resumes
    metrics: dict[str, Any] = json.loads(metrics_file.read_text())
    if recorded.stop == identity.stop or _reached(metrics, identity.stop):
        return identity, metrics
    if latest_checkpoint(run_dir) is None and cfg.ckpt_path is None:
        raise RunDirConflict(
            f"{run_dir} holds this run, finished, without a checkpoint to continue it from: "
            "start a new run directory (hydra.run.dir=...)"
        )
    return identity, None


def check_resumed_data(ckpt: Path, identity: RunIdentity) -> None:
    """A ``ckpt_path`` in ``<run>/checkpoints/`` resumes that run's training: refuse it on
    training or validation data other than the run's (its ``run.json``), naming
    ``module.init_from``, which starts from its weights on other data."""
    recorded = recorded_identity(ckpt.parent.parent) if ckpt.parent.name == "checkpoints" else None
    if recorded is None or recorded.data is None or identity.data is None:
        return

    def trained_on(data: dict[str, list[str]]) -> list[str]:
        keys = [f"datamodule.{k}" for k in ("dataset", "train_data", "validation_data")]
        return sorted(h for k in keys for h in data.get(k, []))

    if trained_on(recorded.data) != trained_on(identity.data):
        raise ConfigError(
            f"ckpt_path: {ckpt} resumes a run trained on other data: to start from its weights "
            f"on these data (new optimizer, epoch 0), use module.init_from={ckpt} instead"
        )


def claim_run_dir(cfg: DictConfig, run_dir: Path, write: bool) -> dict[str, Any] | None:
    """``check_run_dir``, then, when the run starts or resumes and ``write`` (rank 0), record
    its identity in ``run_dir/run.json``. Returns the metrics of a finished run, else None."""
    identity, finished = check_run_dir(cfg, run_dir)
    if finished is None and write:
        run_dir.mkdir(parents=True, exist_ok=True)
        # a finished run continues: its metrics go first, so that every rank (which reads
        # metrics.json, then run.json) decides as this one did
        (run_dir / "metrics.json").unlink(missing_ok=True)
        tmp = run_dir / f"{RUN_FILE}.tmp"
        tmp.write_text(json.dumps(asdict(identity), indent=2) + "\n")
        os.replace(tmp, run_dir / RUN_FILE)
    return finished


def finished_message(run_dir: Path, metrics: dict[str, Any]) -> str:
    """What to say when ``run_dir`` holds this run, finished (``metrics``)."""
    return (
        f"{run_dir} holds this run, finished after {metrics.get('epoch')} epochs: nothing to do "
        "(a larger trainer.max_epochs continues it)"
    )


def _reached(metrics: dict[str, Any], stop: dict[str, Any]) -> bool:
    """Whether a run that ended with ``metrics`` already trained as far as ``stop`` says."""
    epochs, steps = stop["trainer.max_epochs"], stop["trainer.max_steps"]
    return (epochs is not None and 0 <= epochs <= metrics.get("epoch", -1)) or (
        steps is not None and 0 <= steps <= metrics.get("global_step", -1)
    )


def _resolved(cfg: DictConfig) -> dict[str, Any]:
    """``cfg`` as plain resolved containers, without Hydra's own config."""
    plain = OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "hydra"])
    config = OmegaConf.to_container(plain, resolve=True, enum_to_str=True)
    assert isinstance(config, dict)
    return {str(k): v for k, v in config.items()}


def _identity(config: dict[Any, Any]) -> RunIdentity:
    """The identity of a run of the resolved ``config``, its data known by their paths."""
    flat = json.loads(json.dumps(_flatten(config)))  # JSON's types, as run.json reads back
    datamodule = config.get("datamodule") or {}
    sources = {
        f"datamodule.{key}": paths
        for key in DATA_KEYS
        if (paths := source_paths(key, datamodule.get(key))) is not None
    }
    settings = {k: v for k, v in flat.items() if not _ignored(k)}
    return RunIdentity(settings, None, sources, {k: flat.get(k) for k in STOP_KEYS})


def _flatten(config: dict[Any, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _ignored(key: str) -> bool:
    return any(key == k or key.startswith(f"{k}.") for k in NOT_IDENTITY)


def _setting(settings: dict[str, Any], key: str) -> Any:
    """``settings[key]``, with an absent key and an unset value (null, empty) alike: a key
    that a later physicsml adds, unset, leaves an earlier run's identity unchanged."""
    value = settings.get(key)
    return None if value in ([], {}) else value


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
