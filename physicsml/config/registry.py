"""Registers every schema in Hydra's ConfigStore and locates the shipped ``conf/`` tree."""

from __future__ import annotations

import importlib
from dataclasses import field, make_dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore

from physicsml.config.schema import DataModuleConfig, ModuleConfig, TrainConfig, TrainerConfig

MODELS: dict[str, str] = {
    "egnn": "physicsml.models.egnn:EGNNConfig",
    "mace": "physicsml.models.mace:MACEConfig",
    "nequip": "physicsml.models.nequip:NequIPConfig",
    "allegro": "physicsml.models.allegro:AllegroConfig",
    "tensornet": "physicsml.models.tensornet:TensorNetConfig",
    "ani": "physicsml.models.ani:ANIConfig",
}
"""Architecture name -> its hyperparameter dataclass (``module=<name>`` selects it)."""


def model_config_class(name: str) -> type:
    """The hyperparameter dataclass of architecture ``name``."""
    module_name, class_name = MODELS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def module_schema(name: str) -> type:
    """``ModuleConfig`` whose ``model`` field is typed with the architecture's dataclass."""
    model_class = model_config_class(name)
    return make_dataclass(
        f"{model_class.__name__[: -len('Config')]}ModuleConfig",
        [("model", model_class, field(default_factory=model_class))],
        bases=(ModuleConfig,),
    )


def register_configs() -> None:
    """Store the schema of every group (``<group>_schema``) and of every model."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(group="datamodule", name="datamodule_schema", node=DataModuleConfig)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    for name in MODELS:
        cs.store(group="module", name=f"{name}_schema", node=module_schema(name))


def config_dir() -> Path:
    """The ``conf/`` tree: packaged with the wheel, or at the root of a source checkout."""
    packaged = Path(__file__).resolve().parents[1] / "conf"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "conf"
