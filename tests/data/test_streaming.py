"""pre_batch=on_disk streams the stores: statistics in blocks, nothing whole-store in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from physicsml.config.schema import PreBatch
from physicsml.data import prebatch as prebatch_module
from physicsml.data import statistics as statistics_module
from physicsml.data.datamodule import AtomsDataModule
from physicsml.data.integrity import CheckedArray
from physicsml.data.statistics import compute_statistics
from physicsml.data.store import AtomsStore, StoreData
from physicsml.data.store_format import Frame
from physicsml.data.store_writer import write_store
from tests.data.test_prebatch import make_datamodule


def mixed_store(path: Path, num: int = 60) -> AtomsStore:
    """Molecules of 2-7 atoms of H, C, O and Cu in varying proportions (a full-rank fit)."""
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(num):
        n = int(rng.integers(2, 8))
        frames.append(
            Frame(
                positions=rng.normal(scale=1.5, size=(n, 3)),
                numbers=rng.choice([1, 6, 8, 29], size=n),
                cell=np.zeros((3, 3)),
                pbc=np.zeros(3, dtype=bool),
                atom_props={"forces": rng.normal(size=(n, 3))},
                structure_props={"energy": rng.normal(-100.0, 10.0)},
            )
        )
    return write_store(path, frames, source={}, units={})


def reference(data: StoreData, indices: np.ndarray, elements: list[int], forces: bool) -> tuple:
    """E0 and scale computed on whole in-memory arrays (lstsq over all structures at once)."""
    counts = data.offsets[indices + 1] - data.offsets[indices]
    composition = np.array(
        [
            [np.sum(data.numbers[data.offsets[k] : data.offsets[k + 1]] == z) for z in elements]
            for k in indices
        ],
        dtype=np.float64,
    )
    energies = data.structure_props["energy"][indices]
    e0 = np.linalg.lstsq(composition, energies, rcond=None)[0]
    if forces:
        atoms = np.concatenate([np.arange(data.offsets[k], data.offsets[k + 1]) for k in indices])
        return e0, np.sqrt(np.mean(data.atom_props["forces"][atoms] ** 2))
    return e0, np.sqrt(np.mean(((energies - composition @ e0) / counts) ** 2))


@pytest.mark.parametrize("forces", [True, False])
@pytest.mark.parametrize("name", ["mixed", "ethanol"])
def test_streamed_statistics_equal_whole_array_ones(
    name: str, forces: bool, ethanol_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = AtomsStore(ethanol_store) if name == "ethanol" else mixed_store(tmp_path / "m.zarr")
    indices = np.sort(np.random.default_rng(1).permutation(store.num_structures)[:45])
    elements = store.elements
    table = store.neighbours(5.0, progress=False)
    forces_key = "forces" if forces else None
    whole = compute_statistics(store.load(), table, indices, elements, "energy", forces_key)
    monkeypatch.setattr(statistics_module, "FLUSH_ATOMS", 40)  # several blocks
    monkeypatch.setattr(statistics_module, "CHUNK_STRUCTURES", 7)  # in several chunks
    lazy = store.open_arrays()
    streamed = compute_statistics(lazy, table, indices, elements, "energy", forces_key)
    loaded = compute_statistics(store.load(), table, indices, elements, "energy", forces_key)
    assert streamed == loaded  # on disk or in memory: the same numbers

    e0, scale = reference(store.load(), indices, elements, forces)
    # ethanol's composition never changes: the minimum-norm solution of a rank-1 system
    np.testing.assert_allclose(streamed.reference_energies, e0, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(whole.reference_energies, e0, rtol=1e-10, atol=1e-9)
    assert streamed.energy_scale == pytest.approx(scale, rel=1e-9)
    assert whole.energy_scale == pytest.approx(scale, rel=1e-9)
    atoms = (lazy.offsets[indices + 1] - lazy.offsets[indices]).sum()
    edges = (table.offsets[indices + 1] - table.offsets[indices]).sum()
    assert streamed.avg_num_neighbours == whole.avg_num_neighbours == edges / atoms


def held_arrays(dm: AtomsDataModule) -> dict[str, object]:
    """Every per-atom and per-edge array that the datamodule's datasets hold."""
    out: dict[str, object] = {}
    for split, dataset in dm.datasets.items():
        data, table = dataset.data, dataset.neighbours
        arrays = {"positions": data.positions, "numbers": data.numbers, **data.atom_props}
        arrays |= {"edge_index": table.edge_index, "shifts": table.shifts}
        out |= {f"{split}/{name}": array for name, array in arrays.items()}
    return out


def test_on_disk_setup_keeps_atoms_and_edges_on_disk(
    ethanol_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = make_datamodule(ethanol_store, tmp_path / "cache", None)
    assert all(isinstance(a, np.ndarray) for a in held_arrays(plain).values())

    def refuse(self: AtomsStore) -> StoreData:
        raise AssertionError("on_disk read a whole store into memory")

    monkeypatch.setattr(AtomsStore, "load", refuse)
    monkeypatch.setattr(prebatch_module, "WRITE_ATOMS", 200)  # 22-structure passes, 13 blocks
    expected = [list(plain.train_dataloader()), list(plain.val_dataloader())]
    for run in ("first", "second"):  # building the caches, then reusing them
        dm = make_datamodule(ethanol_store, tmp_path / "cache", PreBatch.on_disk)
        loaders = (dm.train_dataloader(), dm.val_dataloader())
        for loader, batches in zip(loaders, expected, strict=True):
            loaded = list(loader)
            assert len(loaded) == len(batches) > 1
            for a, b in zip(loaded, batches, strict=True):
                assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), run
        held = held_arrays(dm)
        assert {"train/positions", "train/forces", "validation/edge_index"} <= held.keys()
        assert all(isinstance(a, CheckedArray) for a in held.values()), run
        assert dm.statistics == plain.statistics
