"""Tests of the MACE model: physics, heads, product basis and parameter layout."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from ase.io import read
from e3nn import o3

from physicsml.data.graph import atoms_to_batch
from physicsml.models.mace import MACE
from physicsml.models.mace.symmetric_contraction import (
    NodeBlocks,
    SymmetricContraction,
    symmetric_basis,
)
from tests.models.physics import ModelPhysicsTests, random_rotation
from tests.structures import ASPIRIN

SMALL: dict[str, Any] = {
    "hidden_irreps": "8x0e + 8x1o",
    "max_ell": 2,
    "num_bessel": 4,
    "radial_mlp": [16],
    "mlp_irreps": "4x0e",
}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Small tensors: one intra-op thread is faster (and fair to a shared machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class TestMACEPhysics(ModelPhysicsTests):
    def make_model(self) -> torch.nn.Module:
        return MACE(
            num_elements=len(self.elements), cut_off=self.cut_off, avg_num_neighbours=10.0, **SMALL
        )


@pytest.fixture
def molecules() -> list:
    frames = read(ASPIRIN, "0:2")
    assert isinstance(frames, list)
    return frames


def _run(model: MACE, atoms_list: list, rotation: np.ndarray | None = None) -> dict:
    moved = []
    for atoms in atoms_list:
        a = atoms.copy()
        if rotation is not None:
            a.positions = a.positions @ rotation.T
        moved.append(a)
    batch = atoms_to_batch(moved, (1, 6, 8), 4.0, dtype=torch.float64)
    with torch.no_grad():
        return model(batch)


def test_heads_shapes_and_symmetry(molecules: list) -> None:
    torch.manual_seed(0)
    model = MACE(
        num_elements=3,
        cut_off=4.0,
        avg_num_neighbours=10.0,
        num_node_scalars=2,
        node_vector=True,
        graph_vector=True,
        num_graph_scalars=3,
        **SMALL,
    ).double()
    out = _run(model, molecules)
    n = sum(len(a) for a in molecules)
    assert out["node_energy"].shape == (n,)
    assert out["y_node_scalars"].shape == (n, 2)
    assert out["graph_scalars"].shape == (2, 3)
    assert out["y_node_vector"].shape == (n, 3)
    assert out["y_graph_vector"].shape == (2, 3)
    assert out["y_node_vector"].abs().max() > 1e-6
    assert out["y_graph_vector"].abs().max() > 1e-6

    rot = torch.from_numpy(random_rotation(np.random.default_rng(5)))
    rotated = _run(model, molecules, rot.numpy())
    for key in ("node_energy", "y_node_scalars", "graph_scalars"):
        torch.testing.assert_close(rotated[key], out[key], atol=1e-10, rtol=1e-8)
    for key in ("y_node_vector", "y_graph_vector"):
        torch.testing.assert_close(rotated[key], out[key] @ rot.T, atol=1e-10, rtol=1e-8)


def test_last_layer_keeps_vectors_only_when_needed() -> None:
    plain = MACE(num_elements=3, cut_off=4.0, avg_num_neighbours=10.0, **SMALL)
    vec = MACE(num_elements=3, cut_off=4.0, avg_num_neighbours=10.0, node_vector=True, **SMALL)
    assert count_parameters(vec) > count_parameters(plain)
    assert vec.node_vector_head is not None
    assert len(vec.node_vector_head) == 2  # both layers contribute a vector


def test_unsupported_heads_raise() -> None:
    with pytest.raises(ValueError, match="graph_attrs"):
        MACE(num_elements=3, cut_off=4.0, avg_num_neighbours=10.0, num_graph_attrs=2, **SMALL)
    with pytest.raises(ValueError, match="hidden_irreps"):
        MACE(num_elements=3, cut_off=4.0, avg_num_neighbours=10.0, hidden_irreps="8x0e + 4x1o")


@pytest.mark.parametrize(("correlation", "num_interactions"), [(1, 1), (2, 3)])
def test_other_depths_are_invariant(
    molecules: list, correlation: int, num_interactions: int
) -> None:
    torch.manual_seed(0)
    model = MACE(
        num_elements=3,
        cut_off=4.0,
        avg_num_neighbours=10.0,
        correlation=correlation,
        num_interactions=num_interactions,
        **SMALL,
    ).double()
    rot = random_rotation(np.random.default_rng(6))
    e0 = _run(model, molecules)["node_energy"]
    e1 = _run(model, molecules, rot)["node_energy"]
    torch.testing.assert_close(e1, e0, atol=1e-10, rtol=1e-8)


def test_symmetric_basis_multiplicities() -> None:
    # Multiplicity of 0e / 1o in the nu-th symmetric power of 0e + 1o + 2e + 3o.
    counts = {
        (0, 1): [symmetric_basis(3, nu, (0, 1)).shape[0] for nu in (1, 2, 3)],
        (1, -1): [symmetric_basis(3, nu, (1, -1)).shape[0] for nu in (1, 2, 3)],
    }
    assert counts == {(0, 1): [1, 4, 8], (1, -1): [1, 3, 12]}
    basis = symmetric_basis(3, 3, (1, -1))
    torch.testing.assert_close(basis, basis.transpose(2, 4))  # symmetric in its inputs


@pytest.mark.parametrize("correlation", [1, 2, 3])
def test_symmetric_contraction_matches_direct_sum(correlation: int) -> None:
    torch.manual_seed(0)
    outs = [(0, 1), (1, -1)]
    # 3 elements, one absent and the others in unequal numbers (blocks with empty slots).
    sc = SymmetricContraction(2, outs, correlation, 3, 3).double()
    x = torch.randn(6, 9, 3, dtype=torch.float64)
    species = torch.tensor([1, 0, 1, 1, 0, 1])
    out = sc(x, species)
    expected = torch.zeros_like(out)
    p0 = 0
    for nu in range(1, correlation + 1):
        m0 = 0
        for ell, parity in outs:
            basis = symmetric_basis(2, nu, (ell, parity))
            basis = basis * ((2 * ell + 1) / basis.shape[0]) ** 0.5
            for n in range(x.shape[0]):
                for c in range(x.shape[2]):
                    t = basis
                    for _ in range(nu):
                        t = t @ x[n, :, c]
                    w = (sc.weight * sc.weight_scale[:, None])[species[n], :, c]
                    w = w[p0 : p0 + basis.shape[0]]
                    expected[n, m0 : m0 + 2 * ell + 1, c] += w @ t
            p0, m0 = p0 + basis.shape[0], m0 + 2 * ell + 1
    torch.testing.assert_close(out, expected)

    angles = o3.rand_angles(dtype=torch.float64)
    d_in = o3.Irreps("0e + 1o + 2e").D_from_angles(*angles)
    d_out = o3.Irreps("0e + 1o").D_from_angles(*angles)
    rotated = sc(torch.einsum("ij,njc->nic", d_in, x), species)
    # e3nn's float64 Wigner D and 3j agree with each other only to ~1e-7 (its rotation tables
    # are single precision, and the cubic terms amplify that), so the tolerance is set above
    # that, not at float64's 1e-15.
    expected = torch.einsum("ij,njc->nic", d_out, out)
    torch.testing.assert_close(rotated, expected, atol=1e-5, rtol=1e-5)


def test_contraction_weights_are_stored_scaled_by_their_degree_count() -> None:
    # Degree nu's weights are stored divided by num_weights(nu) (mace-torch's randn / P): the
    # effective weights start unit-variance, the stored ones num_weights(nu) times smaller.
    torch.manual_seed(0)
    sc = SymmetricContraction(3, [(0, 1), (1, -1)], 3, 32, 3)
    assert sc.num_weights == [2, 7, 20]
    stored = torch.split(sc.weight, sc.num_weights, dim=1)
    for n, w in zip(sc.num_weights, stored, strict=True):
        assert 0.8 < float((w.detach() * n).std()) < 1.2


def test_contraction_checkpoint_without_weight_scale_keeps_its_function() -> None:
    # A state dict saved before weight_scale existed holds the effective weights themselves.
    torch.manual_seed(0)
    old = SymmetricContraction(2, [(0, 1), (1, -1)], 3, 4, 2).double()
    x = torch.randn(5, 9, 4, dtype=torch.float64)
    species = torch.tensor([0, 1, 1, 0, 1])
    expected = old(x, species)
    saved = {"weight": (old.weight * old.weight_scale[:, None]).detach().clone()}
    new = SymmetricContraction(2, [(0, 1), (1, -1)], 3, 4, 2).double()
    new.load_state_dict(saved)
    assert torch.equal(new.weight_scale, torch.ones_like(new.weight_scale))
    torch.testing.assert_close(new(x, species), expected)


@pytest.mark.parametrize(
    ("counts", "slots"),
    [([72, 32, 64], 180), ([16, 48, 8], 80), ([5, 0, 3], 9), ([0, 7], 7), ([0, 0], 0)],
)
def test_node_blocks_hold_every_node_once(counts: list[int], slots: int) -> None:
    # counts per element: 8 aspirin, 8 ethanol, an absent element, one element, no nodes
    species = torch.cat([torch.full((c,), e, dtype=torch.long) for e, c in enumerate(counts)])
    species = species[torch.randperm(len(species))]
    blocks = NodeBlocks(species, len(counts))
    assert blocks.source.numel() == slots
    nodes = torch.arange(len(species))
    assert torch.equal(blocks.source[blocks.slot], nodes)  # each node in its own slot
    assert torch.equal(blocks.element[blocks.slot // blocks.width], species)  # of its element
    empty = torch.ones(slots, dtype=torch.bool)
    empty[blocks.slot] = False
    assert torch.all(blocks.source[empty] == len(species))


def test_parameter_layout_matches_mace_torch() -> None:
    # mace-torch 0.3.16, hidden 32x0e+32x1o, max_ell 3, correlation 3, 3 elements: 93,520
    # parameters, of which 3 * 32 * 114 in the product basis (full coupling paths: 28 + 58
    # for layer 1 (0e, 1o), 28 for layer 2 (0e)). Ours has the same blocks, with the product
    # basis reduced to its symmetric part (13 + 16 + 13 functions per element and channel).
    model = MACE(num_elements=3, cut_off=5.0, avg_num_neighbours=10.0, hidden_irreps="32x0e+32x1o")
    product = sum(p.numel() for name, p in model.named_parameters() if "contraction" in name)
    assert product == 3 * 32 * (13 + 16 + 13)
    assert count_parameters(model) - product == 93_520 - 3 * 32 * 114


def test_symmetric_basis_does_not_depend_on_threads() -> None:
    """The basis is rebuilt when a model loads: it must be the same in every process (an
    eigen-solver gave another basis of the degenerate nu=3 space with 2 threads than with 1)."""
    threads = torch.get_num_threads()
    try:
        bases = []
        for n in (1, 2):
            torch.set_num_threads(n)
            bases.append([symmetric_basis(3, 3, out) for out in ((0, 1), (1, -1))])
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*bases, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0.0)
        flat = a.reshape(a.shape[0], -1)
        torch.testing.assert_close(flat @ flat.T, torch.eye(len(flat), dtype=flat.dtype))
