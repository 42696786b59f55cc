"""Structures as numpy arrays, and the one function that turns them into a model batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from physicsml.data.neighbours import neighbour_list
from physicsml.data.offsets import offsets_of

Structures = dict[str, np.ndarray]
"""Consecutive structures as numpy arrays. Per atom: ``positions [N,3]``, ``numbers [N]`` and
optional ``y_node_scalars [N,k]``, ``y_node_vector [N,3]``; per edge: ``edge_index [E,2]``
(atom indices local to the structure) and ``shifts [E,3]`` (integer lattice shifts); per
structure: ``counts [S]`` (atoms), ``edge_counts [S]``, ``cell [S,3,3]``, ``pbc [S,3]`` and
optional ``graph_attrs [S,f]``, ``y_graph_scalars [S,k]``, ``y_graph_vector [S,3]``,
``y_graph_tensor [S,3,3]``."""

ATOM_KEYS = ("positions", "numbers", "y_node_scalars", "y_node_vector")
EDGE_KEYS = ("edge_index", "shifts")
LEVELS = ("atoms", "edges", "graphs")
VALUE_KEYS = (
    "y_node_scalars",
    "y_node_vector",
    "y_graph_scalars",
    "y_graph_vector",
    "y_graph_tensor",
    "graph_attrs",
)
"""Keys that enter the batch as they are, as float tensors."""


def level_of(key: str) -> str:
    """The axis (one of ``LEVELS``) along which the first dimension of ``Structures[key]`` runs."""
    if key in ATOM_KEYS:
        return "atoms"
    return "edges" if key in EDGE_KEYS else "graphs"


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


def assemble(
    structures: Structures,
    lookup: np.ndarray,
    num_elements: int,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Tensor]:
    """The batch dict of ``structures`` (see ``physicsml/models/README.md``).

    Every loader builds its batches here: the plain one, the pre-batched ones and inference.
    """
    counts = structures["counts"].astype(np.int64)
    num = len(counts)
    ptr = offsets_of(counts)
    numbers = structures["numbers"].astype(np.int64)
    species = species_of(numbers, lookup)
    cells = structures["cell"].astype(np.float64)
    edge_graph = np.repeat(np.arange(num), structures["edge_counts"].astype(np.int64))
    edge_index = structures["edge_index"].T.astype(np.int64) + ptr[edge_graph]
    shifts = structures["shifts"].astype(np.float64)
    cell_shift = np.einsum("ek,ekl->el", shifts, cells[edge_graph]) if len(shifts) else shifts
    species_t = torch.from_numpy(species)
    batch: dict[str, Tensor] = {
        "coordinates": torch.from_numpy(structures["positions"].astype(np.float64)).to(dtype),
        "atomic_numbers": torch.from_numpy(numbers),
        "species": species_t,
        "node_attrs": torch.nn.functional.one_hot(species_t, num_elements).to(dtype),
        "edge_index": torch.from_numpy(edge_index),
        "cell_shift": torch.from_numpy(cell_shift).to(dtype),
        "batch": torch.from_numpy(np.repeat(np.arange(num), counts)),
        "ptr": torch.from_numpy(ptr),
        "num_graphs": torch.tensor(num),
        "cell": torch.from_numpy(cells).to(dtype),
        "pbc": torch.from_numpy(structures["pbc"].astype(bool)),
    }
    for key in VALUE_KEYS:
        if key in structures:
            batch[key] = torch.from_numpy(structures[key].astype(np.float64)).to(dtype)
    return batch


def join(parts: Sequence[Structures]) -> Structures:
    """The structures of all ``parts``, in order."""
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def collate(
    parts: Sequence[Structures],
    lookup: np.ndarray,
    num_elements: int,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Tensor]:
    """The batch dict of the structures of all ``parts`` (``assemble`` of their ``join``)."""
    return assemble(join(parts), lookup, num_elements, dtype)


def atoms_to_structure(
    atoms: Any,
    cut_off: float,
    pbc: Sequence[bool] | None = None,
    cell: Sequence[Sequence[float]] | None = None,
    self_interaction: bool = False,
) -> Structures:
    """Graph of one ``ase.Atoms`` (no targets), with optional global ``pbc``/``cell`` overrides."""
    use_pbc = np.asarray(atoms.pbc if pbc is None else pbc, dtype=bool)
    use_cell = np.asarray(atoms.cell.array if cell is None else cell, dtype=np.float64)
    positions = np.asarray(atoms.positions, dtype=np.float64)
    i, j, shifts = neighbour_list(positions, use_cell, use_pbc, cut_off, self_interaction)
    return {
        "positions": positions,
        "numbers": np.asarray(atoms.numbers, dtype=np.int64),
        "edge_index": np.stack([i, j], axis=1),
        "shifts": shifts,
        "counts": np.array([len(positions)]),
        "edge_counts": np.array([len(i)]),
        "cell": use_cell.reshape(1, 3, 3),
        "pbc": use_pbc.reshape(1, 3),
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
