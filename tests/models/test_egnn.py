"""Tests of the EGNN model: physics checks, heads, structure."""

from __future__ import annotations

from typing import cast

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import read

from physicsml.config.errors import ConfigError
from physicsml.data.graph import atoms_to_batch
from physicsml.models.egnn import EGNN
from physicsml.models.egnn.model import EGNNLayer
from tests.models.physics import ModelPhysicsTests, random_rotation
from tests.structures import ASPIRIN, ETHANOL

ELEMENTS = (1, 6, 8, 29)
CUT_OFF = 4.0


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def small_egnn(**kwargs: object) -> EGNN:
    options: dict = dict(
        num_elements=len(ELEMENTS),
        cut_off=CUT_OFF,
        avg_num_neighbours=10.0,
        c_hidden=16,
        num_layers=2,
    )
    options.update(kwargs)
    return EGNN(**options)


class TestEGNNPhysics(ModelPhysicsTests):
    def make_model(self) -> torch.nn.Module:
        return small_egnn()


class TestEGNNCoordsPhysics(ModelPhysicsTests):
    """Coordinate updates and Bessel features must keep every physical symmetry."""

    def make_model(self) -> torch.nn.Module:
        model = small_egnn(num_layers=3, num_rbf=4, modify_coords=True)
        for layer in model.layers:  # make the position updates large enough to matter
            phi_x = cast(EGNNLayer, layer).phi_x
            if phi_x is not None:
                torch.nn.init.normal_(cast(torch.nn.Linear, phi_x[-1]).weight, std=0.5)
        return model


@pytest.fixture(scope="module")
def frames() -> list[Atoms]:
    ethanol = cast(list[Atoms], read(ETHANOL, "0:2"))
    return ethanol + cast(list[Atoms], read(ASPIRIN, "0:1"))


def rotated(frames: list, seed: int = 0) -> list:
    rot = random_rotation(np.random.default_rng(seed))
    out = []
    for atoms in frames:
        a = atoms.copy()
        a.positions = a.positions @ rot.T + 3.0
        out.append(a)
    return out


def make_batch(frames: list, graph_attrs: torch.Tensor | None = None) -> dict:
    batch = atoms_to_batch(frames, ELEMENTS, CUT_OFF, dtype=torch.float64)
    if graph_attrs is not None:
        batch["graph_attrs"] = graph_attrs
    return batch


def test_scalar_heads_shapes_and_invariance(frames: list) -> None:
    torch.manual_seed(0)
    model = small_egnn(num_node_scalars=2, num_graph_scalars=2, num_graph_attrs=2).double()
    attrs = torch.tensor([[0.0, 1.0], [1.0, -1.0], [2.0, 0.5]], dtype=torch.float64)
    batch = make_batch(frames, attrs)
    out = model(batch)
    n = batch["coordinates"].shape[0]
    assert out["node_energy"].shape == (n,)
    assert out["y_node_scalars"].shape == (n, 2)
    assert out["graph_scalars"].shape == (3, 2)
    moved = model(make_batch(rotated(frames), attrs))
    for key, value in out.items():
        torch.testing.assert_close(moved[key], value, atol=1e-10, rtol=1e-8)


def test_graph_attrs_change_graph_outputs(frames: list) -> None:
    torch.manual_seed(0)
    model = small_egnn(num_graph_scalars=1, num_graph_attrs=1).double()
    zero = model(make_batch(frames, torch.zeros(3, 1, dtype=torch.float64)))
    one = model(make_batch(frames, torch.tensor([[0.0], [1.0], [0.0]], dtype=torch.float64)))
    changed = (one["graph_scalars"] - zero["graph_scalars"]).abs()[:, 0] > 1e-8
    assert changed.tolist() == [False, True, False]
    energy_changed = (one["node_energy"] - zero["node_energy"]).abs() > 1e-8
    assert energy_changed.any() and not energy_changed[: len(frames[0])].any()


def test_mean_pooling_is_size_intensive(frames: list) -> None:
    torch.manual_seed(0)
    model = small_egnn(num_graph_scalars=1, pool_type="mean").double()
    one = model(make_batch(frames[:1]))["graph_scalars"]
    # Two far-apart copies of a molecule form one graph with the same mean features.
    double = frames[0].copy() + frames[0].copy()
    double.positions[len(frames[0]) :] += 100.0
    two = model(make_batch([double]))["graph_scalars"]
    torch.testing.assert_close(two, one)
    torch.manual_seed(0)
    summed = small_egnn(num_graph_scalars=1, pool_type="sum").double()
    assert not torch.allclose(summed(make_batch([double]))["graph_scalars"], one)


def test_coordinate_updates_reach_the_energy(frames: list) -> None:
    torch.manual_seed(0)
    model = small_egnn(num_layers=3, modify_coords=True).double()
    assert model.layers[-1].phi_x is None and model.layers[0].phi_x is not None
    batch = make_batch(frames)
    before = model(batch)["node_energy"]
    with torch.no_grad():
        model.layers[0].phi_x[-1].bias.fill_(0.3)
    after = model(batch)["node_energy"]
    assert (after - before).abs().max() > 1e-6


@pytest.mark.parametrize("head", ["node_vector", "graph_vector"])
def test_vector_heads_are_refused(head: str) -> None:
    with pytest.raises(ValueError, match=f"EGNN cannot predict y_{head}"):
        small_egnn(**{head: True})


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="pool_type"):
        small_egnn(pool_type="max")
    with pytest.raises(ConfigError, match="unknown activation 'NoSuchAct'"):
        small_egnn(mlp_activation="NoSuchAct")


def test_layer_size() -> None:
    """The split first layer of phi_e has exactly the weights of one Linear on [h_i, h_j, radial]
    (as in physicsml); the attention is one Linear (physicsml: an MLP of depth num_layers_phi)."""
    c, rbf = 32, 8
    model = small_egnn(c_hidden=c, num_rbf=rbf, num_layers=1)
    phi_e = (2 * c + 1 + rbf) * c + c + c * c + c
    phi_h = 2 * c * c + c + c * c + c
    attention = c + 1
    assert count_parameters(model.layers[0]) == phi_e + phi_h + attention


def test_dropout_only_in_training(frames: list[Atoms]) -> None:
    torch.manual_seed(0)
    model = small_egnn(dropout=0.5).double()
    batch = make_batch(frames)
    model.train()
    assert not torch.allclose(model(batch)["node_energy"], model(batch)["node_energy"])
    model.eval()
    torch.testing.assert_close(model(batch)["node_energy"], model(batch)["node_energy"])
