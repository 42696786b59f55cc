"""Reusable physics checks for every architecture (subclass ``ModelPhysicsTests``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import read

from physicsml.data.graph import atoms_to_batch
from physicsml.models.strain import apply_strain, cell_volumes, stress_from_gradient
from physicsml.models.utils import scatter_sum
from tests.structures import ASPIRIN, ETHANOL, cu_triclinic, cu_vacancy


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniform random proper rotation matrix."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


class ModelPhysicsTests:
    """Physics checks; subclasses implement ``make_model`` and may override the attributes."""

    elements: tuple[int, ...] = (1, 6, 8, 29)
    cut_off: float = 4.0
    atol: float = 1e-9  # float64 tolerance on energies/forces

    def make_model(self) -> torch.nn.Module:
        """Return a freshly initialised model (float64 is set by the tests)."""
        raise NotImplementedError

    # -- helpers -------------------------------------------------------------
    def model(self) -> torch.nn.Module:
        torch.manual_seed(0)
        model = self.make_model().double()
        model.eval()
        return model

    def energy_forces(
        self, model: torch.nn.Module, atoms_list: list[Atoms]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch = atoms_to_batch(atoms_list, self.elements, self.cut_off, dtype=torch.float64)
        batch["coordinates"].requires_grad_(True)
        out = model(batch)
        energy = scatter_sum(out["node_energy"], batch["batch"], len(atoms_list))
        (grad,) = torch.autograd.grad(energy.sum(), batch["coordinates"])
        return energy.detach(), -grad

    def energy_stress(
        self, model: torch.nn.Module, atoms_list: list[Atoms]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Energies and stresses ((1/V) dE/d(strain), eV/Å³) as ``PotentialModule`` does."""
        batch = atoms_to_batch(atoms_list, self.elements, self.cut_off, dtype=torch.float64)
        edge_graph = batch["batch"][batch["edge_index"][0]]
        strain, positions, shifts = apply_strain(
            batch["coordinates"], batch["cell_shift"], batch["batch"], edge_graph, len(atoms_list)
        )
        out = model({**batch, "coordinates": positions, "cell_shift": shifts})
        energy = scatter_sum(out["node_energy"], batch["batch"], len(atoms_list))
        (grad,) = torch.autograd.grad(energy.sum(), strain)
        volume = cell_volumes(batch["cell"], batch["pbc"])
        return energy.detach(), stress_from_gradient(grad, volume)

    @pytest.fixture
    def triclinic(self) -> Atoms:
        """A sheared, rattled 64-atom Cu cell with a vacancy (no symmetry left)."""
        atoms = cu_triclinic(2)[1]
        del atoms[5]
        return atoms

    @pytest.fixture
    def molecules(self) -> list[Atoms]:
        frames = read(ETHANOL, "0:40:20")
        frames += read(ASPIRIN, "0:1")
        return frames

    @pytest.fixture
    def bulk(self) -> Atoms:
        return cu_vacancy(1)[0]

    # -- tests ---------------------------------------------------------------
    def test_rebuilt_model_matches(self, molecules: list[Atoms]) -> None:
        """A model rebuilt from its state dict under another seed and thread count gives the
        same energies: whatever the weights depend on but the state dict does not hold (bases,
        tables) is rebuilt identically, as when a trained model is loaded elsewhere."""
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            first = self.model()
            torch.set_num_threads(2)
            torch.manual_seed(1)
            second = self.make_model().double()
            second.load_state_dict(first.state_dict())
            second.eval()
        finally:
            torch.set_num_threads(threads)
        e1, f1 = self.energy_forces(first, molecules)
        e2, f2 = self.energy_forces(second, molecules)
        torch.testing.assert_close(e2, e1, atol=self.atol, rtol=0.0)
        torch.testing.assert_close(f2, f1, atol=self.atol, rtol=0.0)

    def test_rotation_translation(self, molecules: list[Atoms]) -> None:
        model = self.model()
        rng = np.random.default_rng(1)
        e0, f0 = self.energy_forces(model, molecules)
        rot = random_rotation(rng)
        moved = []
        for atoms in molecules:
            a = atoms.copy()
            a.positions = a.positions @ rot.T + rng.normal(size=3) * 5.0
            moved.append(a)
        e1, f1 = self.energy_forces(model, moved)
        torch.testing.assert_close(e1, e0, atol=self.atol * 100, rtol=1e-7)
        torch.testing.assert_close(f1, f0 @ torch.from_numpy(rot.T), atol=1e-7, rtol=1e-6)
        assert f0.abs().max() > 0, "forces are identically zero: the test cannot detect anything"

    def test_permutation(self, molecules: list[Atoms]) -> None:
        model = self.model()
        atoms = molecules[-1]
        perm = np.random.default_rng(2).permutation(len(atoms))
        e0, f0 = self.energy_forces(model, [atoms])
        e1, f1 = self.energy_forces(model, [atoms[perm]])
        torch.testing.assert_close(e1, e0, atol=1e-8, rtol=1e-8)
        torch.testing.assert_close(f1, f0[perm], atol=1e-8, rtol=1e-6)

    def test_forces_are_energy_gradient(self, molecules: list[Atoms]) -> None:
        model = self.model()
        atoms = molecules[0].copy()
        _, forces = self.energy_forces(model, [atoms])
        h = 1e-5
        for atom, axis in [(0, 0), (3, 1), (len(atoms) - 1, 2)]:
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[atom, axis] += h
            minus.positions[atom, axis] -= h
            e_plus, _ = self.energy_forces(model, [plus])
            e_minus, _ = self.energy_forces(model, [minus])
            numeric = -(e_plus - e_minus).item() / (2 * h)
            assert numeric == pytest.approx(forces[atom, axis].item(), abs=1e-6, rel=1e-5)

    def test_batch_invariance(self, molecules: list[Atoms]) -> None:
        model = self.model()
        e_batch, f_batch = self.energy_forces(model, molecules)
        offset = 0
        for k, atoms in enumerate(molecules):
            e_alone, f_alone = self.energy_forces(model, [atoms])
            torch.testing.assert_close(e_alone[0], e_batch[k], atol=1e-9, rtol=1e-10)
            torch.testing.assert_close(
                f_alone, f_batch[offset : offset + len(atoms)], atol=1e-9, rtol=1e-8
            )
            offset += len(atoms)

    def test_periodic_wrapping(self, bulk: Atoms) -> None:
        model = self.model()
        unwrapped = bulk.copy()
        rng = np.random.default_rng(3)
        unwrapped.positions += rng.integers(-2, 3, size=(len(bulk), 1)) * bulk.cell.array[0]
        unwrapped.positions += rng.integers(-2, 3, size=(len(bulk), 1)) * bulk.cell.array[2]
        wrapped = unwrapped.copy()
        wrapped.wrap()
        e0, f0 = self.energy_forces(model, [unwrapped])
        e1, f1 = self.energy_forces(model, [wrapped])
        torch.testing.assert_close(e1, e0, atol=1e-8, rtol=1e-9)
        torch.testing.assert_close(f1, f0, atol=1e-8, rtol=1e-7)

    def test_smooth_at_cut_off(self) -> None:
        model = self.model()
        distances = self.cut_off + np.array([-1e-3, -1e-5, 1e-5, 1e-3])
        energies, forces = [], []
        for d in distances:
            atoms = Atoms("CO", positions=[[0.0, 0.0, 0.0], [d, 0.0, 0.0]])
            e, f = self.energy_forces(model, [atoms])
            energies.append(e.item())
            forces.append(f[0, 0].item())
        # Beyond the cut-off the pair does not interact; just inside it nearly does not either.
        assert abs(energies[1] - energies[2]) < 1e-6
        assert abs(forces[1]) < 1e-4 and forces[2] == 0.0
        assert abs(energies[0] - energies[3]) < 1e-3

    # -- stress ----------------------------------------------------------------
    def test_stress_is_strain_derivative(self, triclinic: Atoms) -> None:
        """Autograd stress equals a central difference of E(strain) / V (float64)."""
        model = self.model()
        _, stress = self.energy_stress(model, [triclinic])
        assert stress.abs().max() > 1e-6, "zero stress: the test cannot detect anything"
        volume, h = triclinic.get_volume(), 1e-5
        for a, b in [(0, 0), (1, 2), (2, 0), (2, 2)]:
            energies = []
            for sign in (1.0, -1.0):
                eps = np.zeros((3, 3))
                eps[a, b] += sign * h / 2
                eps[b, a] += sign * h / 2
                deformed = triclinic.copy()
                deformed.set_cell(triclinic.cell.array @ (np.eye(3) + eps), scale_atoms=True)
                energies.append(self.energy_forces(model, [deformed])[0].item())
            numeric = (energies[0] - energies[1]) / (2 * h) / volume
            assert numeric == pytest.approx(stress[0, a, b].item(), abs=1e-7, rel=1e-4)
        torch.testing.assert_close(stress[0], stress[0].T, atol=1e-12, rtol=0.0)

    def test_stress_rotates_as_a_tensor(self, triclinic: Atoms) -> None:
        model = self.model()
        _, stress = self.energy_stress(model, [triclinic])
        rot = random_rotation(np.random.default_rng(4))
        rotated = triclinic.copy()
        rotated.set_cell(triclinic.cell.array @ rot.T, scale_atoms=True)
        _, stress_rotated = self.energy_stress(model, [rotated])
        expected = torch.from_numpy(rot) @ stress[0] @ torch.from_numpy(rot.T)
        torch.testing.assert_close(stress_rotated[0], expected, atol=1e-9, rtol=1e-6)

    def test_supercell_has_the_primitive_stress(self, triclinic: Atoms) -> None:
        """Stress is intensive: a 2x1x1 supercell has the same stress, twice the energy; a
        molecule batched with it gets no stress."""
        model = self.model()
        molecule = read(ETHANOL, "0")
        energy, stress = self.energy_stress(model, [triclinic, molecule])
        energy_super, stress_super = self.energy_stress(model, [triclinic.repeat((2, 1, 1))])
        torch.testing.assert_close(stress_super[0], stress[0], atol=1e-9, rtol=1e-7)
        assert energy_super[0].item() == pytest.approx(2 * energy[0].item(), rel=1e-10)
        assert stress[1].abs().max() == 0.0
