"""Ingest of the reference data: values equal ase.io.read's, units, bad frames, the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import ase.io
import h5py
import numpy as np
import pytest
from ase import units

from physicsml.cli.ingest import main
from physicsml.data import extxyz as extxyz_module
from physicsml.data.ingest import IngestError, ingest
from physicsml.data.store import AtomsStore, StoreData
from tests.structures import ASPIRIN, ETHANOL, write_ani_h5, write_extxyz

MOLECULES = {"ethanol": ETHANOL, "aspirin": ASPIRIN}

BAD_XYZ = """2
Properties=species:S:1:pos:R:3:forces:R:3 energy=1.0 dipole="0 0 1" pbc="F F F"
H 0 0 0 0 0 1
H 0 0 0.74 0 0 -1
2
Properties=species:S:1:pos:R:3:forces:R:3 energy=nan dipole="0 0 1" pbc="F F F"
H 0 0 0 0 0 1
H 0 0 0.75 0 0 -1
2
Properties=species:S:1:pos:R:3 energy=2.0 dipole="0 0 1" pbc="F F F"
H 0 0 0
H 0 0 0.76
2
Properties=species:S:1:pos:R:3:forces:R:3 energy=3.0 dipole="0 1" pbc="F F F"
H 0 0 0 0 0 1
H 0 0 0.77 0 0 -1
2
Properties=species:S:1:pos:R:3:forces:R:3 energy=4.0 dipole="0 0 1" pbc="F F F"
H 0 0 0 0 0 1
H 0 0 0.78 0 0 -1
"""


@pytest.fixture(scope="module")
def ani(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small ANI-1x-style HDF5 file (energies and forces in Hartree units)."""
    return write_ani_h5(tmp_path_factory.mktemp("ani") / "ani.h5")


def structure(data: StoreData, k: int) -> slice:
    return slice(data.offsets[k], data.offsets[k + 1])


