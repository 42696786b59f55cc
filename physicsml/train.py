"""``train(cfg)``: build the datamodule, module, callbacks, loggers and Trainer, then fit."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch import callbacks as pl_callbacks
from omegaconf import DictConfig, OmegaConf

from physicsml.config.schema import DataModuleConfig
from physicsml.data.datamodule import AtomsDataModule, ConfigError
from physicsml.lightning.module import PotentialModule

log = logging.getLogger(__name__)

PRECISIONS = {"32": "32-true", "64": "64-true"}


def trainer_kwargs(trainer_cfg: DictConfig) -> dict[str, Any]:
    """Trainer config -> ``lightning.Trainer`` keyword arguments (without callbacks/loggers)."""
    kwargs = cast(dict[str, Any], OmegaConf.to_container(trainer_cfg, resolve=True))
    kwargs.pop("callbacks", None)
    if kwargs.get("inference_mode"):
        raise ConfigError(
            "trainer.inference_mode must be false: forces are gradients of the energy, "
            "so validation and prediction need autograd"
        )
    precision = str(kwargs["precision"])
    kwargs["precision"] = PRECISIONS.get(precision, precision)
    return {k: v for k, v in kwargs.items() if v is not None or k in ("max_epochs",)}


def _callback_class(name: str) -> type[pl_callbacks.Callback]:
    wanted = name.replace("_", "").lower()
    for attr in dir(pl_callbacks):
        obj = getattr(pl_callbacks, attr)
        is_callback = isinstance(obj, type) and issubclass(obj, pl_callbacks.Callback)
        if is_callback and attr.lower() == wanted:
            return obj
    raise ConfigError(f"trainer.callbacks: lightning has no callback named {name!r}")


def build_callbacks(callbacks_cfg: Any, trainer_callbacks: Any) -> list[pl_callbacks.Callback]:
    """Callbacks from the ``callbacks`` group (Hydra ``_target_`` form) and from
    ``trainer.callbacks`` (the spec's list of ``{name, config}`` dicts, or a dict of them)."""
    out: list[pl_callbacks.Callback] = []
    for cb in (callbacks_cfg or {}).values():
        if cb is not None:
            out.append(instantiate(cb))
    spec = OmegaConf.to_container(trainer_callbacks, resolve=True) if trainer_callbacks else []
    if isinstance(spec, dict):
        spec = list(spec.values())
    for item in spec or []:
        if not isinstance(item, dict) or "name" not in item:
            raise ConfigError(f"trainer.callbacks: expected {{name, config}} entries, got {item!r}")
        out.append(_callback_class(item["name"])(**(item.get("config") or {})))
    return out


def build_loggers(logger_cfg: Any) -> list[Any]:
    """Loggers from the ``logger`` group (``{name: {_target_: ...}}``)."""
    return [instantiate(lg) for lg in (logger_cfg or {}).values() if lg is not None]


def _final_metrics(trainer: L.Trainer) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
    }
    for key, value in sorted(trainer.callback_metrics.items()):
        if key.startswith(("val_", "train_", "test_")) and not key.endswith("_step"):
            metrics[key] = float(value)
    return metrics


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Fit a potential as configured, write ``metrics.json`` into ``run_dir`` and return it."""
    if cfg.seed is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.float32_matmul_precision:
        torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    datamodule = AtomsDataModule(
        cast(DataModuleConfig, OmegaConf.to_object(cfg.datamodule)), run_dir=run_dir
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    if datamodule.statistics is None:
        raise ConfigError("no training data: set datamodule.train_data or datamodule.dataset")
    module = PotentialModule(
        module=cast(
            dict[str, Any], OmegaConf.to_container(cfg.module, resolve=True, enum_to_str=True)
        ),
        data=model_data(datamodule),
    )
    trainer = L.Trainer(
        **trainer_kwargs(cfg.trainer),
        callbacks=build_callbacks(cfg.get("callbacks"), cfg.trainer.callbacks),
        logger=build_loggers(cfg.get("logger")) or False,
    )
    if trainer.global_rank == 0:
        (run_dir / "statistics.json").write_text(
            json.dumps(datamodule.statistics.as_dict(), indent=2)
        )
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    metrics = _final_metrics(trainer)
    if cfg.test and "test" in datamodule.datasets:
        for key, value in trainer.test(module, datamodule=datamodule, verbose=False)[0].items():
            metrics[key] = float(value)
    if trainer.global_rank == 0:
        save_model(module, run_dir / "model.pt")
        tmp = run_dir / "metrics.json.tmp"
        tmp.write_text(json.dumps(metrics, indent=2, allow_nan=True))
        tmp.replace(run_dir / "metrics.json")
    return metrics


def model_data(datamodule: AtomsDataModule) -> dict[str, Any]:
    """What the model takes from the data: elements, statistics, targets, graph settings."""
    cfg = datamodule.config
    assert datamodule.statistics is not None
    return {
        "elements": datamodule.elements,
        "num_elements": datamodule.num_elements,
        "cut_off": float(cfg.cut_off),
        "statistics": datamodule.statistics.as_dict(),
        "targets": datamodule.targets.as_dict(),
        "graph": {
            "cut_off": float(cfg.cut_off),
            "pbc": None if cfg.pbc is None else [bool(x) for x in cfg.pbc],
            "cell": None if cfg.cell is None else [[float(x) for x in row] for row in cfg.cell],
            "self_interaction": bool(cfg.self_interaction),
        },
    }


def save_model(module: PotentialModule, path: Path) -> None:
    """Write hyperparameters + state dict (loadable with ``torch.load(weights_only=True)``)."""
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "format": "physicsml-model",
            "version": 1,
            "hyper_parameters": dict(module.hparams),
            "state_dict": module.state_dict(),
        },
        tmp,
    )
    tmp.replace(path)
