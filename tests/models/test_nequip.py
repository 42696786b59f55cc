"""NequIP: physics checks plus its optional heads."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import read

from physicsml.data.graph import atoms_to_batch
from physicsml.models.nequip import NequIP
from tests.models.physics import ModelPhysicsTests, random_rotation
from tests.structures import ASPIRIN, ETHANOL

ELEMENTS = (1, 6, 8, 29)
CUT_OFF = 4.0


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def small_nequip(**heads: int | bool) -> NequIP:
    return NequIP(
        num_elements=len(ELEMENTS),
        cut_off=CUT_OFF,
        avg_num_neighbours=10.0,
        num_layers=3,
        num_features=6,
        max_ell=2,
        mlp_irreps="4x0e",
        radial_mlp_width=8,
        **heads,  # type: ignore[arg-type]
    )


@functools.cache
def _cached_model() -> NequIP:
    torch.manual_seed(0)
    return small_nequip()


class TestNequIPPhysics(ModelPhysicsTests):
    elements = ELEMENTS
    cut_off = CUT_OFF

    def make_model(self) -> torch.nn.Module:
        # e3nn builds its modules slowly (code generation): build once, hand out copies.
        return copy.deepcopy(_cached_model())


@pytest.fixture
def molecules() -> list[Atoms]:
    frames = read(ETHANOL, "0:40:20")
    return frames + read(ASPIRIN, "0:1")


def _batch(atoms_list: list[Atoms]) -> dict[str, torch.Tensor]:
    return atoms_to_batch(atoms_list, ELEMENTS, CUT_OFF, dtype=torch.float64)


def test_heads_shapes_and_symmetry(molecules: list[Atoms]) -> None:
    torch.manual_seed(0)
    model = small_nequip(
        num_node_scalars=2, node_vector=True, graph_vector=True, num_graph_scalars=3
    ).double()
    rot = random_rotation(np.random.default_rng(0))
    rotated = []
    for atoms in molecules:
        a = atoms.copy()
        a.positions = a.positions @ rot.T
        rotated.append(a)
    out, out_rot = model(_batch(molecules)), model(_batch(rotated))
    n, g = sum(len(a) for a in molecules), len(molecules)
    assert out["node_energy"].shape == (n,)
    assert out["y_node_scalars"].shape == (n, 2)
    assert out["graph_scalars"].shape == (g, 3)
    assert out["y_node_vector"].shape == (n, 3)
    assert out["y_graph_vector"].shape == (g, 3)
    r = torch.from_numpy(rot)
    for key in ("node_energy", "y_node_scalars", "graph_scalars"):
        torch.testing.assert_close(out_rot[key], out[key])
    for key in ("y_node_vector", "y_graph_vector"):
        assert out[key].abs().max() > 1e-6, f"{key} is identically zero"
        torch.testing.assert_close(out_rot[key], out[key] @ r.T)


def test_rejects_graph_attrs() -> None:
    with pytest.raises(ValueError, match="graph_attrs"):
        small_nequip(num_graph_attrs=2)


def test_peer_parameter_count_structure() -> None:
    """physicsml's 3-layer, 32-feature model has 266,392 parameters; ours drops only the last
    layer's non-scalar outputs, which no head reads (see the report)."""
    model = NequIP(
        num_elements=4, cut_off=5.0, avg_num_neighbours=10.0, num_layers=3, num_features=32
    )
    irreps = [str(layer.irreps_out) for layer in model.layers]
    assert irreps == ["32x0e+32x1o+32x2e", "32x0e+32x1o+32x1e+32x2o+32x2e", "32x0e"]
    assert count_parameters(model) == 147_608
    four = NequIP(num_elements=4, cut_off=5.0, avg_num_neighbours=10.0, num_layers=4)
    assert [layer.resnet for layer in four.layers] == [False, False, False, True]
