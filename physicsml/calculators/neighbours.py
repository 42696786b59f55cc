"""A Verlet (skin) neighbour list of one structure, reused between molecular-dynamics steps."""

from __future__ import annotations

import numpy as np

from physicsml.data.neighbours import neighbour_list


class SkinNeighbourList:
    """Edges within ``cut_off`` of one structure, from a list built with ``cut_off + skin``.

    The list is built again only when an atom has moved more than ``skin / 2`` since it was
    built (then no pair can have crossed into the cut-off unseen) or when the cell, the
    periodic directions or the atomic numbers changed. Every call returns exactly the edges
    shorter than ``cut_off`` (the pairs a fresh list at ``cut_off`` holds), filtered by length
    from the longer list, so the model does the same work and gives the same results as
    without a skin; ``skin=0`` builds a new list whenever an atom moved.
    """

    def __init__(self, cut_off: float, skin: float = 0.5, self_interaction: bool = False) -> None:
        if not skin >= 0.0:
            raise ValueError(f"skin must be a non-negative length in Å, got {skin}")
        self.cut_off = float(cut_off)
        self.skin = float(skin)
        self.self_interaction = self_interaction
        self.builds = 0
        """How many times the list was built (a measure of how often it was reused)."""
        self._key: tuple[bytes, bytes, bytes] | None = None
        self._reference = np.zeros((0, 3))
        self._i = self._j = np.zeros(0, dtype=np.int64)
        self._shifts = np.zeros((0, 3), dtype=np.int64)

    def edges(
        self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, numbers: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(i, j, shifts)`` as ``physicsml.data.neighbours.neighbour_list`` at ``cut_off``:
        ``r_ij = positions[j] - positions[i] + shifts @ cell``, both directions of each pair."""
        positions = np.asarray(positions, dtype=np.float64)
        cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
        pbc = np.asarray(pbc, dtype=bool).reshape(3)
        key = (cell.tobytes(), pbc.tobytes(), np.asarray(numbers, dtype=np.int64).tobytes())
        if key != self._key or self._moved_too_far(positions):
            self._i, self._j, self._shifts = neighbour_list(
                positions, cell, pbc, self.cut_off + self.skin, self.self_interaction
            )
            self._key = key
            self._reference = positions.copy()
            self.builds += 1
        vectors = positions[self._j] - positions[self._i] + self._shifts @ cell
        inside = np.einsum("ek,ek->e", vectors, vectors) < self.cut_off**2
        return self._i[inside], self._j[inside], self._shifts[inside]

    def _moved_too_far(self, positions: np.ndarray) -> bool:
        displacement = positions - self._reference
        return bool(np.einsum("nk,nk->n", displacement, displacement).max() > (self.skin / 2) ** 2)
