"""Stresses and virials at ingest: 9 or 6 (Voigt) components, virial -> stress, units, any
format ``ase.io`` reads; checked against ASE's own reading of the same structures."""

from __future__ import annotations

import re
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from physicsml.cli.ingest import main
from physicsml.data.ingest import ENERGY_UNITS, LENGTH_UNITS, IngestError, ingest
from physicsml.data.store import AtomsStore
from tests.structures import cu_bulk, cu_triclinic

VOIGT = ([0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1])
"""Indices of Voigt ``xx yy zz yz xz xy`` in a 3x3 matrix."""


@pytest.fixture(scope="module")
def structures() -> list[Atoms]:
    """EMT Cu with stresses: cubic and sheared cells, and rhombohedral (triclinic) ones."""
    return cu_bulk(4) + cu_triclinic(2)


def stresses(frames: list[Atoms]) -> np.ndarray:
    """[S,3,3] eV/Å^3, as ASE gives them."""
    return np.array([atoms.get_stress(voigt=False) for atoms in frames])


def with_virials(frames: list[Atoms], energy: float = 1.0) -> list[Atoms]:
    """Copies holding ``virial = -stress * V`` (in eV / ``energy``) in ``info``, no stress."""
    out = []
    for atoms in frames:
        copy = atoms.copy()
        copy.info["virial"] = -atoms.get_stress(voigt=False) * atoms.get_volume() / energy
        copy.calc = SinglePointCalculator(copy, energy=atoms.get_potential_energy())
        out.append(copy)
    return out


def to_voigt(path: Path, key: str) -> None:
    """Rewrite the 9 numbers of ``key`` in every comment line of ``path`` as 6 Voigt ones."""

    def voigt(match: re.Match[str]) -> str:
        matrix = np.array(match[1].split(), dtype=float).reshape(3, 3)
        return f'{key}="{" ".join(repr(float(v)) for v in matrix[VOIGT])}"'

    text = re.sub(rf'\b{key}="([^"]*)"', voigt, path.read_text())
    assert text.count(f"{key}=") == len(ase.io.read(path, ":"))
    path.write_text(text)


def stored_stress(path: Path, out: Path, **options: str) -> np.ndarray:
    store = ingest(path, out, **options).store  # type: ignore[arg-type]
    assert store.properties["stress"] == {
        "level": "structure",
        "shape": [3, 3],
        "unit": "eV/Å^3",
    }
    assert "virial" not in store.properties
    return np.asarray(store.load().structure_props["stress"])


def test_nine_component_stress_equals_ases_reading(tmp_path: Path, structures: list[Atoms]) -> None:
    path = tmp_path / "cu.extxyz"
    ase.io.write(path, structures)
    reference = stresses(ase.io.read(path, ":"))
    assert np.abs(reference).max() > 1e-3  # strained: a real test
    np.testing.assert_array_equal(stored_stress(path, tmp_path / "a.zarr"), reference)
    slow = stored_stress(path, tmp_path / "b.zarr", format="extxyz", index="0:")  # ase.io's path
    np.testing.assert_array_equal(slow, reference)


def test_voigt_stress_equals_the_nine_component_one(
    tmp_path: Path, structures: list[Atoms]
) -> None:
    path = tmp_path / "cu.extxyz"
    ase.io.write(path, structures)
    reference = stresses(ase.io.read(path, ":"))
    to_voigt(path, "stress")
    with pytest.raises(ValueError, match="stress"):  # ase.io refuses 6 components
        ase.io.read(path, ":")
    np.testing.assert_array_equal(stored_stress(path, tmp_path / "s.zarr"), reference)


@pytest.mark.parametrize("components", [9, 6])
def test_a_virial_becomes_minus_virial_over_volume(
    tmp_path: Path, structures: list[Atoms], components: int
) -> None:
    path = tmp_path / "virial.extxyz"
    ase.io.write(path, with_virials(structures))
    if components == 6:
        to_voigt(path, "virial")
    else:  # ase.io reads a 9-component virial into info, the stress is ours
        read = ase.io.read(path, ":")
        assert "virial" in read[0].info and "stress" not in read[0].calc.results
        slow = stored_stress(path, tmp_path / "slow.zarr", format="extxyz", index="0:")
        np.testing.assert_allclose(slow, stresses(structures), rtol=1e-12, atol=1e-15)
    stress = stored_stress(path, tmp_path / "s.zarr")
    np.testing.assert_allclose(stress, stresses(structures), rtol=1e-12, atol=1e-15)


def test_a_virial_without_a_periodic_cell_is_refused(
    tmp_path: Path, structures: list[Atoms]
) -> None:
    frames = with_virials(structures[:3])
    frames[1].pbc = False
    frames[1].cell = np.zeros((3, 3))
    path = tmp_path / "bad.extxyz"
    ase.io.write(path, frames)
    out = tmp_path / "s.zarr"
    problem = r"bad.extxyz: cannot read frame 1: .*a virial needs a periodic cell with a volume"
    with pytest.raises(IngestError, match=problem):
        ingest(path, out)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["bad.extxyz"]


@pytest.mark.parametrize("label", ["stress", "virial"])
def test_units_convert_as_energy_over_volume(
    tmp_path: Path, structures: list[Atoms], label: str
) -> None:
    energy, length = ENERGY_UNITS["kcal/mol"], LENGTH_UNITS["Bohr"]
    converted = []
    for atoms in structures:  # the same structures in kcal/mol and Bohr
        copy = Atoms(atoms.numbers, atoms.positions / length, cell=atoms.cell / length, pbc=True)
        copy.calc = SinglePointCalculator(
            copy,
            energy=atoms.get_potential_energy() / energy,
            forces=atoms.get_forces() / (energy / length),
            stress=atoms.get_stress() / (energy / length**3),
        )
        converted.append(copy)
    if label == "virial":
        converted = with_virials(converted)  # -stress * V, all in the source's units
    path = tmp_path / "units.extxyz"
    ase.io.write(path, converted)
    out = tmp_path / "s.zarr"
    stress = stored_stress(path, out, energy_unit="kcal/mol", length_unit="Bohr")
    np.testing.assert_allclose(stress, stresses(structures), rtol=1e-10, atol=1e-15)
    store = ingest(path, tmp_path / "again.zarr", energy_unit="kcal/mol", length_unit="Bohr")
    assert store.store.attrs["units"]["stress"] == "eV/Å^3"
    assert store.store.attrs["units"]["source_energy"] == "kcal/mol"
    assert abs(energy - units.kcal / units.mol) < 1e-15


def test_stresses_of_any_format_ase_reads(tmp_path: Path, structures: list[Atoms]) -> None:
    path = tmp_path / "cu.traj"
    ase.io.write(path, structures)
    store = ingest(path, tmp_path / "s.zarr").store
    assert store.attrs["source"]["reader"] == "ase.io:auto"
    stress = store.load().structure_props["stress"]
    np.testing.assert_array_equal(stress, stresses(ase.io.read(path, ":")))


def test_cli_energy_unit(
    tmp_path: Path, structures: list[Atoms], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cu.extxyz"
    ase.io.write(path, structures)
    main([str(path), str(tmp_path / "s.zarr"), "--quiet", "--energy-unit", "meV"])
    assert "stress [eV/Å^3] (structure)" in capsys.readouterr().out
    stress = AtomsStore(tmp_path / "s.zarr").load().structure_props["stress"]
    np.testing.assert_allclose(stress, 1e-3 * stresses(structures), rtol=1e-15)
