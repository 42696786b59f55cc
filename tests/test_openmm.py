"""OpenMM driven by an exported model: same energy and forces as the ASE calculator, MD."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io import read

pytest.importorskip("openmm", reason="OpenMM is not installed (pip install 'physicsml[md]')")
pytest.importorskip("openmmml", reason="openmm-ml is not installed (pip install 'physicsml[md]')")

import openmm  # noqa: E402
from openmm import app, unit  # noqa: E402
from openmmml import MLPotential  # noqa: E402

from physicsml.calculators import PhysicsMLCalculator  # noqa: E402
from physicsml.export import export_model  # noqa: E402
from physicsml.openmm import (  # noqa: E402
    KJ_PER_MOL_PER_EV,
    PhysicsMLPotentialImplFactory,
    physicsml_force,
    topology_from_atoms,
)
from physicsml.saved_model import GraphSettings, ModelSpec  # noqa: E402
from tests.structures import ASPIRIN, cu_bulk  # noqa: E402
from tests.untrained import save_untrained  # noqa: E402

UNTRAINED_SPEC = ModelSpec(
    architecture="egnn",
    hyperparameters={"c_hidden": 8, "num_layers": 2, "num_rbf": 4},
    training={
        "compute_forces": True,
        "compute_stress": True,
        "y_graph_scalars_loss": {"name": "MSELoss", "weight": 1.0},
    },
    elements=[1, 6, 8, 29],
    num_elements=4,
    statistics={
        "elements": [1, 6, 8, 29],
        "reference_energies": [-1.0, -2.0, -3.0, -4.0],
        "energy_scale": 200.0,
        "avg_num_neighbours": 10.0,
        "num_structures": 1,
    },
    targets={"y_graph_scalars": ["energy"]},
    graph=GraphSettings(cut_off=4.0),
)
"""A small EGNN; untrained (random weights), a smooth potential all the same."""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An untrained EGNN for H, C, O and Cu: its saved model and its TorchScript export."""
    directory = tmp_path_factory.mktemp("openmm")
    save_untrained(UNTRAINED_SPEC, directory / "model.pt")
    export_model(directory / "model.pt", directory / "exported.pt")
    return directory / "model.pt", directory / "exported.pt"


@pytest.fixture(scope="module", autouse=True)
def physicsml_potential() -> None:
    """``MLPotential("physicsml")``, registered by hand where the entry point is not installed."""
    if "physicsml" not in MLPotential._implFactories:
        MLPotential.registerImplFactory("physicsml", PhysicsMLPotentialImplFactory())


def simulation(atoms: Atoms, exported: Path) -> app.Simulation:
    """A Langevin (300 K, 0.5 fs) simulation of ``atoms`` under ``MLPotential("physicsml")``."""
    topology = topology_from_atoms(atoms)
    system = MLPotential("physicsml", model_file=exported).createSystem(topology)
    integrator = openmm.LangevinMiddleIntegrator(
        300 * unit.kelvin, 1 / unit.picosecond, 0.0005 * unit.picoseconds
    )
    integrator.setRandomNumberSeed(1)
    sim = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("CPU"))
    sim.context.setPositions(atoms.positions * unit.angstrom)
    return sim


def energy_and_forces(sim: app.Simulation) -> tuple[float, np.ndarray]:
    """OpenMM's potential energy (eV) and forces (eV/Å)."""
    state = sim.context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.angstrom)
    return energy / KJ_PER_MOL_PER_EV, np.asarray(forces) / KJ_PER_MOL_PER_EV


@pytest.mark.parametrize("structure", ["aspirin", "cu_bulk"])
def test_openmm_matches_the_ase_calculator(models: tuple[Path, Path], structure: str) -> None:
    saved, exported = models
    atoms = read(ASPIRIN, 0) if structure == "aspirin" else cu_bulk(1)[0]
    energy, forces = energy_and_forces(simulation(atoms, exported))

    atoms.calc = PhysicsMLCalculator(saved)
    expected_forces = atoms.get_forces()
    assert energy == pytest.approx(atoms.get_potential_energy(), rel=1e-6, abs=1e-4)
    np.testing.assert_allclose(forces, expected_forces, atol=1e-4 * np.abs(expected_forces).max())
    assert np.abs(forces).max() > 1e-2  # non-trivial forces were compared


def test_openmm_md_runs_with_finite_energies(models: tuple[Path, Path]) -> None:
    sim = simulation(read(ASPIRIN, 0), models[1])
    sim.context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    energies = []
    for _ in range(10):
        sim.step(10)
        state = sim.context.getState(getEnergy=True, getPositions=True)
        energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    assert sim.currentStep == 100
    assert np.isfinite(energies).all()
    assert np.isfinite(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)).all()
    assert np.ptp(energies) > 0  # the atoms moved on the model's surface


def test_force_on_a_subset_of_particles(models: tuple[Path, Path]) -> None:
    """The model acts on the selected particles only; the others feel nothing."""
    saved, exported = models
    atoms = read(ASPIRIN, 0)
    water = Atoms("OH2", positions=[[20.0, 0, 0], [20.96, 0, 0], [19.76, 0.93, 0]])
    topology = topology_from_atoms(atoms + water)
    system = openmm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    system.addForce(physicsml_force(exported, atoms.numbers, False, range(len(atoms))))
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    context.setPositions((atoms + water).positions * unit.angstrom)
    forces = context.getState(getForces=True).getForces(asNumpy=True)
    forces = forces.value_in_unit(unit.kilojoule_per_mole / unit.angstrom) / KJ_PER_MOL_PER_EV

    atoms.calc = PhysicsMLCalculator(saved)
    expected = atoms.get_forces()
    np.testing.assert_allclose(forces[: len(atoms)], expected, atol=1e-4 * np.abs(expected).max())
    assert not forces[len(atoms) :].any()


def test_system_survives_xml_serialisation(models: tuple[Path, Path], tmp_path: Path) -> None:
    """The force carries the model itself: the deserialised system needs no model file."""
    exported = tmp_path / "exported.pt"
    exported.write_bytes(models[1].read_bytes())
    atoms = read(ASPIRIN, 0)
    system = MLPotential("physicsml", model_file=exported).createSystem(topology_from_atoms(atoms))
    xml = openmm.XmlSerializer.serialize(system)
    exported.unlink()
    energies = []
    for each in (system, openmm.XmlSerializer.deserialize(xml)):
        context = openmm.Context(
            each, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
        )
        context.setPositions(atoms.positions * unit.angstrom)
        energies.append(context.getState(getEnergy=True).getPotentialEnergy())
    assert energies[1] == energies[0]


def test_bad_input_is_named(models: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model_file"):
        physicsml_force(tmp_path / "missing.pt", [1, 8], periodic=False)
    with pytest.raises(ValueError, match="particles"):
        physicsml_force(models[1], [1, 8], periodic=False, particles=[0])
    with pytest.raises(ValueError, match="model_file"):
        MLPotential("physicsml")
    with pytest.raises(ValueError, match=r"atomic_numbers: \[78\]"):
        physicsml_force(models[1], [1, 78], periodic=False)
    not_an_export = tmp_path / "weights.pt"
    not_an_export.write_bytes(models[0].read_bytes())  # the saved model, not its export
    with pytest.raises(ValueError, match="model_file"):
        physicsml_force(not_an_export, [1, 8], periodic=False)
    sheared = cu_bulk(2)[1]  # an upper-triangular (sheared) cell
    with pytest.raises(ValueError, match="lower-triangular"):
        topology_from_atoms(sheared)
