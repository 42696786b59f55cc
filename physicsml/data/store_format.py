"""The on-disk format of a physicsml store: layout, names, dtypes, attributes, valid frames.

Layout of a store (a zarr v3 group)::

    atoms/positions [N,3] float64, atoms/numbers [N] int64, atoms/<property> [N,...]
    structures/offsets [S+1] int64, structures/cell [S,3,3], structures/pbc [S,3] bool,
    structures/<property> [S,...]
    neighbours/<key>/{offsets [S+1], edge_index [2,E] int32, shifts [E,3] int8|int16|int32}

Root attributes: ``format``, ``schema_version``, ``num_structures``, ``num_atoms``,
``elements``, ``properties``, ``units``, ``source`` and ``complete`` (written last). The store
and each neighbour table hold a ``manifest.json`` of their chunks (``physicsml.data.integrity``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np
from numpy.typing import DTypeLike

FORMAT = "physicsml-store"
SCHEMA_VERSION = 2
"""2: ``manifest.json`` records every chunk's size and hash (``physicsml.data.integrity``);
stores of version 1 have none and are ingested again."""
CHUNK_BYTES = 2**21
"""Target size of one uncompressed chunk (2 MiB) for sequential reads."""
FLUSH_ATOMS = 2**18
"""Stores are written, and read for neighbour lists and statistics, in blocks of about this
many atoms."""

Array: TypeAlias = Any
"""A ``numpy.ndarray``, or a ``zarr.Array`` (or several joined, ``ConcatenatedArray``) read on
demand: all index alike (integer arrays select along one axis), and ``numpy.asarray`` of a
selection is an ndarray."""


class StoreError(ValueError):
    """A path is not a usable physicsml store."""


@dataclass
class Frame:
    """One structure to write: per-atom properties are ``[n, ...]``, per-structure any shape."""

    positions: np.ndarray
    numbers: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    atom_props: dict[str, Any] = field(default_factory=dict)
    structure_props: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PropertySpec:
    """How a property is stored: ``level`` (``atom`` or ``structure``), trailing shape (after
    the atom axis for atom properties) and dtype (float64 or int64)."""

    level: str
    shape: tuple[int, ...]
    dtype: np.dtype


def chunks(shape: tuple[int, ...], dtype: DTypeLike) -> tuple[int, ...]:
    """Chunks of about ``CHUNK_BYTES`` along the first axis of an array of ``shape``."""
    row = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
    return (max(1, CHUNK_BYTES // max(row, 1)), *shape[1:])


def _spec_of(name: str, level: str, value: np.ndarray) -> PropertySpec:
    dtype: np.dtype
    if np.issubdtype(value.dtype, np.floating):
        dtype = np.dtype(np.float64)
    elif np.issubdtype(value.dtype, np.integer):
        dtype = np.dtype(np.int64)
    else:
        raise ValueError(f"property '{name}' is not numeric ({value.dtype})")
    shape = value.shape[1:] if level == "atom" else value.shape
    return PropertySpec(level, tuple(shape), dtype)


def property_specs(frame: Frame) -> dict[str, PropertySpec]:
    """Property specs of the first frame, which every later frame must follow."""
    specs = {n: _spec_of(n, "atom", np.asarray(v)) for n, v in frame.atom_props.items()}
    for name, value in frame.structure_props.items():
        if name in specs:
            raise ValueError(f"property '{name}' is both a per-atom and a per-structure property")
        specs[name] = _spec_of(name, "structure", np.asarray(value))
    return specs


def frame_problem(frame: Frame, specs: dict[str, PropertySpec]) -> str | None:
    """Why ``frame`` cannot be stored under ``specs`` (``None`` when it can)."""
    positions = np.asarray(frame.positions)
    numbers = np.asarray(frame.numbers)
    n = len(numbers)
    if positions.shape != (n, 3):
        return f"positions have shape {positions.shape} but the frame has {n} atoms"
    if n == 0:
        return "the frame has no atoms"
    if not np.isfinite(positions).all():
        return "positions are not finite"
    if numbers.min() < 1 or numbers.max() > 118:
        return "atomic numbers outside 1..118"
    cell = np.asarray(frame.cell)
    pbc = np.asarray(frame.pbc)
    if cell.shape != (3, 3) or pbc.shape != (3,):
        return f"cell has shape {cell.shape} and pbc {pbc.shape}, expected (3, 3) and (3,)"
    if not np.isfinite(cell).all():
        return "cell is not finite"
    if pbc.any() and np.linalg.matrix_rank(cell[pbc], tol=1e-6) < pbc.sum():
        return f"the cell vectors of the periodic directions (pbc={pbc.tolist()}) are degenerate"
    for name, spec in specs.items():
        props = frame.atom_props if spec.level == "atom" else frame.structure_props
        if name not in props:
            return f"missing label '{name}'"
        value = np.asarray(props[name])
        expected = (n, *spec.shape) if spec.level == "atom" else spec.shape
        if value.shape != expected:
            atoms = f" for {n} atoms" if spec.level == "atom" else ""
            return f"'{name}' has shape {value.shape}, expected {expected}{atoms}"
        if value.dtype.kind not in "iufc":  # not np.issubdtype: this runs for every frame
            return f"'{name}' is not numeric ({value.dtype})"
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            return f"'{name}' is not finite"
    return None
