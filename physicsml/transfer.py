"""Fine-tuning: start a run from a trained model's weights (``module.init_from``); freezing
parameters (``module.freeze``) is ``physicsml.lightning.freezing``.

A run started ``init_from`` a model takes its weights only: the optimizer, scheduler and epoch
counter start afresh. The architecture, its hyperparameters and the cut-off must be the
source's (a config that differs is refused with the overrides that match it). The
normalisation the weights were trained with (``avg_num_neighbours``, the energy scale) is kept;
the reference energies (E0) are refit on the new training split (``refit``) or kept for the
source's elements (``keep``). Elements new to the source get freshly initialised rows of every
per-element parameter, found by building the model with one element more.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from physicsml.config.errors import ConfigError
from physicsml.data.statistics import DataStatistics
from physicsml.lightning.module import PotentialModule
from physicsml.saved_model import ModelSpec, SavedModelError, read_model_file

ENERGY_BUFFERS = ("reference_energies", "energy_scale")
"""The module's energy buffers: set from the (transferred) statistics, not copied."""


@dataclass(frozen=True)
class Source:
    """The model a run starts from: its file, spec and weights."""

    path: str
    spec: ModelSpec
    state_dict: dict[str, Tensor]


def read_source(cfg: DictConfig) -> Source | None:
    """The model of ``module.init_from`` (None when unset), checked to match ``cfg``."""
    path = cfg.module.get("init_from")
    if not path:
        return None
    try:
        spec, state_dict = read_model_file(path)
    except SavedModelError as exc:
        raise ConfigError(f"module.init_from: {exc}") from None
    source = Source(str(path), spec, state_dict)
    _check_same_model(cfg, source)
    return source


def source_overrides(spec: ModelSpec) -> list[str]:
    """Command-line overrides that compose ``spec``'s architecture, hyperparameters and cut-off."""
    return [
        f"module={spec.architecture}",
        *(f"module.model.{k}={json.dumps(v)}" for k, v in sorted(spec.hyperparameters.items())),
        f"datamodule.cut_off={spec.graph.cut_off}",
    ]


def _check_same_model(cfg: DictConfig, source: Source) -> None:
    model = OmegaConf.to_container(cfg.module.model, resolve=True, enum_to_str=True)
    assert isinstance(model, dict)
    config = json.loads(json.dumps(model))
    wanted = json.loads(
        json.dumps({"architecture": source.spec.architecture, **source.spec.hyperparameters})
    )
    differ = [
        f"module.model.{k}: {config.get(k)} -> {wanted.get(k)}"
        for k in sorted(config.keys() | wanted.keys())
        if config.get(k) != wanted.get(k)
    ]
    cut_off = float(cfg.datamodule.cut_off)
    if cut_off != source.spec.graph.cut_off:
        differ.append(f"datamodule.cut_off: {cut_off} -> {source.spec.graph.cut_off}")
    if differ:
        raise ConfigError(
            f"module.init_from: {source.path} is a model of other settings than the config "
            f"({'; '.join(differ)}): use its settings, "
            f"{' '.join(source_overrides(source.spec))}"
        )


def transferred_statistics(source: Source, stats: DataStatistics, keep: bool) -> DataStatistics:
    """``stats`` of the new training split with the source's normalisation (energy scale and
    avg_num_neighbours) and, when ``keep``, the source's E0 of its elements."""
    trained, given = source.spec.statistics, source.spec.training
    energies = list(stats.reference_energies)
    if keep:
        kept = given.get("reference_energies") or dict(
            zip(trained["elements"], trained["reference_energies"], strict=True)
        )
        kept = {int(z): float(e) for z, e in kept.items()}
        energies = [kept.get(z, e) for z, e in zip(stats.elements, energies, strict=True)]
    return replace(
        stats,
        reference_energies=energies,
        energy_scale=float(given.get("energy_scale") or trained["energy_scale"]),
        avg_num_neighbours=float(trained["avg_num_neighbours"]),
    )


def load_source_weights(module: PotentialModule, source: Source) -> None:
    """Copy the source's weights into ``module``; per-element rows go to their element's new
    index (rows of elements new to the source keep their fresh initialisation)."""
    target = {k: v for k, v in module.state_dict().items() if k not in ENERGY_BUFFERS}
    # through the source's own module: what an older file lacks gets the loader's defaults
    original = PotentialModule(source.spec)
    original.load_state_dict(source.state_dict)
    given = {k: v for k, v in original.state_dict().items() if k not in ENERGY_BUFFERS}
    if target.keys() != given.keys():
        lacking = sorted(target.keys() - given.keys())
        extra = sorted(given.keys() - target.keys())
        raise ConfigError(
            f"module.init_from: {source.path} has other weights than this run's model "
            f"(lacking {lacking}, extra {extra}): train it on the same targets "
            f"(datamodule.y_*) as the source"
        )
    same_elements = (
        source.spec.elements == module.spec.elements
        and source.spec.num_elements == module.spec.num_elements
    )
    dims = {} if same_elements else element_dims(module)
    shared = [z for z in source.spec.elements if z in module.spec.elements]
    old_index = torch.tensor([source.spec.elements.index(z) for z in shared])
    new_index = torch.tensor([module.spec.elements.index(z) for z in shared])
    with torch.no_grad():
        for name, value in target.items():
            old = given[name]
            element = dims.get(name, [])
            if _other_sizes(old, element) != _other_sizes(value, element) or any(
                old.shape[d] != source.spec.num_elements for d in element
            ):
                raise ConfigError(
                    f"module.init_from: {source.path}: {name} of shape {list(old.shape)} cannot "
                    f"be mapped onto shape {list(value.shape)} of the elements "
                    f"{module.spec.elements}: fine-tune on the source's elements "
                    f"{source.spec.elements}"
                )
            if element:
                value[_at(value.dim(), element, new_index)] = old[
                    _at(old.dim(), element, old_index)
                ].to(value)
            else:
                value.copy_(old)


def element_dims(module: PotentialModule) -> dict[str, list[int]]:
    """The dimensions indexed by element of each state of ``module``, found by building it
    with one element more. A dimension that grows by more than one (e.g. elements times
    channels) cannot be mapped by element and is refused."""
    spec = module.spec
    wider = PotentialModule(replace(spec, num_elements=spec.num_elements + 1)).state_dict()
    out: dict[str, list[int]] = {}
    for name, value in module.state_dict().items():
        grown = [d for d in range(value.dim()) if wider[name].shape[d] != value.shape[d]]
        if not grown or name in ENERGY_BUFFERS:
            continue
        if any(wider[name].shape[d] - value.shape[d] != 1 for d in grown):
            raise ConfigError(
                f"module.init_from: {spec.architecture}'s {name} mixes elements with other "
                f"features, so new elements cannot be added to it: fine-tune on the source's "
                f"elements, or train from scratch"
            )
        out[name] = grown
    return out


def _other_sizes(value: Tensor, element: Sequence[int]) -> list[int]:
    return [size for d, size in enumerate(value.shape) if d not in element]


def _at(ndim: int, dims: Sequence[int], index: Tensor) -> tuple[Any, ...]:
    """An index selecting ``index`` along each of ``dims`` (their outer product)."""
    out: list[Any] = [slice(None)] * ndim
    for k, d in enumerate(dims):
        shape = [1] * len(dims)
        shape[k] = -1
        out[d] = index.view(shape)
    return tuple(out)