def assert_equal_to_ase(store: AtomsStore, path: Path) -> None:
    frames = list(ase.io.iread(path, ":"))
    data = store.load()
    assert store.num_structures == len(frames)
    assert store.num_atoms == sum(len(a) for a in frames)
    assert store.elements == sorted({int(z) for a in frames for z in a.numbers})
    for k in (0, 1, len(frames) // 2, len(frames) - 1):
        atoms, sl = frames[k], structure(data, k)
        np.testing.assert_array_equal(data.positions[sl], atoms.positions)
        np.testing.assert_array_equal(data.numbers[sl], atoms.numbers)
        np.testing.assert_array_equal(data.cell[k], atoms.cell.array)
        np.testing.assert_array_equal(data.pbc[k], atoms.pbc)
        assert data.structure_props["energy"][k] == atoms.get_potential_energy()
        np.testing.assert_array_equal(data.atom_props["forces"][sl], atoms.get_forces())
        results = atoms.calc.results
        if "stress" in results:
            np.testing.assert_allclose(data.structure_props["stress"][k], atoms.get_stress(False))
        if "dipole" in results:
            np.testing.assert_array_equal(data.structure_props["dipole"][k], results["dipole"])
        if "charges" in results:
            np.testing.assert_array_equal(data.atom_props["charges"][sl], results["charges"])
        for name, value in atoms.info.items():  # numbers and strings (config_type) alike
            np.testing.assert_array_equal(data.structure_props[name][k], value)


@pytest.mark.parametrize("name", ["ethanol", "aspirin", "cu_bulk"])
def test_extxyz_equals_ase(tmp_path: Path, name: str) -> None:
    path = MOLECULES.get(name) or write_extxyz(tmp_path, name)
    report = ingest(path, tmp_path / "s.zarr")
    store = report.store
    assert report.num_skipped == 0
    assert_equal_to_ase(store, path)
    props = store.properties
    assert props["energy"] == {"level": "structure", "shape": [], "unit": "eV"}
    assert props["forces"] == {"level": "atom", "shape": [3], "unit": "eV/Å"}
    if "bulk" in name:
        assert props["stress"] == {"level": "structure", "shape": [3, 3], "unit": "eV/Å^3"}
        assert props["config_type"] == {
            "level": "structure",
            "shape": [],
            "unit": "",
            "dtype": "string",
        }
    else:
        assert props["dipole"]["unit"] == "e·Å" and props["charges"]["unit"] == "e"
    assert store.attrs["units"]["energy"] == "eV"
    source = store.attrs["source"]
    assert source["path"] == str(path) and len(source["sha256"]) == 64
    assert "structures" in report.summary() and str(store.path) in report.summary()


def test_slab_mixed_pbc_and_tags(tmp_path: Path) -> None:
    path = write_extxyz(tmp_path, "cu111_slab")
    store = ingest(path, tmp_path / "s.zarr").store
    assert_equal_to_ase(store, path)
    data = store.load()
    assert (data.pbc == [True, True, False]).all()
    assert data.atom_props["tags"].dtype == np.int64 and "stress" not in store.properties


def test_ani_hdf5_hartree_to_ev(tmp_path: Path, ani: Path) -> None:
    store = ingest(ani, tmp_path / "s.zarr").store
    assert store.num_structures == 9
    assert store.elements == [1, 6, 7, 8]
    assert store.attrs["units"]["source_energy"] == "Hartree"
    assert store.attrs["source"]["energy_key"] == "wb97x_dz.energy"
    data = store.load()
    with h5py.File(ani) as handle:
        first = handle[next(iter(handle))]
        np.testing.assert_array_equal(data.numbers[structure(data, 1)], first["atomic_numbers"])
        np.testing.assert_allclose(data.positions[structure(data, 1)], first["coordinates"][1])
        energy = first["wb97x_dz.energy"][1] * units.Hartree
        assert data.structure_props["energy"][1] == pytest.approx(energy, rel=1e-14)
        forces = first["wb97x_dz.forces"][1].astype(np.float64) * units.Hartree
        np.testing.assert_allclose(data.atom_props["forces"][structure(data, 1)], forces)
        tz = np.concatenate([g["wb97x_tz.energy"][()] for g in handle.values()])
    assert 27.2 < data.structure_props["energy"][1] / (energy / units.Hartree) < 27.22
    with pytest.raises(IngestError, match=r"frame \d+: 'energy' is not finite"):
        ingest(ani, tmp_path / "tz.zarr", h5_energy_key="wb97x_tz.energy")
    report = ingest(
        ani,
        tmp_path / "tz.zarr",
        h5_energy_key="wb97x_tz.energy",
        h5_forces_key=None,
        energy_unit="eV",
        skip_bad=True,
    )
    assert list(report.store.properties) == ["energy"]
    assert report.num_skipped == np.isnan(tz).sum() > 0
    np.testing.assert_array_equal(report.store.load().structure_props["energy"], tz[~np.isnan(tz)])
    with pytest.raises(IngestError, match="has no dataset 'nope'"):
        ingest(ani, tmp_path / "x.zarr", h5_energy_key="nope")


def test_units_conversion(tmp_path: Path) -> None:
    path = ETHANOL
    store = ingest(
        path, tmp_path / "s.zarr", index=":5", energy_unit="kcal/mol", length_unit="Bohr"
    ).store
    atoms = next(ase.io.iread(path, 3))
    data = store.load()
    energy, length = units.kcal / units.mol, units.Bohr
    sl = structure(data, 3)
    assert store.num_structures == 5
    assert data.structure_props["energy"][3] == pytest.approx(atoms.get_potential_energy() * energy)
    np.testing.assert_allclose(data.atom_props["forces"][sl], atoms.get_forces() * energy / length)
    np.testing.assert_allclose(data.positions[sl], atoms.positions * length)
    np.testing.assert_allclose(
        data.structure_props["dipole"][3], atoms.calc.results["dipole"] * length
    )
    np.testing.assert_array_equal(data.atom_props["charges"][sl], atoms.calc.results["charges"])
    assert store.attrs["units"]["source_energy"] == "kcal/mol"
    assert store.attrs["units"]["source_length"] == "Bohr"


def test_store_input_is_copied(tmp_path: Path) -> None:
    slab = write_extxyz(tmp_path, "cu111_slab")
    first = ingest(slab, tmp_path / "a.zarr", index="::2").store
    copy = ingest(first.path, tmp_path / "b.zarr").store
    a, b = first.load(), copy.load()
    for name in ("offsets", "positions", "numbers", "cell", "pbc"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for name in a.atom_props:
        np.testing.assert_array_equal(a.atom_props[name], b.atom_props[name])
    assert copy.properties == first.properties
    assert copy.attrs["source"]["parent"] == first.attrs["source"]


def test_bad_frames(tmp_path: Path) -> None:
    bad = tmp_path / "bad.extxyz"
    bad.write_text(BAD_XYZ)
    out = tmp_path / "out.zarr"
    with pytest.raises(IngestError, match=r"bad.extxyz: frame 1: 'energy' is not finite"):
        ingest(bad, out)
    assert list(tmp_path.iterdir()) == [bad]
    report = ingest(bad, out, skip_bad=True)
    assert report.num_skipped == 2  # NaN energy, a 2-vector dipole; no forces is no problem
    data = report.store.load()
    assert data.structure_props["energy"].tolist() == [1.0, 2.0, 4.0]
    assert np.isnan(data.atom_props["forces"][2:4]).all()
    assert not np.isnan(data.atom_props["forces"][[0, 1, 4, 5]]).any()
    assert "skipped 2 bad frames; 1 frames lack forces" in report.summary()


@pytest.mark.parametrize(
    ("count", "problem"),
    [(10, "fewer atom lines than its atom count 10"), (8, "more atom lines than its atom count 8")],
)
def test_a_wrong_atom_count_names_its_frame(tmp_path: Path, count: int, problem: str) -> None:
    lines = ETHANOL.read_text().splitlines(keepends=True)[: 11 * 8]  # 9 atoms a frame
    assert lines[11 * 4] == "9\n"
    lines[11 * 4] = f"{count}\n"
    bad = tmp_path / "bad.extxyz"
    bad.write_text("".join(lines))
    with pytest.raises(IngestError, match=rf"bad.extxyz: frame 4 \(line 45\): {problem}$"):
        ingest(bad, tmp_path / "out.zarr")
    assert list(tmp_path.iterdir()) == [bad]


def test_interrupted_ingest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = ETHANOL
    out = tmp_path / "out.zarr"
    old = ingest(path, out, index=":3").store.load()
    convert = extxyz_module.frame_from_parts
    calls = iter(range(10**6))

    def dying(*parts: Any) -> Any:
        if next(calls) == 50:
            raise RuntimeError("disk on fire")
        return convert(*parts)

    monkeypatch.setattr(extxyz_module, "frame_from_parts", dying)
    with pytest.raises(IngestError, match="ethanol.extxyz: cannot read frame 50: .*disk on fire"):
        ingest(path, out, overwrite=True)
    np.testing.assert_array_equal(AtomsStore(out).load().positions, old.positions)
    assert [p.name for p in tmp_path.iterdir()] == ["out.zarr"]
    with pytest.raises(FileExistsError, match="out.zarr already exists"):
        ingest(path, out)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.extxyz"
    bad.write_text(BAD_XYZ)
    out = tmp_path / "out.zarr"
    with pytest.raises(SystemExit) as exit_info:
        main([str(bad), str(out), "--quiet"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "bad.extxyz: frame 1: 'energy' is not finite" in err and "Traceback" not in err
    assert not out.exists()
    main([str(bad), str(out), "--quiet", "--skip-bad"])
    summary = capsys.readouterr().out
    assert "wrote 3 structures (6 atoms; elements H;" in summary
    assert "skipped 2 bad frames; 1 frames lack forces" in summary
    for args in ([str(bad), str(out)], [str(tmp_path / "missing.xyz"), str(tmp_path / "o")]):
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--quiet"])
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.count("\n") == 1


def test_cli_process_exit_code(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "physicsml.cli.ingest", str(tmp_path / "no.xyz"), "o.zarr"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"physicsml-ingest: error: input {tmp_path / 'no.xyz'} does not exist"
    )
