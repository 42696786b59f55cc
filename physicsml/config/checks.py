"""Checks of a composed run config that need more than types: run before any work.

The schema catches unknown keys and wrong types at composition; these catch well-typed values
that would only fail later (after the data are prepared, or after a whole epoch): class names
and their keyword arguments, the metrics that monitors watch, batch sizes, directories that
must be writable, and a checkpoint to resume from. Each problem is a one-line
:class:`ConfigError` naming the key.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import DictConfig, OmegaConf

from physicsml.config.errors import ConfigError
from physicsml.saved_model import SavedModelError, read_model_file

SPLITS = ("train", "validation", "test", "predict")
METRIC_SPLITS = ("train", "val", "test")


def check_run_config(cfg: DictConfig, run_dir: Path) -> None:
    """Raise a ConfigError for the first value of ``cfg`` that cannot work."""
    module = cast(dict[str, Any], OmegaConf.to_container(cfg.module, resolve=True))
    check_classes(module)
    decay = module.get("ema_decay")
    if decay is not None and not 0 < decay < 1:
        raise ConfigError(f"module.ema_decay must be in (0, 1), or null for no EMA; got {decay}")
    if cfg.seed is not None and not 0 <= cfg.seed < 2**32:
        raise ConfigError(f"seed must be null or in [0, 2**32), got {cfg.seed}")
    clip = cfg.trainer.gradient_clip_val
    if clip is not None and clip < 0:
        raise ConfigError(f"trainer.gradient_clip_val must be >= 0 (0: no clipping), got {clip}")
    for split in SPLITS:
        size = cfg.datamodule[split].batch_size
        if size < 1:
            raise ConfigError(f"datamodule.{split}.batch_size must be at least 1, got {size}")
    check_monitors(cfg, logged_metrics(cfg.datamodule))
    check_writable("datamodule.cache_dir", Path(cfg.datamodule.cache_dir))
    if cfg.datamodule.pre_batch_dir:
        check_writable("datamodule.pre_batch_dir", Path(cfg.datamodule.pre_batch_dir))
    check_writable("the run directory (hydra.run.dir)", run_dir)
    if cfg.ckpt_path:
        check_checkpoint(str(cfg.ckpt_path), str(module["model"]["architecture"]))


def _check_arguments(key: str, target: Any, leading: int, kwargs: dict[str, Any]) -> None:
    """``target(<leading positional args>, **kwargs)`` must bind to its signature."""
    try:
        inspect.signature(target).bind(*([None] * leading), **kwargs)
    except TypeError as exc:
        raise ConfigError(f"{key}: {target.__name__}: {exc}") from None


def _named_class(key: str, namespace: Any, where: str, name: str) -> Any:
    found = getattr(namespace, name, None)
    if not isinstance(found, type):
        raise ConfigError(f"{key}: {where} has no {name!r}")
    return found


def _build(key: str, target: Any, *args: Any, **kwargs: Any) -> Any:
    """``target(*args, **kwargs)``, its argument and value errors as one ConfigError."""
    _check_arguments(key, target, len(args), kwargs)
    try:
        return target(*args, **kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{key}: {target.__name__}: {exc}") from None


def check_classes(module: dict[str, Any]) -> None:
    """Optimizer, scheduler and loss classes exist and accept their configured arguments
    (each is built once, the optimizer on a stand-in parameter)."""
    optimizer = module["optimizer"]
    opt_class = _named_class("module.optimizer.name", torch.optim, "torch.optim", optimizer["name"])
    stand_in = [torch.nn.Parameter(torch.zeros(1))]
    built = _build("module.optimizer.config", opt_class, stand_in, **optimizer.get("config") or {})
    scheduler = module.get("scheduler") or {}
    if scheduler.get("name"):
        sched_class = _named_class(
            "module.scheduler.name",
            torch.optim.lr_scheduler,
            "torch.optim.lr_scheduler",
            scheduler["name"],
        )
        _build("module.scheduler.config", sched_class, built, **scheduler.get("config") or {})
    for key, loss in module.items():
        if key.endswith("_loss") and loss is not None:
            loss_class = _named_class(f"module.{key}.name", torch.nn, "torch.nn", loss["name"])
            _check_arguments(f"module.{key}.config", loss_class, 0, loss.get("config") or {})


def _target_names(datamodule: DictConfig) -> Iterator[str]:
    for kind in (
        "y_graph_scalars",
        "y_node_scalars",
        "y_node_vector",
        "y_graph_vector",
        "y_graph_tensor",
    ):
        value = datamodule.get(kind)
        if value is not None:
            yield from [value] if isinstance(value, str) else list(value)


def logged_metrics(datamodule: DictConfig) -> set[str]:
    """The epoch metrics ``PotentialModule`` logs for the configured targets."""
    names = list(_target_names(datamodule))
    metrics = {"train_loss_step"}
    for split in METRIC_SPLITS:
        metrics.add(f"{split}_loss")
        for name in names:
            metrics |= {f"{split}_{name}_mae", f"{split}_{name}_rmse"}
        if datamodule.get("y_graph_scalars"):
            metrics.add(f"{split}_{datamodule.y_graph_scalars[0]}_per_atom_mae")
    return metrics


def _monitors(cfg: DictConfig) -> Iterator[tuple[str, str]]:
    """(config key, metric) of every monitor: scheduler, callbacks group, trainer.callbacks."""
    scheduler = cfg.module.get("scheduler")
    if scheduler is not None and scheduler.get("name") and scheduler.get("monitor"):
        yield "module.scheduler.monitor", str(scheduler.monitor)
    for name, callback in (cfg.get("callbacks") or {}).items():
        if callback is not None and callback.get("monitor"):
            yield f"callbacks.{name}.monitor", str(callback.monitor)
    spec = cfg.trainer.get("callbacks") or []
    items = spec.values() if isinstance(spec, DictConfig) else spec
    for k, item in enumerate(items):
        monitor = (item.get("config") or {}).get("monitor")
        if monitor:
            yield f"trainer.callbacks[{k}].config.monitor", str(monitor)


def check_monitors(cfg: DictConfig, metrics: set[str]) -> None:
    """Every monitored metric is one that the module logs."""
    for key, metric in _monitors(cfg):
        if metric not in metrics:
            choices = ", ".join(sorted(m for m in metrics if not m.startswith("test_")))
            raise ConfigError(f"{key}: no metric {metric!r} is logged; choose one of {choices}")


def check_writable(key: str, directory: Path) -> None:
    """``directory`` exists (or can be made) and is writable."""
    directory = directory.expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot create {directory}: {exc.strerror}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: {directory} is not writable")


def check_checkpoint(path: str, architecture: str) -> None:
    """``ckpt_path`` is a Lightning checkpoint of a model of ``architecture``."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"ckpt_path: no such file {file}")
    try:
        spec, _ = read_model_file(file)
    except SavedModelError as exc:
        raise ConfigError(f"ckpt_path: {exc}") from None
    blob = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    if "optimizer_states" not in blob:
        raise ConfigError(
            f"ckpt_path: {file} is a saved model, not a training checkpoint "
            "(use checkpoints/last.ckpt of a run)"
        )
    if spec.architecture != architecture:
        raise ConfigError(
            f"ckpt_path: {file} is a checkpoint of a {spec.architecture} model, but "
            f"module.model.architecture is {architecture}"
        )


def check_checkpoint_elements(path: str, elements: list[int]) -> None:
    """A checkpoint resumes training on the elements it was trained on; other data start from
    its weights with ``module.init_from`` instead."""
    spec, _ = read_model_file(path)
    if spec.elements != elements:
        raise ConfigError(
            f"ckpt_path: {path} was trained on the elements {spec.elements}, these data have "
            f"{elements}: to fine-tune on other data, start from its weights with "
            f"module.init_from={path} (and no ckpt_path)"
        )
