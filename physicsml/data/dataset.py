"""Map-style dataset of structures (with neighbour lists and targets) from a loaded store."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset

from physicsml.data.graph import Structures
from physicsml.data.neighbours import NeighbourTable
from physicsml.data.offsets import ranges
from physicsml.data.store import StoreData


@dataclass(frozen=True)
class TargetSpec:
    """Which store properties feed which batch keys (the datamodule's ``y_*`` keys)."""

    y_graph_scalars: tuple[str, ...] = ()
    y_graph_vector: str | None = None
    y_graph_tensor: str | None = None
    y_node_scalars: tuple[str, ...] = ()
    y_node_vector: str | None = None
    graph_attrs_cols: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, list[str] | str | None]:
        """Plain-container form (for hyperparameters and checkpoints)."""
        return {
            "y_graph_scalars": list(self.y_graph_scalars),
            "y_graph_vector": self.y_graph_vector,
            "y_graph_tensor": self.y_graph_tensor,
            "y_node_scalars": list(self.y_node_scalars),
            "y_node_vector": self.y_node_vector,
            "graph_attrs_cols": list(self.graph_attrs_cols),
        }


class StructureDataset(Dataset[Structures]):
    """Structures ``indices`` of a store, as ``Structures`` arrays ready for ``assemble``.

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

    def __getitem__(self, item: int) -> Structures:
        return self.gather(np.array([item]))

    def __getitems__(self, items: list[int]) -> Structures:
        """The structures of a batch, gathered at once (the ``DataLoader`` calls this)."""
        return self.gather(np.asarray(items))

    def gather(self, items: np.ndarray) -> Structures:
        """The structures of dataset items ``items``, in that order."""
        data, table, spec = self.data, self.neighbours, self.targets
        keys = self.indices[np.asarray(items, dtype=np.int64)]
        num = len(keys)
        counts = data.offsets[keys + 1] - data.offsets[keys]
        edge_counts = table.offsets[keys + 1] - table.offsets[keys]
        atoms = ranges(data.offsets[keys], counts)
        edges = ranges(table.offsets[keys], edge_counts)
        out = {
            "positions": data.positions[atoms],
            "numbers": data.numbers[atoms],
            "edge_index": table.edge_index[:, edges].T.copy(),
            "shifts": table.shifts[edges],
            "counts": counts,
            "edge_counts": edge_counts,
            "cell": data.cell[keys] if self.cell is None else np.repeat(self.cell[None], num, 0),
            "pbc": data.pbc[keys] if self.pbc is None else np.repeat(self.pbc[None], num, 0),
        }
        graph = data.structure_props
        if spec.graph_attrs_cols:
            out["graph_attrs"] = np.concatenate(
                [graph[c][keys].reshape(num, -1) for c in spec.graph_attrs_cols], axis=1
            ).astype(np.float64)
        if not self.with_targets:
            return out
        if spec.y_graph_scalars:
            out["y_graph_scalars"] = np.stack(
                [graph[c][keys].reshape(num, -1)[:, 0] for c in spec.y_graph_scalars], axis=1
            ).astype(np.float64)
        if spec.y_graph_vector:
            out["y_graph_vector"] = graph[spec.y_graph_vector][keys].astype(np.float64)
        if spec.y_graph_tensor:
            out["y_graph_tensor"] = graph[spec.y_graph_tensor][keys].reshape(num, 3, 3)
            out["y_graph_tensor"] = out["y_graph_tensor"].astype(np.float64)
        if spec.y_node_scalars:
            out["y_node_scalars"] = np.stack(
                [data.atom_props[c][atoms].reshape(len(atoms)) for c in spec.y_node_scalars],
                axis=1,
            ).astype(np.float64)
        if spec.y_node_vector:
            out["y_node_vector"] = data.atom_props[spec.y_node_vector][atoms].astype(np.float64)
        return out
