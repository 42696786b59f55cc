"""Map-style dataset of structures (with neighbour lists and targets) from a loaded store."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset

from physicsml.data.graph import Structure
from physicsml.data.store import NeighbourTable, StoreData


@dataclass(frozen=True)
class TargetSpec:
    """Which store properties feed which batch keys (the datamodule's ``y_*`` keys)."""

    y_graph_scalars: tuple[str, ...] = ()
    y_graph_vector: str | None = None
    y_node_scalars: tuple[str, ...] = ()
    y_node_vector: str | None = None
    graph_attrs_cols: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, list[str] | str | None]:
        """Plain-container form (for hyperparameters and checkpoints)."""
        return {
            "y_graph_scalars": list(self.y_graph_scalars),
            "y_graph_vector": self.y_graph_vector,
            "y_node_scalars": list(self.y_node_scalars),
            "y_node_vector": self.y_node_vector,
            "graph_attrs_cols": list(self.graph_attrs_cols),
        }


class StructureDataset(Dataset[Structure]):
    """Structures ``indices`` of a store, as numpy dicts ready for ``collate``.

    ``cell`` and ``pbc`` are the global overrides used for the neighbour list (None: each
    structure's own); with ``with_targets=False`` no ``y_*`` keys are produced (predict).
    """

    def __init__(
        self,
        data: StoreData,
        neighbours: NeighbourTable,
        indices: np.ndarray,
        targets: TargetSpec,
        cell: np.ndarray | None = None,
        pbc: np.ndarray | None = None,
        with_targets: bool = True,
    ) -> None:
        self.data = data
        self.neighbours = neighbours
        self.indices = np.asarray(indices, dtype=np.int64)
        self.targets = targets
        self.cell = cell
        self.pbc = pbc
        self.with_targets = with_targets

    def __len__(self) -> int:
        return len(self.indices)

    def num_atoms(self, item: int) -> int:
        """Atom count of item ``item`` (without loading it)."""
        k = self.indices[item]
        return int(self.data.offsets[k + 1] - self.data.offsets[k])

    def __getitem__(self, item: int) -> Structure:
        k = int(self.indices[item])
        a0, a1 = int(self.data.offsets[k]), int(self.data.offsets[k + 1])
        edge_index, shifts = self.neighbours.structure(k)
        structure: Structure = {
            "positions": self.data.positions[a0:a1],
            "numbers": self.data.numbers[a0:a1],
            "cell": self.data.cell[k] if self.cell is None else self.cell,
            "pbc": self.data.pbc[k] if self.pbc is None else self.pbc,
            "edge_index": edge_index,
            "shifts": shifts,
        }
        spec = self.targets
        if spec.graph_attrs_cols:
            structure["graph_attrs"] = np.concatenate(
                [np.ravel(self.data.structure_props[c][k]) for c in spec.graph_attrs_cols]
            )
        if not self.with_targets:
            return structure
        if spec.y_graph_scalars:
            structure["y_graph_scalars"] = np.array(
                [float(np.ravel(self.data.structure_props[c][k])[0]) for c in spec.y_graph_scalars]
            )
        if spec.y_graph_vector:
            structure["y_graph_vector"] = self.data.structure_props[spec.y_graph_vector][k]
        if spec.y_node_scalars:
            structure["y_node_scalars"] = np.stack(
                [self.data.atom_props[c][a0:a1].reshape(a1 - a0) for c in spec.y_node_scalars],
                axis=1,
            )
        if spec.y_node_vector:
            structure["y_node_vector"] = self.data.atom_props[spec.y_node_vector][a0:a1]
        return structure
