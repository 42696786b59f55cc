"""Neighbour lists (function and store cache) against ase.neighborlist.neighbor_list."""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import ase.io
import numpy as np
import pytest
import zarr
from ase import Atoms
from ase.build import bulk
from ase.neighborlist import neighbor_list as ase_neighbor_list

from physicsml.data import neighbours as neighbours_module
from physicsml.data.neighbours import neighbour_list
from physicsml.data.store import AtomsStore
from physicsml.data.store_format import Frame
from physicsml.data.store_writer import write_store
from tests.structures import ASPIRIN, ETHANOL, cu111_slab, cu_bulk, cu_triclinic

CUT_OFF = 5.0


def small_triclinic() -> Atoms:
    """Two atoms in a triclinic cell much smaller than 2 * CUT_OFF, one far outside it."""
    cell = [[2.5, 0.0, 0.0], [0.8, 2.9, 0.0], [0.3, 0.5, 3.1]]
    return Atoms("CuAu", positions=[[0.1, 0.2, 0.3], [1.2, 7.0, -3.1]], cell=cell, pbc=True)


def wire() -> Atoms:
    """A chain periodic along z only, with a period of 2.4 Å."""
    return Atoms("C2", positions=[[0, 0, 0], [0.3, 0.1, 1.2]], cell=[0, 0, 2.4], pbc=[0, 0, 1])


def read(path: Path, index: int) -> Atoms:
    atoms = ase.io.read(path, index)
    assert isinstance(atoms, Atoms)
    return atoms


def cases() -> dict[str, Atoms]:
    rattled = bulk("Cu", "fcc", a=3.6)  # one atom: it only sees its own images
    rattled.positions += 0.05
    cubic, sheared = cu_bulk(2)
    return {
        "ethanol": read(ETHANOL, 0),
        "aspirin": read(ASPIRIN, 7),
        "cu_bulk": cubic,
        "cu_bulk_sheared": sheared,
        "cu_triclinic": cu_triclinic(1)[0],
        "cu111_slab": cu111_slab(1)[0],
        "primitive_cu": rattled,
        "small_triclinic": small_triclinic(),
        "wire": wire(),
    }


CASES = cases()


def edge_set(i: np.ndarray, j: np.ndarray, shifts: np.ndarray) -> set[tuple[int, ...]]:
    return {(int(a), int(b), *map(int, s)) for a, b, s in zip(i, j, shifts, strict=True)}


def reference(atoms: Atoms, self_interaction: bool) -> set[tuple[int, ...]]:
    return edge_set(*ase_neighbor_list("ijS", atoms, CUT_OFF, self_interaction=self_interaction))


@pytest.mark.parametrize("self_interaction", [False, True])
@pytest.mark.parametrize("name", list(CASES))
def test_matches_ase(name: str, self_interaction: bool) -> None:
    atoms = CASES[name]
    i, j, shifts = neighbour_list(
        atoms.positions, atoms.cell.array, atoms.pbc, CUT_OFF, self_interaction
    )
    assert i.dtype == j.dtype == shifts.dtype == np.int64
    expected = reference(atoms, self_interaction)
    assert len(i) == len(expected)
    assert edge_set(i, j, shifts) == expected
    if name in ("primitive_cu", "small_triclinic", "wire"):
        assert any(a == b and s.any() for a, b, s in zip(i, j, shifts, strict=True))
    if not atoms.pbc.all():
        assert not shifts[:, ~atoms.pbc].any()


def test_molecule_translation_invariance() -> None:
    atoms = CASES["aspirin"]
    edges = edge_set(*neighbour_list(atoms.positions, np.zeros((3, 3)), np.zeros(3, bool), CUT_OFF))
    moved = atoms.positions + [1234.5, -67.8, 9.1]
    assert edge_set(*neighbour_list(moved, np.zeros((3, 3)), np.zeros(3, bool), CUT_OFF)) == edges


def frame(atoms: Atoms) -> Frame:
    return Frame(atoms.positions, atoms.numbers, atoms.cell.array, atoms.pbc)


@pytest.fixture
def mixed_store(tmp_path: Path) -> AtomsStore:
    frames = [frame(atoms) for atoms in CASES.values()]
    return write_store(tmp_path / "mixed.zarr", frames, source={}, units={})


@pytest.mark.parametrize("self_interaction", [False, True])
def test_store_cache_matches_ase(mixed_store: AtomsStore, self_interaction: bool) -> None:
    table = mixed_store.neighbours(CUT_OFF, self_interaction=self_interaction, progress=False)
    assert table.edge_index.dtype == np.int32 and table.shifts.dtype == np.int8
    assert table.offsets.shape == (len(CASES) + 1,)
    for k, atoms in enumerate(CASES.values()):
        edge_index, shifts = table.structure(k)
        assert edge_set(edge_index[0], edge_index[1], shifts) == reference(atoms, self_interaction)


