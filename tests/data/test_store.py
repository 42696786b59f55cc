"""The zarr store: round trip, atomic writes, validation of what is opened."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr

from physicsml.data import neighbours as neighbours_module
from physicsml.data import store_format, store_writer
from physicsml.data.integrity import CheckedArray
from physicsml.data.neighbours import NeighbourTable
from physicsml.data.store import AtomsStore
from physicsml.data.store_format import Frame, StoreError
from physicsml.data.store_writer import write_store

SOURCE = {"path": "test", "sha256": "0", "reader": "test", "created": "now"}
UNITS = {"energy": "eV", "length": "Å", "forces": "eV/Å"}


def random_frames(num: int, seed: int = 0) -> list[Frame]:
    """Frames with 1-6 atoms, periodic every third, with energy/forces/stress/tags labels."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(num):
        n = int(rng.integers(1, 7))
        periodic = k % 3 == 0
        frames.append(
            Frame(
                positions=rng.normal(size=(n, 3)),
                numbers=rng.choice([1, 6, 8, 29], size=n),
                cell=np.diag(rng.uniform(4, 6, size=3)) if periodic else np.zeros((3, 3)),
                pbc=np.full(3, periodic),
                atom_props={"forces": rng.normal(size=(n, 3)), "tags": rng.integers(0, 3, n)},
                structure_props={"energy": rng.normal(), "stress": rng.normal(size=(3, 3))},
            )
        )
    return frames


def assert_matches(store: AtomsStore, frames: list[Frame]) -> None:
    data = store.load()
    assert store.num_structures == len(frames) == len(data.offsets) - 1
    assert store.num_atoms == sum(len(f.numbers) for f in frames) == len(data.positions)
    for k, frame in enumerate(frames):
        atoms = slice(data.offsets[k], data.offsets[k + 1])
        np.testing.assert_array_equal(data.positions[atoms], frame.positions)
        np.testing.assert_array_equal(data.numbers[atoms], frame.numbers)
        np.testing.assert_array_equal(data.cell[k], frame.cell)
        np.testing.assert_array_equal(data.pbc[k], frame.pbc)
        for name, value in frame.atom_props.items():
            np.testing.assert_array_equal(data.atom_props[name][atoms], value)
        for name, value in frame.structure_props.items():
            np.testing.assert_array_equal(data.structure_props[name][k], value)


def test_round_trip_and_attrs(tmp_path: Path) -> None:
    frames = random_frames(20)
    store = write_store(tmp_path / "s.zarr", frames, source=SOURCE, units=UNITS)
    assert_matches(store, frames)
    assert store.elements == sorted({int(z) for f in frames for z in f.numbers})
    assert store.properties == {
        "forces": {"level": "atom", "shape": [3], "unit": "eV/Å"},
        "tags": {"level": "atom", "shape": [], "unit": ""},
        "energy": {"level": "structure", "shape": [], "unit": "eV"},
        "stress": {"level": "structure", "shape": [3, 3], "unit": ""},
    }
    assert store.attrs["format"] == "physicsml-store"
    assert store.attrs["schema_version"] == 2
    assert store.attrs["complete"] is True
    assert store.attrs["source"] == SOURCE
    assert store.attrs["units"] == UNITS
    root = zarr.open_group(tmp_path / "s.zarr", mode="r")
    arrays = {name: array for name, array in root.arrays()}
    assert arrays == {}  # everything is under atoms/ and structures/
    atoms = dict(root["atoms"].arrays())  # type: ignore[union-attr]
    structures = dict(root["structures"].arrays())  # type: ignore[union-attr]
    assert set(atoms) == {"positions", "numbers", "forces", "tags"}
    assert set(structures) == {"offsets", "cell", "pbc", "energy", "stress"}
    assert atoms["numbers"].dtype == atoms["tags"].dtype == np.int64
    assert structures["pbc"].dtype == bool and structures["offsets"].shape == (21,)
    assert atoms["positions"].chunks[0] > 10_000  # chunks sized for sequential reads
    assert not list(tmp_path.glob("*.tmp-*"))


def test_appends_in_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_writer, "FLUSH_ATOMS", 7)
    monkeypatch.setattr(store_format, "CHUNK_BYTES", 256)
    frames = random_frames(40, seed=1)
    assert_matches(write_store(tmp_path / "s.zarr", iter(frames), source=SOURCE, units={}), frames)


def interrupted(frames: list[Frame], at: int) -> Iterator[Frame]:
    for k, frame in enumerate(frames):
        if k == at:
            raise RuntimeError("reader died")
        yield frame


def test_interrupted_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_writer, "FLUSH_ATOMS", 7)  # some blocks are on disk already
    path = tmp_path / "s.zarr"
    with pytest.raises(RuntimeError, match="reader died"):
        write_store(path, interrupted(random_frames(30), 20), source=SOURCE, units={})
    assert list(tmp_path.iterdir()) == []


def test_interrupted_overwrite_keeps_old_store(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    old = random_frames(5, seed=2)
    write_store(path, old, source=SOURCE, units={})
    with pytest.raises(RuntimeError):
        write_store(path, interrupted(random_frames(30), 20), source={}, units={}, overwrite=True)
    assert_matches(AtomsStore(path), old)
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]


