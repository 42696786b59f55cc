"""The architecture registry and the config schemas generated from the constructors."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from physicsml.config.errors import ConfigError
from physicsml.config.registry import (
    ARCHITECTURES,
    DATA_ARGUMENTS,
    architecture_class,
    model_schema,
)


def test_unknown_architecture_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="'schnet' .*egnn, mace, nequip, allegro, tensornet, ani"):
        architecture_class("schnet")


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_schema_holds_the_hyperparameters(name: str) -> None:
    schema = model_schema(name)
    parameters = inspect.signature(architecture_class(name)).parameters
    hyperparameters = [p for p in parameters if p not in DATA_ARGUMENTS]
    assert [f.name for f in dataclasses.fields(schema)] == ["architecture", *hyperparameters]
    assert schema().architecture == name


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_schema_defaults_build_the_model(name: str) -> None:
    config = dataclasses.asdict(model_schema(name)())
    architecture_class(config.pop("architecture"))(
        num_elements=4, cut_off=5.2, avg_num_neighbours=10.0, **config
    )


def test_sequences_become_lists() -> None:
    ani = model_schema("ani")()
    assert ani.hidden_dims == [[160, 128, 96], [144, 112, 96], [128, 112, 96], [128, 112, 96]]
    assert model_schema("ani")().hidden_dims is not ani.hidden_dims  # one list per instance
    fields = {f.name: f.type for f in dataclasses.fields(model_schema("allegro"))}
    assert fields["mlp_latent_dimensions"] == list[int]
    assert fields["per_layer_cutoffs"] == list[float] | None
