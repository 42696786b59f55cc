"""The architectures by name, their config schemas, and Hydra's ConfigStore entries.

A model's hyperparameters are written once, as keyword arguments of its constructor with
defaults and type hints; :func:`model_schema` turns them into the dataclass that checks
``module.model`` (plus ``architecture``, the name that selects the class).
"""

from __future__ import annotations

import functools
import inspect
import operator
import types
import typing
from collections.abc import Sequence
from dataclasses import field, make_dataclass
from pathlib import Path
from typing import Any, cast

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from physicsml.config.errors import ConfigError
from physicsml.config.schema import (
    DataModuleConfig,
    ModuleConfig,
    PeftConfig,
    TrainConfig,
    TrainerConfig,
)
from physicsml.models.allegro import Allegro
from physicsml.models.ani import ANI
from physicsml.models.egnn import EGNN
from physicsml.models.mace import MACE
from physicsml.models.nequip import NequIP
from physicsml.models.tensornet import TensorNet

ARCHITECTURES: dict[str, type[torch.nn.Module]] = {
    "egnn": EGNN,
    "mace": MACE,
    "nequip": NequIP,
    "allegro": Allegro,
    "tensornet": TensorNet,
    "ani": ANI,
}
"""Architecture name (``module=<name>``, ``module.model.architecture``) -> model class."""

DATA_ARGUMENTS = frozenset(
    {
        "num_elements",
        "cut_off",
        "avg_num_neighbours",
        "num_node_scalars",
        "node_vector",
        "graph_vector",
        "num_graph_scalars",
        "num_graph_attrs",
    }
)
"""Constructor arguments that the LightningModule derives from the data and the targets."""


def architecture_class(name: str) -> type[torch.nn.Module]:
    """The model class of architecture ``name``."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(ARCHITECTURES)
        raise ConfigError(
            f"module.model.architecture: unknown architecture {name!r} (known: {known})"
        ) from None


def _config_type(hint: Any) -> Any:
    """``hint`` with every ``Sequence[X]`` as ``list[X]`` (what OmegaConf can check)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Sequence:
        return types.GenericAlias(list, (_config_type(args[0]),))
    if origin in (typing.Union, types.UnionType):
        return functools.reduce(operator.or_, [_config_type(a) for a in args])
    return hint


def _as_lists(value: Any) -> Any:
    """``value`` with tuples (also nested ones) turned into lists."""
    return [_as_lists(v) for v in value] if isinstance(value, tuple) else value


def _config_field(default: Any) -> Any:
    """A dataclass field holding ``default``; a tuple becomes a list built per instance."""
    if isinstance(default, tuple):
        return field(default_factory=lambda: _as_lists(default))
    return field(default=default)


def model_schema(name: str) -> type:
    """The dataclass of ``module.model`` for architecture ``name``, from its constructor:
    every keyword argument but :data:`DATA_ARGUMENTS`, with its type hint and default."""
    model_class = architecture_class(name)
    hints = typing.get_type_hints(model_class.__init__)
    fields: list[tuple[str, Any, Any]] = [("architecture", str, field(default=name))]
    for parameter in inspect.signature(model_class.__init__).parameters.values():
        if parameter.kind is not parameter.KEYWORD_ONLY or parameter.name in DATA_ARGUMENTS:
            continue
        if parameter.default is parameter.empty:
            raise TypeError(
                f"{model_class.__name__}: hyperparameter {parameter.name} needs a default"
            )
        fields.append(
            (parameter.name, _config_type(hints[parameter.name]), _config_field(parameter.default))
        )
    return make_dataclass(f"{model_class.__name__}Config", fields)


def checked_hyperparameters(name: str, hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """``hyperparameters`` of architecture ``name`` checked against its schema (names and
    types) before anything is built: a saved model's values never reach a constructor
    unchecked. Missing ones take the schema's defaults."""
    schema = OmegaConf.structured(model_schema(name))
    try:
        merged = OmegaConf.merge(schema, dict(hyperparameters, architecture=name))
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        message = str(exc).splitlines()[0]
        raise ConfigError(f"module.model.{key}: {message}") from None
    checked = cast(dict[str, Any], OmegaConf.to_container(merged))
    checked.pop("architecture")
    return checked


def module_schema(name: str) -> type:
    """``ModuleConfig`` whose ``model`` field is typed with the architecture's schema."""
    model_class = model_schema(name)
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
    cs.store(group="peft", name="peft_schema", node=PeftConfig)
    for name in ARCHITECTURES:
        cs.store(group="module", name=f"{name}_schema", node=module_schema(name))


def config_dir() -> Path:
    """The ``conf/`` tree: packaged with the wheel, or at the root of a source checkout."""
    packaged = Path(__file__).resolve().parents[1] / "conf"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "conf"
