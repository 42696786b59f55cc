"""Allegro: physics checks, heads, per-layer cut-offs and strict locality."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import read

from physicsml.data.graph import atoms_to_batch
from physicsml.models.allegro import Allegro
from tests.models.physics import ModelPhysicsTests, random_rotation
from tests.structures import ASPIRIN, ETHANOL

ELEMENTS = (1, 6, 8, 29)
CUT_OFF = 4.0


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def small_allegro(**kwargs: object) -> Allegro:
    hyper: dict[str, object] = {
        "num_layers": 2,
        "max_ell": 2,
        "env_embed_multiplicity": 4,
        "two_body_latent_mlp_latent_dimensions": [8, 16],
        "latent_mlp_latent_dimensions": [16],
        "mlp_latent_dimensions": [8],
    }
    hyper.update(kwargs)
    return Allegro(
        num_elements=len(ELEMENTS),
        cut_off=CUT_OFF,
        avg_num_neighbours=10.0,
        **hyper,  # type: ignore[arg-type]
    )


@functools.cache
def _cached_model(per_layer_cutoffs: tuple[float, ...] | None = None) -> Allegro:
    torch.manual_seed(0)
    cutoffs = None if per_layer_cutoffs is None else list(per_layer_cutoffs)
    return small_allegro(per_layer_cutoffs=cutoffs)


class TestAllegroPhysics(ModelPhysicsTests):
    elements = ELEMENTS
    cut_off = CUT_OFF

    def make_model(self) -> torch.nn.Module:
        return copy.deepcopy(_cached_model())


class TestAllegroPerLayerCutoffsPhysics(ModelPhysicsTests):
    """Smaller cut-offs in the later layers keep every symmetry and stay smooth."""

    elements = ELEMENTS
    cut_off = CUT_OFF

    def make_model(self) -> torch.nn.Module:
        return copy.deepcopy(_cached_model((4.0, 3.5, 3.0)))

    def test_smooth_at_layer_cut_offs(self) -> None:
        """Atom 2 crosses a layer's cut-off around atom 0, whose edge to atom 1 stays active."""
        model = self.model()
        for r_c in (3.5, 3.0):
            energies, forces = [], []
            for d in r_c + np.array([-1e-6, 1e-6]):
                atoms = Atoms("COC", positions=[[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [0.0, d, 0.0]])
                e, f = self.energy_forces(model, [atoms])
                energies.append(e.item())
                forces.append(f[2, 1].item())
            assert abs(energies[0] - energies[1]) < 1e-6
            assert abs(forces[0] - forces[1]) < 1e-5


@pytest.fixture
def molecules() -> list[Atoms]:
    frames = read(ETHANOL, "0:40:20")
    return frames + read(ASPIRIN, "0:1")


def _batch(atoms_list: list[Atoms]) -> dict[str, torch.Tensor]:
    return atoms_to_batch(atoms_list, ELEMENTS, CUT_OFF, dtype=torch.float64)


def test_scalar_heads_shapes_and_invariance(molecules: list[Atoms]) -> None:
    torch.manual_seed(0)
    model = small_allegro(num_node_scalars=2, num_graph_scalars=3).double()
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
    for key in ("node_energy", "y_node_scalars", "graph_scalars"):
        assert out[key].abs().max() > 1e-6
        torch.testing.assert_close(out_rot[key], out[key])


@pytest.mark.parametrize("head", [{"node_vector": True}, {"graph_vector": True}])
def test_rejects_vector_heads(head: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="Allegro cannot predict"):
        small_allegro(**head)


def test_rejects_bad_per_layer_cutoffs() -> None:
    with pytest.raises(ValueError, match="per_layer_cutoffs"):
        small_allegro(per_layer_cutoffs=[4.0, 3.0])
    with pytest.raises(ValueError, match="per_layer_cutoffs"):
        small_allegro(per_layer_cutoffs=[3.0, 3.5, 3.0])


def test_strictly_local() -> None:
    """An atom's energy only depends on atoms within one cut-off of it (no message passing)."""
    model = _cached_model().double()
    # A chain: atom 0 sees atom 1 only; atom 2 is within the cut-off of atom 1 but not of 0.
    chain = Atoms("COC", positions=[[0.0, 0, 0], [3.0, 0, 0], [6.0, 0.3, 0]])
    moved = chain.copy()
    moved.positions[2] += [0.3, 0.4, -0.2]
    e_chain = model(_batch([chain]))["node_energy"]
    e_moved = model(_batch([moved]))["node_energy"]
    torch.testing.assert_close(e_moved[0], e_chain[0], atol=1e-12, rtol=0)
    assert (e_moved[1] - e_chain[1]).abs() > 1e-8


def test_peer_parameter_count_structure() -> None:
    """physicsml's benchmark Allegro (4 elements) has 118,872 parameters; ours has no linear after
    the last tensor product (its output is never read), 768 fewer (see the report)."""
    model = Allegro(
        num_elements=4,
        cut_off=5.0,
        avg_num_neighbours=10.0,
        env_embed_multiplicity=16,
        latent_mlp_latent_dimensions=[128, 128],
        two_body_latent_mlp_latent_dimensions=[32, 64, 128],
        mlp_latent_dimensions=[64],
    )
    assert [t.num_scalar_paths for t in model.tps] == [3, 3]
    assert count_parameters(model) == 118_088
