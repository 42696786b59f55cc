"""Data-derived hyperparameters, computed once from the training split."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

from physicsml.data.neighbours import NeighbourTable
from physicsml.data.offsets import offsets_of, ranges, structure_blocks
from physicsml.data.store import StoreData
from physicsml.data.store_format import FLUSH_ATOMS

CHUNK_STRUCTURES = 65536
"""Structures whose offsets are read at a time: memory does not grow with the split."""


@dataclass
class DataStatistics:
    """What the model needs from the training data.

    ``reference_energies`` are per-element energies (eV) from a least-squares fit of the
    structure energies to element counts; ``energy_scale`` is the RMS force component
    (eV/Å, or the RMS per-atom energy residual when there are no forces), a natural unit
    for the network's output; ``avg_num_neighbours`` is the mean number of edges per atom.
    """

    elements: list[int]
    reference_energies: list[float]
    energy_scale: float
    avg_num_neighbours: float
    num_structures: int

    def as_dict(self) -> dict:
        """Plain-container form (saved as ``statistics.json`` and in checkpoints)."""
        return asdict(self)


def compute_statistics(
    data: StoreData,
    neighbours: NeighbourTable,
    indices: np.ndarray,
    elements: list[int],
    energy_key: str | None,
    forces_key: str | None,
) -> DataStatistics:
    """Statistics over structures ``indices`` (the training split), streamed in blocks.

    Reads about ``FLUSH_ATOMS`` atoms at a time, so ``data`` may be zarr arrays read on
    demand (``AtomsStore.open_arrays``); in memory or on disk, the result is the same. The
    least-squares fit of the reference energies accumulates the R factor of a QR
    decomposition of ``[composition | energy]`` block by block; its minimum-norm solution
    is the one ``numpy.linalg.lstsq`` gives for the whole system. Missing labels (NaN: frames
    that lack the energy or forces) are left out of the fit and the scale.
    """
    indices = np.asarray(indices, dtype=np.int64)
    width = len(elements)
    r = np.zeros((0, width + 1))
    squares, values = 0.0, 0
    for block in _blocks(data, indices, elements, energy_key, forces_key):
        if block.energies is not None:
            known = ~np.isnan(block.energies)
            augmented = np.column_stack([block.composition[known], block.energies[known]])
            r = np.asarray(np.linalg.qr(np.vstack([r, augmented]), mode="r"))
        if block.forces is not None:
            forces = block.forces[~np.isnan(block.forces)]
            squares += float(np.sum(forces**2))
            values += forces.size
    reference: np.ndarray = np.zeros(width)
    if energy_key is not None:
        rcond = np.finfo(np.float64).eps * max(len(indices), width)
        reference = np.linalg.lstsq(r[:, :width], r[:, width], rcond=rcond)[0]
        if forces_key is None:  # scale: RMS per-atom residual, in a second pass
            for block in _blocks(data, indices, elements, energy_key, None):
                assert block.energies is not None
                residual = (block.energies - block.composition @ reference) / block.counts
                residual = residual[~np.isnan(residual)]
                squares += float(np.sum(residual**2))
                values += len(residual)
    scale = float(np.sqrt(squares / values)) if values else 1.0
    num_atoms = num_edges = 0
    for start in range(0, len(indices), CHUNK_STRUCTURES):
        keys = indices[start : start + CHUNK_STRUCTURES]
        num_atoms += int(np.sum(data.offsets[keys + 1] - data.offsets[keys]))
        num_edges += int(np.sum(neighbours.offsets[keys + 1] - neighbours.offsets[keys]))
    return DataStatistics(
        elements=list(map(int, elements)),
        reference_energies=[float(x) for x in reference],
        energy_scale=scale if scale > 1e-12 else 1.0,
        avg_num_neighbours=num_edges / max(num_atoms, 1),
        num_structures=len(indices),
    )


@dataclass
class _Block:
    composition: np.ndarray  # [s, elements] atom counts per element
    counts: np.ndarray  # [s] atoms
    energies: np.ndarray | None  # [s]
    forces: np.ndarray | None  # [n, 3]


def _blocks(
    data: StoreData,
    indices: np.ndarray,
    elements: list[int],
    energy_key: str | None,
    forces_key: str | None,
) -> Iterator[_Block]:
    """Consecutive blocks of structures ``indices`` of about ``FLUSH_ATOMS`` atoms each."""
    lookup = np.full(119, -1, dtype=np.int64)
    lookup[np.asarray(elements)] = np.arange(len(elements))
    for start in range(0, len(indices), CHUNK_STRUCTURES):  # no array as long as the split
        chunk = indices[start : start + CHUNK_STRUCTURES]
        counts = data.offsets[chunk + 1] - data.offsets[chunk]
        for p0, p1 in structure_blocks(offsets_of(counts), FLUSH_ATOMS):
            keys = chunk[p0:p1]
            rows = ranges(data.offsets[keys], counts[p0:p1])
            owner = np.repeat(np.arange(p1 - p0), counts[p0:p1])
            composition = np.zeros((p1 - p0, len(elements)))
            np.add.at(composition, (owner, lookup[np.asarray(data.numbers[rows])]), 1.0)
            energies = forces = None
            if energy_key is not None:
                energy = np.asarray(data.structure_props[energy_key][keys], dtype=np.float64)
                energies = energy.reshape(p1 - p0)
            if forces_key is not None:
                forces = np.asarray(data.atom_props[forces_key][rows], dtype=np.float64)
            yield _Block(composition, counts[p0:p1], energies, forces)
