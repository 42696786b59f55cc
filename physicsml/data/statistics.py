"""Data-derived hyperparameters, computed once from the training split."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from physicsml.data.store import NeighbourTable, StoreData


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
    """Statistics over structures ``indices`` (the training split)."""
    indices = np.asarray(indices, dtype=np.int64)
    starts, ends = data.offsets[indices], data.offsets[indices + 1]
    atom_counts = ends - starts
    atom_index = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])
    owner = np.repeat(np.arange(len(indices)), atom_counts)
    lookup = np.full(119, -1, dtype=np.int64)
    lookup[np.asarray(elements)] = np.arange(len(elements))
    species = lookup[data.numbers[atom_index]]
    composition = np.zeros((len(indices), len(elements)))
    np.add.at(composition, (owner, species), 1.0)

    reference = np.zeros(len(elements))
    scale = 1.0
    if energy_key is not None:
        energies = np.asarray(data.structure_props[energy_key], dtype=np.float64).reshape(-1)[
            indices
        ]
        reference, *_ = np.linalg.lstsq(composition, energies, rcond=None)
        residual = (energies - composition @ reference) / atom_counts
        scale = float(np.sqrt(np.mean(residual**2))) if len(residual) else 1.0
    if forces_key is not None:
        forces = np.asarray(data.atom_props[forces_key], dtype=np.float64)[atom_index]
        scale = float(np.sqrt(np.mean(forces**2)))
    edges = neighbours.offsets[indices + 1] - neighbours.offsets[indices]
    return DataStatistics(
        elements=list(map(int, elements)),
        reference_energies=[float(x) for x in reference],
        energy_scale=scale if scale > 1e-12 else 1.0,
        avg_num_neighbours=float(edges.sum() / max(atom_counts.sum(), 1)),
        num_structures=len(indices),
    )
