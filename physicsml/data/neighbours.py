"""Radius neighbour lists (matscipy) and their cache in a store (``neighbours/<key>``).

Lists are translation-invariant for non-periodic directions. The cache holds one table per
set of parameters (cut-off, pbc/cell overrides, self-interaction, algorithm version).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from matscipy.neighbours import neighbour_list as _matscipy_neighbour_list
from tqdm.auto import tqdm

from physicsml.data.files import complete, locked, remove_stale, staged, widen, zarr_array
from physicsml.data.integrity import Manifest, read_manifest, write_manifest
from physicsml.data.offsets import offsets_of, structure_blocks
from physicsml.data.store_format import FLUSH_ATOMS, Array, chunks

if TYPE_CHECKING:  # the store's reader imports this module
    from physicsml.data.store import AtomsStore, StoreData

log = logging.getLogger(__name__)

NEIGHBOUR_VERSION = 1
"""Bump when the neighbour-list algorithm changes so that old caches are not reused."""

EdgeBlock = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Edge counts ``[s]``, ``edge_index [2,e]`` int32 and ``shifts [e,3]`` int32 of a block of
structures."""


@dataclass
class NeighbourTable:
    """Edges of all structures; edges of structure ``k`` are ``offsets[k]:offsets[k+1]``.

    ``edge_index`` holds local atom indices (``[0]`` centre, ``[1]`` neighbour) and
    ``shifts`` integer lattice shifts: ``r_ij = x_j - x_i + shifts @ cell``. Both are in
    memory or, from ``AtomsStore.neighbours(lazy=True)``, zarr arrays read on demand.
    """

    offsets: np.ndarray
    edge_index: Array
    shifts: Array

    def structure(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(edge_index [2,e], shifts [e,3])`` of structure ``k`` as int64."""
        start, stop = self.offsets[k], self.offsets[k + 1]
        return (
            np.asarray(self.edge_index[:, start:stop]).astype(np.int64),
            np.asarray(self.shifts[start:stop]).astype(np.int64),
        )


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


def shift_dtype(shifts: np.ndarray) -> np.dtype:
    """Smallest signed integer type holding ``shifts``."""
    largest = int(np.abs(shifts).max()) if shifts.size else 0
    for dtype in (np.int8, np.int16):
        if largest <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int32)


def store_neighbours(
    store: AtomsStore,
    cut_off: float,
    pbc: Iterable[bool] | None = None,
    cell: Iterable[Iterable[float]] | np.ndarray | None = None,
    self_interaction: bool = False,
    progress: bool = True,
    lazy: bool = False,
) -> NeighbourTable:
    """Neighbour lists of ``store``, cached in it (``AtomsStore.neighbours`` documents it).

    The table is computed once per set of parameters under a lock, written to
    ``neighbours/<key>`` and read back (as zarr arrays when ``lazy``); a store that is not
    writable gets it computed in memory.
    """
    params: dict[str, Any] = {
        "cut_off": float(cut_off),
        "pbc": None if pbc is None else np.asarray(pbc, dtype=bool).reshape(3).tolist(),
        "cell": None if cell is None else np.asarray(cell, dtype=float).reshape(3, 3).tolist(),
        "self_interaction": bool(self_interaction),
        "algorithm_version": NEIGHBOUR_VERSION,
    }
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    path = store.path
    directory = path / "neighbours"
    cached = _read_table(path, directory / key, lazy)
    if cached is not None:
        return cached
    blocks = _edge_blocks(store.open_arrays(), params, path.name, progress)
    if not os.access(path, os.W_OK):
        log.warning("%s is not writable: neighbour lists are not cached", path)
        return _concatenate(blocks)
    directory.mkdir(exist_ok=True)
    with locked(directory / ".lock"):
        remove_stale(directory, r"\.tmp-[0-9a-f]{16}-(\d+)")
        if not complete(directory / key):
            zarr.open_group(directory, mode="a", zarr_format=3)
            with staged(directory / key, directory / f".tmp-{key}-{os.getpid()}") as tmp:
                _write_table(tmp, blocks, params)
            log.info(
                "%s: neighbour lists with cut_off %g cached in %s",
                path,
                params["cut_off"],
                directory / key,
            )
    table = _read_table(path, directory / key, lazy)
    assert table is not None
    return table


def _edge_blocks(
    data: StoreData, params: dict[str, Any], name: str, progress: bool
) -> Iterator[EdgeBlock]:
    """Edges of consecutive blocks of structures, read from the store block by block."""
    offsets = data.offsets
    bar = tqdm(
        total=len(offsets) - 1,
        desc=f"neighbour lists (cut_off={params['cut_off']:g}) of {name}",
        unit=" structures",
        disable=not progress,
        mininterval=1.0,
        delay=2.0,
    )
    for k0, k1 in structure_blocks(offsets, FLUSH_ATOMS):
        block = np.asarray(data.positions[offsets[k0] : offsets[k1]])
        local = offsets[k0 : k1 + 1] - offsets[k0]
        block_cells = np.asarray(data.cell[k0:k1])
        block_pbcs = np.asarray(data.pbc[k0:k1])
        if params["cell"] is not None:
            block_cells[:] = np.asarray(params["cell"], dtype=np.float64)
        if params["pbc"] is not None:
            block_pbcs[:] = np.asarray(params["pbc"], dtype=bool)
        bar.update(k1 - k0)
        if not block_pbcs.any():  # molecules: one matscipy call for the whole block
            edge_counts, i, j = molecule_neighbour_lists(
                block, np.diff(local), params["cut_off"], params["self_interaction"]
            )
            no_shifts = np.zeros((len(i), 3), np.int32)
            yield edge_counts, np.stack([i, j]).astype(np.int32), no_shifts
            continue
        counts, edges, shifts = [], [], []
        for k in range(k1 - k0):
            i, j, s = neighbour_list(
                block[local[k] : local[k + 1]],
                block_cells[k],
                block_pbcs[k],
                params["cut_off"],
                params["self_interaction"],
            )
            counts.append(len(i))
            edges.append(np.stack([i, j]).astype(np.int32))
            shifts.append(s.astype(np.int32))
        yield (
            np.asarray(counts, dtype=np.int64),
            np.concatenate(edges, axis=1),
            np.concatenate(shifts),
        )
    bar.close()


def table_manifests(store: Path) -> list[Manifest]:
    """The manifests of the neighbour tables cached in the store at ``store``."""
    directory = store / "neighbours"
    if not directory.is_dir():
        return []
    tables = [p for p in sorted(directory.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    return [read_manifest(store, table) for table in tables]


def _read_table(store: Path, path: Path, lazy: bool) -> NeighbourTable | None:
    """The cached table at ``path``, its chunks verified against its manifest on first use."""
    if not complete(path):
        return None
    manifest = read_manifest(store, path)
    manifest.verify()
    group = zarr.open_group(path, mode="r", zarr_format=3)
    offsets, edge_index, shifts = (
        manifest.checked(zarr_array(group, name), name)
        for name in ("offsets", "edge_index", "shifts")
    )
    return NeighbourTable(
        offsets=np.asarray(offsets[...]),
        edge_index=edge_index if lazy else np.asarray(edge_index[...]),
        shifts=shifts if lazy else np.asarray(shifts[...]),
    )


def _concatenate(blocks: Iterable[EdgeBlock]) -> NeighbourTable:
    """A neighbour table in memory from its blocks."""
    counts, edges, shifts = zip(*blocks, strict=True)
    all_shifts = np.concatenate(shifts)
    return NeighbourTable(
        offsets_of(np.concatenate(counts)),
        np.concatenate(edges, axis=1),
        all_shifts.astype(shift_dtype(all_shifts)),
    )


def _write_table(path: Path, blocks: Iterable[EdgeBlock], params: dict[str, Any]) -> None:
    """Append the edge blocks to a new zarr group, shifts in the smallest dtype that fits."""
    group = zarr.open_group(path, mode="w", zarr_format=3)
    rows = chunks((0, 2), np.int32)[0]
    edge_index = group.create_array("edge_index", shape=(2, 0), dtype=np.int32, chunks=(2, rows))
    dtype = np.dtype(np.int8)
    shifts = group.create_array("shifts", shape=(0, 3), dtype=dtype, chunks=chunks((0, 3), dtype))
    counts = []
    for block_counts, block_edges, block_shifts in blocks:
        counts.append(block_counts)
        start = edge_index.shape[1]
        edge_index.resize((2, start + block_edges.shape[1]))
        edge_index[:, start:] = block_edges
        if shift_dtype(block_shifts).itemsize > shifts.dtype.itemsize:
            shifts = widen(group, path, "shifts", shift_dtype(block_shifts))
        shifts.resize((start + len(block_shifts), 3))
        shifts[start:] = block_shifts
    offsets = offsets_of(np.concatenate(counts))
    group.create_array("offsets", data=offsets, chunks=chunks(offsets.shape, np.int64))
    group.attrs.update({**params, "num_edges": int(offsets[-1])})
    group.attrs["complete"] = True
    write_manifest(path)