def test_existing_output(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    write_store(path, random_frames(3), source=SOURCE, units={})
    with pytest.raises(FileExistsError, match="s.zarr already exists"):
        write_store(path, random_frames(4), source=SOURCE, units={})
    assert AtomsStore(path).num_structures == 3
    new = random_frames(4, seed=5)
    assert_matches(write_store(path, new, source=SOURCE, units={}, overwrite=True), new)


def test_bad_frames(tmp_path: Path) -> None:
    frames = random_frames(4)
    frames[2].atom_props["forces"] = frames[2].atom_props["forces"][:-1]
    with pytest.raises(ValueError, match=r"frame 2: 'forces' has shape"):
        write_store(tmp_path / "a.zarr", frames, source=SOURCE, units={})
    assert not (tmp_path / "a.zarr").exists()
    frames = random_frames(4)
    frames[1].structure_props["energy"] = np.nan
    del frames[3].structure_props["stress"]
    bad: list[tuple[int, str]] = []
    store = write_store(
        tmp_path / "b.zarr", frames, source=SOURCE, units={}, on_bad=lambda k, p: bad.append((k, p))
    )
    assert bad == [(1, "'energy' is not finite")]  # a missing label is no problem: NaN
    assert_matches(store, [frames[0], frames[2], frames[3]])
    assert np.isnan(store.load().structure_props["stress"][2]).all()
    assert store.attrs["missing"] == {"stress": 1}
    with pytest.raises(ValueError, match="no frames"):
        write_store(tmp_path / "c.zarr", [], source=SOURCE, units={})


def test_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="missing.zarr does not exist"):
        AtomsStore(tmp_path / "missing.zarr")
    (tmp_path / "file.zarr").write_text("x")
    with pytest.raises(StoreError, match="file.zarr is not a directory"):
        AtomsStore(tmp_path / "file.zarr")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(StoreError, match="empty.zarr is not a zarr v3 store"):
        AtomsStore(tmp_path / "empty.zarr")
    zarr.open_group(tmp_path / "plain.zarr", mode="w")
    with pytest.raises(StoreError, match=r"plain.zarr is not a physicsml store .*physicsml-ingest"):
        AtomsStore(tmp_path / "plain.zarr")
    group = zarr.open_group(tmp_path / "partial.zarr", mode="w")
    group.attrs.update({"format": "physicsml-store", "schema_version": 1})
    with pytest.raises(StoreError, match="partial.zarr is incomplete"):
        AtomsStore(tmp_path / "partial.zarr")


def test_neighbour_table_structure() -> None:
    table = NeighbourTable(
        offsets=np.array([0, 2, 3]),
        edge_index=np.array([[0, 1, 0], [1, 0, 0]], dtype=np.int32),
        shifts=np.array([[0, 0, 0], [0, 0, 0], [1, 0, -1]], dtype=np.int8),
    )
    edge_index, shifts = table.structure(1)
    assert edge_index.dtype == shifts.dtype == np.int64
    np.testing.assert_array_equal(edge_index, [[0], [0]])
    np.testing.assert_array_equal(shifts, [[1, 0, -1]])


def test_open_arrays_reads_on_demand(tmp_path: Path) -> None:
    frames = random_frames(12, seed=2)
    store = write_store(tmp_path / "s.zarr", frames, source=SOURCE, units={})
    lazy, loaded = store.open_arrays(), store.load()
    assert isinstance(lazy.offsets, np.ndarray)
    for name in ("positions", "numbers", "cell", "pbc"):
        assert isinstance(getattr(lazy, name), CheckedArray)
        np.testing.assert_array_equal(getattr(lazy, name)[...], getattr(loaded, name))
    assert all(isinstance(a, CheckedArray) for a in lazy.atom_props.values())
    assert all(isinstance(a, CheckedArray) for a in lazy.structure_props.values())


def test_neighbours_written_in_blocks_widen_shifts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks of molecules (int8 shifts), then a wire of period 0.03 Å (shifts up to 166)."""
    monkeypatch.setattr(neighbours_module, "FLUSH_ATOMS", 4)
    frames = random_frames(9, seed=3)
    wire = Frame(
        np.zeros((1, 3)), np.array([6]), np.diag([0.0, 0.0, 0.03]), np.array([0, 0, 1]) > 0
    )
    wire.atom_props = {name: value[:1] for name, value in frames[0].atom_props.items()}
    wire.structure_props = frames[0].structure_props
    store = write_store(tmp_path / "s.zarr", [*frames, wire], source=SOURCE, units={})
    table = store.neighbours(5.0, progress=False)
    lazy = AtomsStore(store.path).neighbours(5.0, progress=False, lazy=True)
    assert table.shifts.dtype == np.int16 and isinstance(lazy.shifts, CheckedArray)
    assert table.offsets[-1] == len(table.shifts) == lazy.offsets[-1]
    np.testing.assert_array_equal(lazy.shifts[...], table.shifts)
    np.testing.assert_array_equal(lazy.edge_index[...], table.edge_index)
    _, shifts = table.structure(9)
    assert sorted(shifts[:, 2].tolist()) == [s for s in range(-166, 167) if s]
    for k, frame in enumerate(frames):
        i, j, s = neighbours_module.neighbour_list(frame.positions, frame.cell, frame.pbc, 5.0)
        edge_index, shifts = lazy.structure(k)
        np.testing.assert_array_equal(edge_index, np.stack([i, j]))
        np.testing.assert_array_equal(shifts, s)
