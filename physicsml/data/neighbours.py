"""Radius neighbour lists with matscipy, translation-invariant for non-periodic directions."""

from __future__ import annotations

import numpy as np
from matscipy.neighbours import neighbour_list as _matscipy_neighbour_list


def neighbour_list(
    positions: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray,
    cut_off: float,
    self_interaction: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges within ``cut_off`` of one structure.

    Returns ``(i, j, shifts)``: int64 arrays ``[E]``, ``[E]`` and ``[E, 3]`` with
    ``r_ij = positions[j] - positions[i] + shifts @ cell``. Both directions of every
    pair are present. For non-periodic structures the search box is built from the
    atoms' extent (plus ``2 * cut_off``), so edges do not change when a molecule is
    translated. ``self_interaction`` adds an ``i -> i`` edge with zero shift per atom.
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3).copy()
    origin = np.zeros(3)
    if not pbc.all():
        lower = positions.min(axis=0) - cut_off
        upper = positions.max(axis=0) + cut_off
        for axis in np.flatnonzero(~pbc):
            # Replace each non-periodic cell vector by an axis-aligned one spanning the atoms.
            cell[axis] = 0.0
            cell[axis, axis] = upper[axis] - lower[axis]
            origin[axis] = lower[axis]
        if pbc.any() and abs(np.linalg.det(cell)) < 1e-12:
            raise ValueError("cell is singular for the periodic directions of this structure")
    i, j, shifts = _matscipy_neighbour_list(
        "ijS", positions=positions, cell=cell, pbc=pbc, cutoff=float(cut_off), cell_origin=origin
    )
    i = i.astype(np.int64)
    j = j.astype(np.int64)
    shifts = shifts.astype(np.int64)
    shifts[:, ~pbc] = 0
    if self_interaction:
        n = len(positions)
        loops = np.arange(n, dtype=np.int64)
        i = np.concatenate([i, loops])
        j = np.concatenate([j, loops])
        shifts = np.concatenate([shifts, np.zeros((n, 3), dtype=np.int64)])
    return i, j, shifts
