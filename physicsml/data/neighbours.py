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


def molecule_neighbour_lists(
    positions: np.ndarray, counts: np.ndarray, cut_off: float, self_interaction: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges of many non-periodic structures with one matscipy call.

    ``positions`` holds the structures' atoms one after the other, ``counts[k]`` atoms each.
    Each structure is moved to its own slot along x, ``cut_off`` clear of its neighbours, so
    no two atoms of different structures are within ``cut_off``: the edges of each structure
    are those ``neighbour_list`` gives for it alone (the order within a structure may differ).
    Returns ``(edge counts [s], i, j)`` with ``i``, ``j`` local to their structure; all
    shifts are zero. One call instead of one per structure is what makes molecules cheap.
    """
    positions = np.asarray(positions, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    owner = np.repeat(np.arange(len(counts)), counts)
    lower = np.minimum.reduceat(positions, starts, axis=0)
    upper = np.maximum.reduceat(positions, starts, axis=0)
    slot = upper[:, 0] - lower[:, 0] + 2 * cut_off
    slot_start = np.concatenate([[0.0], np.cumsum(slot)[:-1]])
    moved = positions - lower[owner] + cut_off
    moved[:, 0] += slot_start[owner]
    box = np.diag([slot.sum(), *(np.max(upper - lower, axis=0)[1:] + 2 * cut_off)])
    i, j = _matscipy_neighbour_list(
        "ij", positions=moved, cell=box, pbc=np.zeros(3, dtype=bool), cutoff=float(cut_off)
    )
    i, j = i.astype(np.int64), j.astype(np.int64)
    if self_interaction:  # after each structure's other edges, as neighbour_list puts them
        loops = np.arange(len(positions), dtype=np.int64)
        i, j = np.concatenate([i, loops]), np.concatenate([j, loops])
        is_loop = np.concatenate([np.zeros(len(i) - len(loops), bool), np.ones(len(loops), bool)])
        order = np.argsort(2 * owner[i] + is_loop, kind="stable")
    else:
        order = np.argsort(owner[i], kind="stable")
    i, j = i[order], j[order]
    edge_owner = owner[i]
    return (
        np.bincount(edge_owner, minlength=len(counts)),
        i - starts[edge_owner],
        j - starts[edge_owner],
    )
