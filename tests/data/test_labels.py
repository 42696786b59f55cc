"""Labels that some frames lack (stored as NaN, counted) and string labels (``config_type``)
kept exactly, through ingest, the store API, copies, ``--verify`` and the statistics."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from physicsml.cli.ingest import main
from physicsml.data.ingest import ingest
from physicsml.data.statistics import compute_statistics
from physicsml.data.store_format import STRING
from tests.structures import cu_bulk, cupt_alloy

CONFIG_TYPES = ["bulk", "two words", "ünïcode-β", "bulk", "bulk", "Alloy_1"]
"""Exact values to keep: spaces, non-ASCII, case, repeats. (Not an empty string: ase.io writes
``config_type=`` followed by the next key, which no reader can read back as written.)"""


def partly_labelled(tmp_path: Path) -> tuple[Path, list[Atoms]]:
    """Six EMT frames: frame 0 without stress (a column that starts late), frame 2 without
    energy and forces, frame 3 without config_type, frame 4 without tags (an int column)."""
    frames = cu_bulk(3) + cupt_alloy(3)
    for k, atoms in enumerate(frames):
        results = dict(atoms.calc.results)
        if k == 0:
            del results["stress"]
        if k == 2:
            del results["energy"], results["forces"]
        atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info["config_type"] = CONFIG_TYPES[k]
        if k != 4:
            atoms.set_tags(np.arange(len(atoms)) % 3 + k)
    del frames[3].info["config_type"]
    path = tmp_path / "partly.extxyz"
    ase.io.write(path, frames)
    return path, ase.io.read(path, ":")


@pytest.mark.parametrize("reader", ["physicsml.extxyz", "ase.io:extxyz"])
def test_missing_labels_are_nan_and_counted(tmp_path: Path, reader: str) -> None:
    path, frames = partly_labelled(tmp_path)
    options = {} if reader == "physicsml.extxyz" else {"format": "extxyz", "index": "0:"}
    report = ingest(path, tmp_path / "s.zarr", **options)  # type: ignore[arg-type]
    store = report.store
    assert store.attrs["source"]["reader"] == reader
    assert store.attrs["missing"] == {
        "config_type": 1,
        "energy": 1,
        "forces": 1,
        "stress": 1,
        "tags": 1,
    }
    summary = report.summary()
    assert "config_type (structure, string)" in summary
    assert "skipped 0 bad frames; 1 frames lack config_type; 1 frames lack energy" in summary
    data = store.load()
    offsets = data.offsets
    energy, stress = data.structure_props["energy"], data.structure_props["stress"]
    forces, tags = data.atom_props["forces"], data.atom_props["tags"]
    for k, atoms in enumerate(frames):
        atoms_k = slice(offsets[k], offsets[k + 1])
        results = atoms.calc.results
        if k == 2:
            assert np.isnan(energy[k]) and np.isnan(forces[atoms_k]).all()
        else:
            assert energy[k] == results["energy"]
            np.testing.assert_array_equal(forces[atoms_k], results["forces"])
        if k == 0:
            assert np.isnan(stress[k]).all()
        else:
            np.testing.assert_array_equal(stress[k], atoms.get_stress(voigt=False))
        if k == 4:
            assert np.isnan(tags[atoms_k]).all()
        else:
            np.testing.assert_array_equal(tags[atoms_k], atoms.get_tags())
    assert tags.dtype == np.float64  # an int column with a missing frame holds NaN
    assert data.structure_props["config_type"].tolist() == [
        "bulk",
        "two words",
        "ünïcode-β",
        "",
        "bulk",
        "Alloy_1",
    ]


def test_string_labels_through_the_store_api_and_copies(tmp_path: Path) -> None:
    path, frames = partly_labelled(tmp_path)
    store = ingest(path, tmp_path / "s.zarr").store
    assert store.properties["config_type"] == {
        "level": "structure",
        "shape": [],
        "unit": "",
        "dtype": "string",
    }
    lazy = store.open_arrays().structure_props["config_type"]
    assert lazy.dtype == STRING and lazy.shape == (6,)
    assert lazy[2] == "ünïcode-β" and list(lazy[[1, 5]]) == ["two words", "Alloy_1"]
    copy = ingest(store.path, tmp_path / "copy.zarr").store
    assert copy.attrs["missing"] == store.attrs["missing"]
    assert copy.content_hash() == store.content_hash()  # NaN and strings copied as they are


def test_verify_covers_string_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = partly_labelled(tmp_path)
    store = ingest(path, tmp_path / "s.zarr").store
    main(["--verify", str(store.path), "--quiet"])
    assert "verified" in capsys.readouterr().out
    chunk = store.path / "structures" / "config_type" / "c" / "0"
    data = bytearray(chunk.read_bytes())
    data[-3] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(SystemExit) as stop:
        main(["--verify", str(store.path), "--quiet"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "array structures/config_type chunk c/0: content hash differs" in err


def test_statistics_leave_missing_labels_out(tmp_path: Path) -> None:
    path, _ = partly_labelled(tmp_path)
    store = ingest(path, tmp_path / "s.zarr").store
    table = store.neighbours(4.0, progress=False)
    data, elements = store.load(), store.elements
    labelled = np.array([0, 1, 3, 4, 5])  # frame 2 has neither energy nor forces
    every = compute_statistics(data, table, np.arange(6), elements, "energy", "forces")
    known = compute_statistics(data, table, labelled, elements, "energy", "forces")
    np.testing.assert_allclose(every.reference_energies, known.reference_energies, rtol=1e-12)
    assert every.energy_scale == pytest.approx(known.energy_scale, rel=1e-12)
    assert np.isfinite(every.reference_energies).all() and np.isfinite(every.energy_scale)
