"""Several stores read as one: their arrays and neighbour tables joined in order.

Structure ``k`` of the second store is structure ``S0 + k`` of the join (``S0`` structures in
the first), and so on. Arrays in memory are concatenated; arrays on disk are joined by a
``ConcatenatedArray`` that reads its parts on demand.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from physicsml.data.neighbours import NeighbourTable
from physicsml.data.offsets import offsets_of
from physicsml.data.store import StoreData
from physicsml.data.store_format import Array


class ConcatenatedArray:
    """Arrays joined along ``axis`` (0, or 1 for ``edge_index [2,E]``), read on demand.

    Takes the selections that the datasets, statistics and neighbour tables make: along the
    joined axis (after ``:`` when ``axis`` is 1) a non-negative int, a slice with step 1 or
    an integer array; ``numpy.asarray`` of the result is an ndarray.
    """

    def __init__(self, parts: Sequence[Array], axis: int = 0) -> None:
        self.parts = list(parts)
        self.axis = axis
        self.starts = offsets_of(np.array([part.shape[axis] for part in self.parts]))
        shape = list(self.parts[0].shape)
        shape[axis] = int(self.starts[-1])
        self.shape = tuple(shape)
        self.dtype = np.result_type(*(part.dtype for part in self.parts))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> Any:
        if self.axis:
            head, key = key
            if head != slice(None):
                raise IndexError("a ConcatenatedArray selects along its joined axis only")
        lead = (slice(None),) * self.axis
        if isinstance(key, (int, np.integer)):
            part = int(np.searchsorted(self.starts, key, side="right")) - 1
            return self.parts[part][lead + (int(key) - int(self.starts[part]),)]
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[self.axis])
            if step != 1:
                raise IndexError("a ConcatenatedArray takes slices with step 1 only")
            key = np.arange(start, stop)
        rows = np.asarray(key, dtype=np.int64)
        owner = np.searchsorted(self.starts, rows, side="right") - 1
        shape = list(self.shape)
        shape[self.axis] = len(rows)
        out = np.empty(shape, dtype=self.dtype)
        for part in np.unique(owner):
            chosen = owner == part
            local = rows[chosen] - self.starts[part]
            piece = self.parts[part]
            if np.all(np.diff(local) == 1):  # a contiguous run: one slice read
                out[lead + (chosen,)] = piece[lead + (slice(int(local[0]), int(local[-1]) + 1),)]
            else:
                out[lead + (chosen,)] = piece[lead + (local,)]
        return out


def _join(arrays: Sequence[Array], axis: int = 0) -> Array:
    if all(isinstance(array, np.ndarray) for array in arrays):
        return np.concatenate(arrays, axis=axis)
    return ConcatenatedArray(arrays, axis)


def _join_offsets(offsets: Sequence[np.ndarray]) -> np.ndarray:
    """Offsets into the joined rows: each part's shifted by the rows of the parts before."""
    before = np.cumsum([0] + [int(o[-1]) for o in offsets[:-1]])
    return np.concatenate(
        [offsets[0], *(o[1:] + b for o, b in zip(offsets[1:], before[1:], strict=True))]
    )


def _join_common(props: Sequence[dict[str, Array]]) -> dict[str, Array]:
    """The properties that every part has, with the same trailing shape, joined."""
    names = [
        name
        for name, array in props[0].items()
        if all(name in p and p[name].shape[1:] == array.shape[1:] for p in props)
    ]
    return {name: _join([p[name] for p in props]) for name in names}


def concat_data(parts: Sequence[StoreData]) -> StoreData:
    """The arrays of ``parts`` as those of one store (properties: those all parts share)."""
    if len(parts) == 1:
        return parts[0]
    return StoreData(
        offsets=_join_offsets([p.offsets for p in parts]),
        positions=_join([p.positions for p in parts]),
        numbers=_join([p.numbers for p in parts]),
        cell=_join([p.cell for p in parts]),
        pbc=_join([p.pbc for p in parts]),
        atom_props=_join_common([p.atom_props for p in parts]),
        structure_props=_join_common([p.structure_props for p in parts]),
    )


def concat_tables(parts: Sequence[NeighbourTable]) -> NeighbourTable:
    """The neighbour tables of ``parts`` as one (edge indices are local: kept as they are)."""
    if len(parts) == 1:
        return parts[0]
    return NeighbourTable(
        offsets=_join_offsets([p.offsets for p in parts]),
        edge_index=_join([p.edge_index for p in parts], axis=1),
        shifts=_join([p.shifts for p in parts]),
    )
