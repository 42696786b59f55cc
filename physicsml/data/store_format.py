"""The on-disk format of a physicsml store: layout, names, dtypes, attributes, valid frames.

Layout of a store (a zarr v3 group)::

    atoms/positions [N,3] float64, atoms/numbers [N] int64, atoms/<property> [N,...]
    structures/offsets [S+1] int64, structures/cell [S,3,3], structures/pbc [S,3] bool,
    structures/<property> [S,...]  (a string label: [S] of zarr's ``string`` data type)
    neighbours/<key>/{offsets [S+1], edge_index [2,E] int32, shifts [E,3] int8|int16|int32}

Root attributes: ``format``, ``schema_version``, ``num_structures``, ``num_atoms``,
``elements``, ``properties`` (each property's ``level``, ``shape``, ``unit``, and ``dtype:
string`` for string labels), ``units``, ``source``, ``missing`` (only when some frames lack a
property: their number by property; such frames hold NaN, or an empty string) and
``complete`` (written last). The store and each neighbour table hold a ``manifest.json`` of
their chunks (``physicsml.data.integrity``).
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


STRING = np.dtypes.StringDType()
"""dtype of string labels (zarr 3's variable-length UTF-8 ``string`` data type)."""


@dataclass(frozen=True)
class PropertySpec:
    """How a property is stored: ``level`` (``atom`` or ``structure``), trailing shape (after
    the atom axis for atom properties) and dtype (float64, int64, or ``STRING`` for a
    per-structure string label such as ``config_type``)."""

    level: str
    shape: tuple[int, ...]
    dtype: np.dtype

    def missing(self, rows: int) -> np.ndarray:
        """``rows`` rows (atoms or structures, by ``level``) of the value that a frame without
        this property stores: NaN, or an empty string for strings."""
        fill = "" if self.dtype == STRING else np.nan
        return np.full((rows, *self.shape), fill, dtype=self.dtype)


def chunks(shape: tuple[int, ...], dtype: DTypeLike) -> tuple[int, ...]:
    """Chunks of about ``CHUNK_BYTES`` along the first axis of an array of ``shape``."""
    row = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
    return (max(1, CHUNK_BYTES // max(row, 1)), *shape[1:])


def _is_string(value: np.ndarray) -> bool:
    return value.dtype.kind in "UT"


def property_spec(name: str, level: str, value: np.ndarray) -> PropertySpec:
    """The spec of property ``name`` at ``level`` from its value in a frame; ``ValueError``
    for values that are neither numbers nor a single per-structure string."""
    dtype: np.dtype
    if np.issubdtype(value.dtype, np.floating):
        dtype = np.dtype(np.float64)
    elif np.issubdtype(value.dtype, np.integer):
        dtype = np.dtype(np.int64)
    elif _is_string(value) and level == "structure" and value.ndim == 0:
        dtype = STRING
    else:
        raise ValueError(f"property '{name}' is not numeric ({value.dtype})")
    shape = value.shape[1:] if level == "atom" else value.shape
    return PropertySpec(level, tuple(shape), dtype)


def new_property_specs(frame: Frame, specs: dict[str, PropertySpec]) -> dict[str, PropertySpec]:
    """Specs of the properties of ``frame`` that ``specs`` lacks (all of them for the first
    frame); ``ValueError`` for a name that is both per-atom and per-structure."""
    new: dict[str, PropertySpec] = {}
    for level, props in (("atom", frame.atom_props), ("structure", frame.structure_props)):
        for name, value in props.items():
            known = specs.get(name) or new.get(name)
            if known is None:
                new[name] = property_spec(name, level, np.asarray(value))
            elif known.level != level:
                raise ValueError(
                    f"property '{name}' is both a per-atom and a per-structure property"
                )
    return new


def frame_problem(frame: Frame, specs: dict[str, PropertySpec]) -> str | None:
    """Why ``frame`` cannot be stored under ``specs`` (``None`` when it can). A property
    that the frame lacks is no problem: it is stored as missing (``PropertySpec.missing``)."""
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
            continue
        value = np.asarray(props[name])
        expected = (n, *spec.shape) if spec.level == "atom" else spec.shape
        if value.shape != expected:
            atoms = f" for {n} atoms" if spec.level == "atom" else ""
            return f"'{name}' has shape {value.shape}, expected {expected}{atoms}"
        if spec.dtype == STRING:
            if not _is_string(value):
                return f"'{name}' is not a string ({value.dtype}) as in earlier frames"
        elif value.dtype.kind not in "iufc":  # not np.issubdtype: this runs for every frame
            return f"'{name}' is not numeric ({value.dtype})"
        elif value.dtype.kind == "f" and not np.isfinite(value).all():
            return f"'{name}' is not finite"
    return None
