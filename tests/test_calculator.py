"""The ASE calculator: stress as the strain derivative of the energy, and the Verlet neighbour
list that molecular dynamics reuses between steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.calculator import PropertyNotImplementedError
from ase.io import read
from ase.md.verlet import VelocityVerlet

from physicsml.calculators import PhysicsMLCalculator
from physicsml.calculators.neighbours import SkinNeighbourList
from physicsml.data.neighbours import neighbour_list
from physicsml.inference import load_module, predict_atoms
from tests.structures import ETHANOL, cu_bulk, cu_triclinic
from tests.untrained import EGNN_4_RBF, save_untrained, untrained_spec


def model_file(directory: Path, architecture: str) -> Path:
    """An untrained model for H, C, O and Cu (cut-off 4 Å) saved as training would save it."""
    hyperparameters = EGNN_4_RBF if architecture == "egnn" else None
    spec = untrained_spec(architecture, hyperparameters=hyperparameters)
    return save_untrained(spec, directory / f"{architecture}.pt")


@pytest.fixture(scope="module")
def egnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_file(tmp_path_factory.mktemp("egnn"), "egnn")


def strained_energy(atoms: Atoms, strain: np.ndarray) -> float:
    """Energy of ``atoms`` with cell and positions deformed by ``x -> x (I + strain)``."""
    deformed = atoms.copy()
    deformed.calc = atoms.calc
    deformed.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
    return float(deformed.get_potential_energy())


@pytest.mark.parametrize("architecture", ["egnn", "mace"])
def test_stress_is_the_strain_derivative_of_the_energy(tmp_path: Path, architecture: str) -> None:
    atoms = cu_triclinic(2)[1]  # sheared: every stress component is non-zero
    atoms.calc = PhysicsMLCalculator(model_file(tmp_path, architecture), double=True)
    stress = atoms.get_stress()  # Voigt: xx yy zz yz xz xy
    h = 1e-5
    expected = []
    for a, b in [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]:
        strain = np.zeros((3, 3))
        strain[a, b] = strain[b, a] = h if a == b else h / 2  # symmetric: d/d(eps_ab + eps_ba)/2
        difference = strained_energy(atoms, strain) - strained_energy(atoms, -strain)
        expected.append(difference / (2 * h) / atoms.get_volume())
    assert np.abs(stress).min() > 1e-7  # an untrained model: small, but not zero
    np.testing.assert_allclose(stress, expected, rtol=1e-5, atol=1e-11)
    full = atoms.get_stress(voigt=False)
    np.testing.assert_allclose(full, full.T, atol=1e-12)


def test_stress_of_a_molecule_is_refused(egnn: Path) -> None:
    atoms = read(ETHANOL, index=0)
    atoms.calc = PhysicsMLCalculator(egnn)
    assert np.isfinite(atoms.get_potential_energy())
    with pytest.raises(PropertyNotImplementedError, match="no periodic direction"):
        atoms.get_stress()


def test_the_skin_list_holds_exactly_the_edges_within_the_cut_off() -> None:
    atoms = cu_triclinic(1)[0]
    cut_off = 3.6  # the second shell of neighbours (3.59 Å) straddles it: atoms cross it
    skin_list = SkinNeighbourList(cut_off=cut_off, skin=0.6)
    rng = np.random.default_rng(0)
    counts = set()
    for step in range(4):
        if step:  # less than skin / 2 per atom in all: the list built first is reused
            atoms.positions += rng.uniform(-0.05, 0.05, size=atoms.positions.shape)
        i, j, shifts = skin_list.edges(atoms.positions, atoms.cell.array, atoms.pbc, atoms.numbers)
        fresh = neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, cut_off)
        assert sorted(zip(i, j, *shifts.T, strict=True)) == sorted(
            zip(fresh[0], fresh[1], *fresh[2].T, strict=True)
        )
        counts.add(len(i))
    assert skin_list.builds == 1
    assert len(counts) > 1


def test_the_skin_list_is_built_again_when_it_must_be() -> None:
    atoms = cu_bulk(1)[0]
    skin_list = SkinNeighbourList(cut_off=4.0, skin=0.5)

    def edges() -> None:
        skin_list.edges(atoms.positions, atoms.cell.array, atoms.pbc, atoms.numbers)

    edges()
    atoms.positions[5] += [0.24, 0.0, 0.0]  # less than skin / 2 from where it was built
    edges()
    assert skin_list.builds == 1
    atoms.positions[5] += [0.02, 0.0, 0.0]  # now more than skin / 2
    edges()
    assert skin_list.builds == 2
    for change in (
        lambda: atoms.set_cell(atoms.cell.array * 1.001),
        lambda: atoms.set_pbc([True, True, False]),
        lambda: atoms.numbers.__setitem__(0, 78),
    ):
        change()
        edges()
    assert skin_list.builds == 5
    with pytest.raises(ValueError, match="skin must be a non-negative length"):
        SkinNeighbourList(cut_off=4.0, skin=-0.1)


@pytest.mark.parametrize("structure", ["ethanol", "cu"])
def test_md_with_a_reused_list_equals_md_with_a_new_list_every_step(
    egnn: Path, structure: str
) -> None:
    atoms = read(ETHANOL, index=0) if structure == "ethanol" else cu_bulk(1)[0]
    atoms.calc = PhysicsMLCalculator(egnn, double=True, skin=0.5)
    rebuilt = PhysicsMLCalculator(egnn, double=True, skin=0.0)
    rng = np.random.default_rng(0)  # Maxwell-Boltzmann momenta at 1000 K
    masses = atoms.get_masses()[:, None]
    atoms.set_momenta(rng.normal(size=(len(atoms), 3)) * np.sqrt(masses * units.kB * 1000))
    dynamics = VelocityVerlet(atoms, timestep=2.0 * units.fs)
    steps = 20
    for _ in range(steps):
        dynamics.run(1)
        reference = atoms.copy()
        reference.calc = rebuilt
        assert atoms.get_potential_energy() == pytest.approx(
            reference.get_potential_energy(), rel=1e-12, abs=1e-10
        )
        np.testing.assert_allclose(atoms.get_forces(), reference.get_forces(), atol=1e-10)
    assert rebuilt.neighbours.builds == steps
    assert 1 <= atoms.calc.neighbours.builds < steps


def test_predict_atoms_gives_the_stress_of_the_calculator(egnn: Path) -> None:
    crystals = cu_triclinic(2)
    predicted = predict_atoms(load_module(egnn).double(), crystals, stress=True)
    for atoms, stress in zip(crystals, predicted["stress"], strict=True):
        atoms.calc = PhysicsMLCalculator(egnn, double=True)
        np.testing.assert_allclose(stress, atoms.get_stress(voigt=False), rtol=1e-10, atol=1e-14)
    with pytest.raises(ValueError, match=r"^structure 1: the stress is not defined .* no periodic"):
        predict_atoms(load_module(egnn), [crystals[0], read(ETHANOL, index=0)], stress=True)