def test_store_global_overrides(mixed_store: AtomsStore) -> None:
    cell = np.array([[6.0, 0.0, 0.0], [1.0, 7.0, 0.0], [0.0, 0.0, 8.0]])
    pbc = [True, False, True]
    table = mixed_store.neighbours(CUT_OFF, pbc=pbc, cell=cell, progress=False)
    no_pbc = mixed_store.neighbours(CUT_OFF, pbc=[False] * 3, progress=False)
    for k, atoms in enumerate(CASES.values()):
        edge_index, shifts = table.structure(k)
        expected = reference(Atoms(atoms.numbers, atoms.positions, cell=cell, pbc=pbc), False)
        assert edge_set(edge_index[0], edge_index[1], shifts) == expected
        edge_index, shifts = no_pbc.structure(k)
        expected = reference(Atoms(atoms.numbers, atoms.positions), False)
        assert edge_set(edge_index[0], edge_index[1], shifts) == expected


@pytest.mark.parametrize("self_interaction", [False, True])
def test_molecule_blocks_match_ase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, self_interaction: bool
) -> None:
    """Blocks of molecules take one matscipy call each: the same edges, structure by
    structure, as ASE gives, also across block boundaries."""
    molecules = [read(ETHANOL, k) for k in range(0, 40, 4)]
    molecules += [read(ASPIRIN, k) for k in range(0, 40, 4)]
    molecules += [Atoms("H", positions=[[5.0, 5.0, 5.0]])]  # a lone atom: no edges
    store = write_store(tmp_path / "m.zarr", map(frame, molecules), source={}, units={})
    monkeypatch.setattr(neighbours_module, "FLUSH_ATOMS", 50)  # blocks of 2-6 molecules
    table = store.neighbours(CUT_OFF, self_interaction=self_interaction, progress=False)
    for k, atoms in enumerate(molecules):
        edge_index, shifts = table.structure(k)
        assert edge_set(edge_index[0], edge_index[1], shifts) == reference(atoms, self_interaction)


def test_cache_is_computed_once(mixed_store: AtomsStore, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = neighbours_module.neighbour_list

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(neighbours_module, "neighbour_list", counting)
    first = mixed_store.neighbours(CUT_OFF, progress=False)
    assert len(calls) == len(CASES)
    keys = [p for p in (mixed_store.path / "neighbours").iterdir() if p.is_dir()]
    assert len(keys) == 1
    written = {p: p.stat().st_mtime_ns for p in keys[0].rglob("*")}
    again = AtomsStore(mixed_store.path).neighbours(CUT_OFF, progress=False)
    assert len(calls) == len(CASES)
    assert {p: p.stat().st_mtime_ns for p in keys[0].rglob("*")} == written
    for name in ("offsets", "edge_index", "shifts"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    mixed_store.neighbours(4.0, progress=False)
    assert len(calls) == 2 * len(CASES)
    names = sorted(p.name for p in (mixed_store.path / "neighbours").iterdir() if p.is_dir())
    assert len(names) == 2
    cut_offs = {
        zarr.open_group(mixed_store.path / "neighbours" / n).attrs["cut_off"] for n in names
    }
    assert cut_offs == {4.0, CUT_OFF}


def _worker(path: str, markers: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Wait for the other worker, then ask for the neighbour lists (slowed down)."""
    original = neighbours_module.molecule_neighbour_lists  # molecules: one call per block

    def slow(*args: Any, **kwargs: Any) -> Any:
        (Path(markers) / f"computed-{os.getpid()}").touch()
        time.sleep(0.5)
        return original(*args, **kwargs)

    neighbours_module.molecule_neighbour_lists = slow
    (Path(markers) / f"ready-{os.getpid()}").touch()
    while len(list(Path(markers).glob("ready-*"))) < 2:
        time.sleep(0.01)
    table = AtomsStore(path).neighbours(CUT_OFF, progress=False)
    return table.offsets, table.edge_index, table.shifts


def test_concurrent_processes_share_one_cache(tmp_path: Path) -> None:
    molecules = list(ase.io.iread(ETHANOL, ":300"))
    store = write_store(tmp_path / "s.zarr", map(frame, molecules), source={}, units={})
    markers = tmp_path / "markers"
    markers.mkdir()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        futures = [pool.submit(_worker, str(store.path), str(markers)) for _ in range(2)]
        (a, b) = [future.result(timeout=120) for future in futures]
    assert len(list(markers.glob("ready-*"))) == 2
    assert len(list(markers.glob("computed-*"))) == 1
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    entries = sorted(p.name for p in (store.path / "neighbours").iterdir())
    assert len(entries) == 3 and entries[0] == ".lock" and entries[2] == "zarr.json"
    assert (store.path / "neighbours" / entries[1] / "edge_index").is_dir()
