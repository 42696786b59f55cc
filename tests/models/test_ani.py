"""Physics, AEV and head tests of ANI."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.io import read

from physicsml.config.errors import ConfigError
from physicsml.config.registry import model_schema
from physicsml.data.graph import atoms_to_batch
from physicsml.models.ani import ANI
from physicsml.models.utils import edge_vectors
from tests.models.physics import ModelPhysicsTests
from tests.structures import ASPIRIN, ETHANOL

ELEMENTS = (1, 6, 8, 29)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def small(cut_off: float = 5.2, **kwargs: Any) -> ANI:
    return ANI(
        num_elements=len(ELEMENTS),
        cut_off=cut_off,
        avg_num_neighbours=10.0,
        hidden_dims=[[16, 8]],
        **kwargs,
    )


class TestANIPhysics(ModelPhysicsTests):
    # cut_off = radial cut-off, so the smoothness test puts the C-O pair at the AEV's edge
    cut_off = 5.2

    def make_model(self) -> torch.nn.Module:
        return small(self.cut_off)


def reference_aev(atoms: Atoms, cfg: Any) -> np.ndarray:
    """Naive loop over atoms, neighbours and neighbour pairs (non-periodic); ``cfg`` holds the
    ANI hyperparameters."""
    species = [ELEMENTS.index(z) for z in atoms.numbers]
    ns = len(ELEMENTS)
    pairs = {
        (a, b): k for k, (a, b) in enumerate(itertools.combinations_with_replacement(range(ns), 2))
    }
    # the model keeps its shifts in float32 buffers (cast to float64 by .double())
    rs = np.asarray(cfg.radial_shifts, dtype=np.float32).astype(np.float64)
    ra = np.asarray(cfg.angular_shifts, dtype=np.float32).astype(np.float64)
    zs = np.asarray(cfg.angle_sections, dtype=np.float32).astype(np.float64)

    def fc(r: float, rc: float) -> float:
        return 0.5 * math.cos(math.pi * r / rc) + 0.5 if r < rc else 0.0

    out = []
    pos = atoms.positions
    for i in range(len(atoms)):
        radial = np.zeros((ns, len(rs)))
        angular = np.zeros((len(pairs), len(ra), len(zs)))
        others = [j for j in range(len(atoms)) if j != i]
        for j in others:
            r = float(np.linalg.norm(pos[j] - pos[i]))
            radial[species[j]] += (
                0.25 * np.exp(-cfg.radial_eta * (r - rs) ** 2) * fc(r, cfg.radial_cut_off)
            )
        for j, k in itertools.combinations(others, 2):
            vj, vk = pos[j] - pos[i], pos[k] - pos[i]
            rj, rk = float(np.linalg.norm(vj)), float(np.linalg.norm(vk))
            theta = math.acos(0.95 * vj @ vk / (rj * rk))
            f1 = ((1 + np.cos(theta - zs)) / 2) ** cfg.angular_zeta
            f2 = np.exp(-cfg.angular_eta * ((rj + rk) / 2 - ra) ** 2)
            cut = fc(rj, cfg.angular_cut_off) * fc(rk, cfg.angular_cut_off)
            key = (min(species[j], species[k]), max(species[j], species[k]))
            angular[pairs[key]] += 2 * f2[:, None] * f1[None, :] * cut
        out.append(np.concatenate([radial.ravel(), angular.ravel()]))
    return np.array(out)


def test_aev_matches_naive_reference() -> None:
    atoms = read(ASPIRIN, 0)
    assert isinstance(atoms, Atoms)
    cfg = model_schema("ani")()  # the defaults
    model = ANI(num_elements=4, cut_off=6.0, avg_num_neighbours=10.0).double()
    batch = atoms_to_batch([atoms], ELEMENTS, 6.0)  # edges beyond 5.2 must be ignored
    aev = model.aev(batch, *edge_vectors(batch))
    expected = reference_aev(atoms, cfg)
    assert aev.shape == (len(atoms), 384)
    assert expected[:, 64:].max() > 0.1  # angular terms are present
    np.testing.assert_allclose(aev.numpy(), expected, rtol=1e-6, atol=1e-10)


def test_periodic_aev_equals_supercell_aev() -> None:
    """An atom of a small periodic cell sees the same environment as in a big finite cluster."""
    cell = bulk("Cu", "fcc", a=3.6, cubic=True)  # 3.6 A < radial cut-off: several images
    cluster = cell.repeat(5)
    cluster.pbc = False
    centre = int(np.argmin(np.linalg.norm(cluster.positions - cluster.cell.sum(0) / 2, axis=1)))
    model = small().double()
    periodic = atoms_to_batch([cell], ELEMENTS, 5.2)
    finite = atoms_to_batch([cluster], ELEMENTS, 5.2)
    aev_cell = model.aev(periodic, *edge_vectors(periodic))
    aev_cluster = model.aev(finite, *edge_vectors(finite))
    site = centre % len(cell)  # repeat() keeps the atom order within each copy
    torch.testing.assert_close(aev_cell[site], aev_cluster[centre])
    assert aev_cell[:, 4 * 16 :].abs().max() > 0


def test_energy_is_sum_of_element_networks() -> None:
    atoms = read(ETHANOL, 0)
    model = small().double()
    batch = atoms_to_batch([atoms], ELEMENTS, 5.2)
    out = model(batch)
    aev = model.aev(batch, *edge_vectors(batch))
    expected = torch.stack(
        [model.networks[int(s)](aev[k]).squeeze() for k, s in enumerate(batch["species"])]
    )
    assert out["node_energy"].shape == (len(atoms),)
    torch.testing.assert_close(out["node_energy"], expected)


def test_cut_off_smaller_than_radial_cut_off_is_rejected() -> None:
    message = r"datamodule.cut_off \(5.0\) must be >= 5.2 .*set datamodule.cut_off=5.2$"
    with pytest.raises(ConfigError, match=message):
        small(cut_off=5.0)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_node_scalars": 1}, "y_node_scalars"),
        ({"node_vector": True}, "y_node_vector"),
        ({"graph_vector": True}, "y_graph_vector"),
        ({"num_graph_scalars": 1}, "y_graph_scalars"),
    ],
)
def test_unsupported_heads(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        small(**kwargs)


def test_default_networks_are_ani1_sized() -> None:
    """One network per element with ANI-1's H, C, N, O sizes: 326,660 parameters."""
    model = ANI(num_elements=4, cut_off=5.2, avg_num_neighbours=10.0)
    assert model.aev.dim == 384
    assert count_parameters(model) == 326_660


def test_smooth_at_angular_cut_off() -> None:
    """H crosses the 3.5 A angular cut-off of C: only C-centred angular terms change."""
    model = small().double()
    model.eval()
    energies, forces = [], []
    for d in 3.5 + np.array([-1e-3, -1e-5, 1e-5, 1e-3]):
        atoms = Atoms("COH", positions=[[0.0, 0.0, 0.0], [1.2, 0.0, 0.0], [0.0, d, 0.0]])
        batch = atoms_to_batch([atoms], ELEMENTS, 5.2)
        batch["coordinates"].requires_grad_(True)
        energy = model(batch)["node_energy"].sum()
        (grad,) = torch.autograd.grad(energy, batch["coordinates"])
        energies.append(energy.item())
        forces.append(-grad[2, 1].item())
    # smooth: the step across the cut-off is the force times the displacement, to first order
    assert abs(energies[2] - energies[1] + 0.5 * (forces[1] + forces[2]) * 2e-5) < 1e-10
    assert abs(forces[1] - forces[2]) < 1e-5
    assert energies[0] != energies[3]  # the angular terms do depend on d
