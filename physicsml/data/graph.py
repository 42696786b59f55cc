"""Per-structure graphs and their collation into the batch dict the models consume."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from physicsml.data.neighbours import neighbour_list

Structure = dict[str, Any]
"""One structure as numpy arrays: ``positions [n,3]``, ``numbers [n]``, ``cell [3,3]``,
``pbc [3]``, ``edge_index [2,e]`` (local indices), ``shifts [e,3]`` (integer lattice
shifts) and optional targets ``y_graph_scalars [k]``, ``y_graph_vector [3]``,
``y_node_scalars [n,k]``, ``y_node_vector [n,3]``, ``y_edge_scalars [e,k]``,
``y_edge_vector [e,3]``, ``graph_attrs [f]``."""

NODE_KEYS = ("y_node_scalars", "y_node_vector")
EDGE_KEYS = ("y_edge_scalars", "y_edge_vector")
GRAPH_KEYS = ("y_graph_scalars", "y_graph_vector", "graph_attrs")


def species_lookup(elements: Sequence[int]) -> np.ndarray:
    """Array mapping atomic number -> index in ``elements`` (-1 for absent elements)."""
    lookup = np.full(119, -1, dtype=np.int64)
    lookup[np.asarray(elements, dtype=np.int64)] = np.arange(len(elements))
    return lookup


def species_of(numbers: np.ndarray, lookup: np.ndarray) -> np.ndarray:
    """Element indices of ``numbers``; an element outside the model's list is an error."""
    species = lookup[numbers]
    if (species < 0).any():
        missing = sorted(set(numbers[species < 0].tolist()))
        raise ValueError(
            f"atomic numbers {missing} are not in the model's element list "
            f"{np.flatnonzero(lookup >= 0).tolist()}"
        )
    return species


def collate(
    structures: Sequence[Structure],
    lookup: np.ndarray,
    num_elements: int,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Tensor]:
    """Concatenate structures into one batch dict (see ``physicsml/models/README.md``)."""
    counts = np.array([len(s["numbers"]) for s in structures], dtype=np.int64)
    ptr = np.zeros(len(structures) + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    numbers = np.concatenate([s["numbers"] for s in structures]).astype(np.int64)
    species = species_of(numbers, lookup)
    cells = np.stack([np.asarray(s["cell"], dtype=np.float64).reshape(3, 3) for s in structures])
    edge_index = np.concatenate(
        [s["edge_index"] + ptr[g] for g, s in enumerate(structures)], axis=1
    ).astype(np.int64)
    edge_graph = np.repeat(
        np.arange(len(structures)), [s["edge_index"].shape[1] for s in structures]
    )
    shifts = np.concatenate([s["shifts"] for s in structures]).astype(np.float64)
    cell_shift = np.einsum("ek,ekl->el", shifts, cells[edge_graph]) if len(shifts) else shifts
    species_t = torch.from_numpy(species)
    batch: dict[str, Tensor] = {
        "coordinates": torch.from_numpy(
            np.concatenate([s["positions"] for s in structures]).astype(np.float64)
        ).to(dtype),
        "atomic_numbers": torch.from_numpy(numbers),
        "species": species_t,
        "node_attrs": torch.nn.functional.one_hot(species_t, num_elements).to(dtype),
        "edge_index": torch.from_numpy(edge_index),
        "cell_shift": torch.from_numpy(cell_shift).to(dtype),
        "batch": torch.from_numpy(np.repeat(np.arange(len(structures)), counts)),
        "ptr": torch.from_numpy(ptr),
        "num_graphs": torch.tensor(len(structures)),
        "cell": torch.from_numpy(cells).to(dtype),
        "pbc": torch.from_numpy(np.stack([np.asarray(s["pbc"], dtype=bool) for s in structures])),
    }
    first = structures[0]
    for key in NODE_KEYS + EDGE_KEYS:
        if key in first:
            batch[key] = torch.from_numpy(
                np.concatenate([np.asarray(s[key], dtype=np.float64) for s in structures])
            ).to(dtype)
    for key in GRAPH_KEYS:
        if key in first:
            batch[key] = torch.from_numpy(
                np.stack([np.asarray(s[key], dtype=np.float64) for s in structures])
            ).to(dtype)
    return batch


def atoms_to_structure(
    atoms: Any,
    cut_off: float,
    pbc: Sequence[bool] | None = None,
    cell: Sequence[Sequence[float]] | None = None,
    self_interaction: bool = False,
) -> Structure:
    """Graph of one ``ase.Atoms`` (no targets), with optional global ``pbc``/``cell`` overrides."""
    use_pbc = np.asarray(atoms.pbc if pbc is None else pbc, dtype=bool)
    use_cell = np.asarray(atoms.cell.array if cell is None else cell, dtype=np.float64)
    positions = np.asarray(atoms.positions, dtype=np.float64)
    i, j, shifts = neighbour_list(positions, use_cell, use_pbc, cut_off, self_interaction)
    return {
        "positions": positions,
        "numbers": np.asarray(atoms.numbers, dtype=np.int64),
        "cell": use_cell,
        "pbc": use_pbc,
        "edge_index": np.stack([i, j]),
        "shifts": shifts,
    }


def atoms_to_batch(
    atoms_list: Sequence[Any],
    elements: Sequence[int],
    cut_off: float,
    dtype: torch.dtype = torch.float64,
    pbc: Sequence[bool] | None = None,
    cell: Sequence[Sequence[float]] | None = None,
    self_interaction: bool = False,
) -> dict[str, Tensor]:
    """Batch dict for a list of ``ase.Atoms`` (used by tests, the API and the ASE calculator)."""
    structures = [atoms_to_structure(a, cut_off, pbc, cell, self_interaction) for a in atoms_list]
    return collate(structures, species_lookup(elements), len(elements), dtype)
