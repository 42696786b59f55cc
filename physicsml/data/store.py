"""Zarr store of atomistic structures (concatenated arrays + offsets) with a neighbour-list cache.

Layout of a store (a zarr v3 group)::

    atoms/positions [N,3] float64, atoms/numbers [N] int64, atoms/<property> [N,...]
    structures/offsets [S+1] int64, structures/cell [S,3,3], structures/pbc [S,3] bool,
    structures/<property> [S,...]
    neighbours/<key>/{offsets [S+1], edge_index [2,E] int32, shifts [E,3] int8|int16|int32}

Root attributes: ``format``, ``schema_version``, ``num_structures``, ``num_atoms``,
``elements``, ``properties``, ``units``, ``source`` and ``complete`` (written last).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numpy.typing import DTypeLike
from tqdm.auto import tqdm

from physicsml.data.neighbours import neighbour_list

log = logging.getLogger(__name__)

FORMAT = "physicsml-store"
SCHEMA_VERSION = 1
NEIGHBOUR_VERSION = 1
"""Bump when the neighbour-list algorithm changes so that old caches are not reused."""
CHUNK_BYTES = 2**21
"""Target size of one uncompressed chunk (2 MiB) for sequential reads."""
FLUSH_ATOMS = 2**18
"""Frames are buffered in memory and appended to the store in blocks of about this many atoms."""


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


@dataclass
class StoreData:
    """A whole store in memory; atoms of structure ``k`` are ``offsets[k]:offsets[k+1]``."""

    offsets: np.ndarray
    positions: np.ndarray
    numbers: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    atom_props: dict[str, np.ndarray]
    structure_props: dict[str, np.ndarray]


@dataclass
class NeighbourTable:
    """Edges of all structures; edges of structure ``k`` are ``offsets[k]:offsets[k+1]``.

    ``edge_index`` holds local atom indices (``[0]`` centre, ``[1]`` neighbour) and
    ``shifts`` integer lattice shifts: ``r_ij = x_j - x_i + shifts @ cell``.
    """

    offsets: np.ndarray
    edge_index: np.ndarray
    shifts: np.ndarray

    def structure(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(edge_index [2,e], shifts [e,3])`` of structure ``k`` as int64."""
        start, stop = self.offsets[k], self.offsets[k + 1]
        return (
            self.edge_index[:, start:stop].astype(np.int64),
            self.shifts[start:stop].astype(np.int64),
        )


def _chunks(shape: tuple[int, ...], dtype: DTypeLike) -> tuple[int, ...]:
    """Chunks of about ``CHUNK_BYTES`` along the first axis of an array of ``shape``."""
    row = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
    return (max(1, CHUNK_BYTES // max(row, 1)), *shape[1:])


def _shift_dtype(shifts: np.ndarray) -> np.dtype:
    """Smallest signed integer type holding ``shifts``."""
    largest = int(np.abs(shifts).max()) if shifts.size else 0
    for dtype in (np.int8, np.int16):
        if largest <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int32)


@dataclass(frozen=True)
class _Spec:
    level: str
    shape: tuple[int, ...]  # trailing shape (after the atom axis for atom properties)
    dtype: np.dtype


def _spec_of(name: str, level: str, value: np.ndarray) -> _Spec:
    dtype: np.dtype
    if np.issubdtype(value.dtype, np.floating):
        dtype = np.dtype(np.float64)
    elif np.issubdtype(value.dtype, np.integer):
        dtype = np.dtype(np.int64)
    else:
        raise ValueError(f"property '{name}' is not numeric ({value.dtype})")
    shape = value.shape[1:] if level == "atom" else value.shape
    return _Spec(level, tuple(shape), dtype)


def _schema(frame: Frame) -> dict[str, _Spec]:
    """Property specs of the first frame, which every later frame must follow."""
    schema = {n: _spec_of(n, "atom", np.asarray(v)) for n, v in frame.atom_props.items()}
    for name, value in frame.structure_props.items():
        if name in schema:
            raise ValueError(f"property '{name}' is both a per-atom and a per-structure property")
        schema[name] = _spec_of(name, "structure", np.asarray(value))
    return schema


def _frame_problem(frame: Frame, schema: dict[str, _Spec]) -> str | None:
    """Why ``frame`` cannot be stored under ``schema`` (``None`` when it can)."""
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
    for name, spec in schema.items():
        props = frame.atom_props if spec.level == "atom" else frame.structure_props
        if name not in props:
            return f"missing label '{name}'"
        value = np.asarray(props[name])
        expected = (n, *spec.shape) if spec.level == "atom" else spec.shape
        if value.shape != expected:
            atoms = f" for {n} atoms" if spec.level == "atom" else ""
            return f"'{name}' has shape {value.shape}, expected {expected}{atoms}"
        if not np.issubdtype(value.dtype, np.number):
            return f"'{name}' is not numeric ({value.dtype})"
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            return f"'{name}' is not finite"
    return None


class _Writer:
    """Appends frames to the arrays of a new store in blocks."""

    def __init__(self, root: zarr.Group, schema: dict[str, _Spec]) -> None:
        self.root = root
        self.schema = schema
        self.num_atoms = 0
        self.num_structures = 0
        self.elements: set[int] = set()
        self.buffers: dict[str, list[np.ndarray]] = {}
        self.buffered_atoms = 0
        tails: dict[str, tuple[tuple[int, ...], np.dtype]] = {
            "atoms/positions": ((3,), np.dtype(np.float64)),
            "atoms/numbers": ((), np.dtype(np.int64)),
            "structures/cell": ((3, 3), np.dtype(np.float64)),
            "structures/pbc": ((3,), np.dtype(bool)),
        }
        for name, spec in schema.items():
            group = "atoms" if spec.level == "atom" else "structures"
            tails[f"{group}/{name}"] = (spec.shape, spec.dtype)
        for name, (tail, dtype) in tails.items():
            shape = (0, *tail)
            root.create_array(name, shape=shape, dtype=dtype, chunks=_chunks(shape, dtype))
            self.buffers[name] = []
        offsets = root.create_array(
            "structures/offsets", shape=(1,), dtype=np.int64, chunks=_chunks((1,), np.int64)
        )
        offsets[:] = 0
        self.buffers["structures/offsets"] = []

    def add(self, frame: Frame) -> None:
        n = len(frame.numbers)
        buffers = self.buffers
        buffers["atoms/positions"].append(np.asarray(frame.positions, dtype=np.float64))
        buffers["atoms/numbers"].append(np.asarray(frame.numbers, dtype=np.int64))
        buffers["structures/cell"].append(np.asarray(frame.cell, dtype=np.float64)[None])
        buffers["structures/pbc"].append(np.asarray(frame.pbc, dtype=bool)[None])
        for name, spec in self.schema.items():
            if spec.level == "atom":
                buffers[f"atoms/{name}"].append(np.asarray(frame.atom_props[name], spec.dtype))
            else:
                value = np.asarray(frame.structure_props[name], spec.dtype)
                buffers[f"structures/{name}"].append(value[None])
        self.buffered_atoms += n
        self.num_atoms += n
        self.num_structures += 1
        buffers["structures/offsets"].append(np.array([self.num_atoms], dtype=np.int64))
        if self.buffered_atoms >= FLUSH_ATOMS:
            self.flush()

    def flush(self) -> None:
        for name, parts in self.buffers.items():
            if not parts:
                continue
            block = np.concatenate(parts)
            array = self.root[name]
            assert isinstance(array, zarr.Array)
            start = array.shape[0]
            array.resize((start + len(block), *array.shape[1:]))
            array[start:] = block
            if name == "atoms/numbers":
                self.elements.update(np.unique(block).tolist())
            parts.clear()
        self.buffered_atoms = 0


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_store(
    path: str | os.PathLike[str],
    frames: Iterable[Frame],
    *,
    source: dict[str, Any],
    units: dict[str, str],
    overwrite: bool = False,
    on_bad: Callable[[int, str], None] | None = None,
) -> AtomsStore:
    """Write ``frames`` to a new store at ``path`` and open it.

    The first frame fixes the properties (names, shapes) that every frame must have.
    ``units`` maps quantity and property names to unit strings (``"energy": "eV"``,
    ``"forces": "eV/Å"``...). A frame that cannot be stored (non-finite values, missing
    labels, wrong shapes) raises ``ValueError`` naming its index, or, when ``on_bad`` is
    given, is skipped after calling ``on_bad(index, problem)``. The store is written to
    ``<path>.tmp-<pid>`` and renamed at the end, so an interrupted write leaves nothing at
    ``path``; an existing ``path`` is replaced (only once the new store is complete) when
    ``overwrite`` is true, else ``FileExistsError`` is raised.
    """
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        root = zarr.open_group(tmp, mode="w", zarr_format=3)
        writer: _Writer | None = None
        for index, frame in enumerate(frames):
            if writer is None:
                writer = _Writer(root, _schema(frame))
            problem = _frame_problem(frame, writer.schema)
            if problem is None:
                writer.add(frame)
            elif on_bad is None:
                raise ValueError(f"frame {index}: {problem}")
            else:
                on_bad(index, problem)
        if writer is None or writer.num_structures == 0:
            raise ValueError("no frames to write")
        writer.flush()
        properties: dict[str, Any] = {
            name: {"level": spec.level, "shape": list(spec.shape), "unit": units.get(name, "")}
            for name, spec in writer.schema.items()
        }
        root.attrs.update(
            {
                "format": FORMAT,
                "schema_version": SCHEMA_VERSION,
                "num_structures": writer.num_structures,
                "num_atoms": writer.num_atoms,
                "elements": sorted(writer.elements),
                "properties": properties,
                "units": dict(units),
                "source": dict(source),
            }
        )
        root.attrs["complete"] = True
        if path.exists() or path.is_symlink():
            old = path.with_name(f"{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    return AtomsStore(path)


class AtomsStore:
    """A read-only physicsml store on disk (see the module docstring for its layout)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        hint = "create one with physicsml-ingest"
        if not self.path.exists():
            raise StoreError(f"{self.path} does not exist; {hint}")
        if not self.path.is_dir():
            raise StoreError(f"{self.path} is not a directory, so not a physicsml store; {hint}")
        if not (self.path / "zarr.json").is_file():
            raise StoreError(f"{self.path} is not a zarr v3 store (no zarr.json); {hint}")
        try:
            self._root = zarr.open_group(self.path, mode="r", zarr_format=3)
        except Exception as error:
            raise StoreError(f"{self.path} cannot be opened as a zarr group: {error}") from error
        attrs = self._root.attrs.asdict()
        if attrs.get("format") != FORMAT:
            raise StoreError(
                f"{self.path} is not a physicsml store (no 'format' attribute); {hint}"
            )
        if not attrs.get("complete"):
            raise StoreError(
                f"{self.path} is incomplete (its writer was interrupted); "
                "delete it and ingest again"
            )
        if attrs.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema_version {attrs.get('schema_version')}, this physicsml "
                f"reads version {SCHEMA_VERSION}; convert it with physicsml-ingest"
            )
        self.attrs: dict[str, Any] = attrs

    def __repr__(self) -> str:
        return (
            f"AtomsStore({str(self.path)!r}, structures={self.num_structures}, "
            f"atoms={self.num_atoms}, properties={list(self.properties)})"
        )

    @property
    def num_structures(self) -> int:
        return int(self.attrs["num_structures"])

    @property
    def num_atoms(self) -> int:
        return int(self.attrs["num_atoms"])

    @property
    def elements(self) -> list[int]:
        return [int(z) for z in self.attrs["elements"]]

    @property
    def properties(self) -> dict[str, dict[str, Any]]:
        return dict(self.attrs["properties"])

    def _read(self, name: str) -> np.ndarray:
        return _array(self._root, name)

    def load(self) -> StoreData:
        """Read the whole store into memory."""
        levels = {name: p["level"] for name, p in self.properties.items()}
        return StoreData(
            offsets=self._read("structures/offsets"),
            positions=self._read("atoms/positions"),
            numbers=self._read("atoms/numbers"),
            cell=self._read("structures/cell"),
            pbc=self._read("structures/pbc"),
            atom_props={n: self._read(f"atoms/{n}") for n, lv in levels.items() if lv == "atom"},
            structure_props={
                n: self._read(f"structures/{n}") for n, lv in levels.items() if lv == "structure"
            },
        )

    def neighbours(
        self,
        cut_off: float,
        pbc: Iterable[bool] | None = None,
        cell: Iterable[Iterable[float]] | np.ndarray | None = None,
        self_interaction: bool = False,
        progress: bool = True,
    ) -> NeighbourTable:
        """Neighbour lists of all structures, computed once and cached in the store.

        ``pbc``/``cell`` override every structure's own pbc ``(3,)`` and cell ``(3, 3)``
        when given. The first call for a set of parameters computes the table (with a
        progress bar when ``progress``) and writes it under ``neighbours/<key>``; processes
        calling at the same time wait for it and reuse it. A store that is not writable
        gets the table computed in memory, with a warning.
        """
        params: dict[str, Any] = {
            "cut_off": float(cut_off),
            "pbc": None if pbc is None else np.asarray(pbc, dtype=bool).reshape(3).tolist(),
            "cell": None if cell is None else np.asarray(cell, dtype=float).reshape(3, 3).tolist(),
            "self_interaction": bool(self_interaction),
            "algorithm_version": NEIGHBOUR_VERSION,
        }
        key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
        directory = self.path / "neighbours"
        cached = _read_table(directory / key)
        if cached is not None:
            return cached
        if not os.access(self.path, os.W_OK):
            log.warning("%s is not writable: neighbour lists are not cached", self.path)
            return self._compute_neighbours(params, progress)
        directory.mkdir(exist_ok=True)
        with _locked(directory / ".lock"):
            cached = _read_table(directory / key)
            if cached is not None:
                return cached
            zarr.open_group(directory, mode="a", zarr_format=3)
            table = self._compute_neighbours(params, progress)
            tmp = directory / f".tmp-{key}-{os.getpid()}"
            _remove(tmp)
            try:
                _write_table(tmp, table, params)
                os.replace(tmp, directory / key)
            except BaseException:
                _remove(tmp)
                raise
        return table

    def _compute_neighbours(self, params: dict[str, Any], progress: bool) -> NeighbourTable:
        offsets = self._read("structures/offsets")
        positions = self._read("atoms/positions")
        num = self.num_structures
        cells = self._read("structures/cell")
        pbcs = self._read("structures/pbc")
        if params["cell"] is not None:
            cells = np.broadcast_to(np.asarray(params["cell"], dtype=np.float64), (num, 3, 3))
        if params["pbc"] is not None:
            pbcs = np.broadcast_to(np.asarray(params["pbc"], dtype=bool), (num, 3))
        counts = np.zeros(num + 1, dtype=np.int64)
        edges: list[np.ndarray] = []
        shifts: list[np.ndarray] = []
        bar = tqdm(
            range(num),
            desc=f"neighbour lists (cut_off={params['cut_off']:g}) of {self.path.name}",
            unit=" structures",
            disable=not progress,
            mininterval=1.0,
            delay=2.0,
        )
        for k in bar:
            i, j, s = neighbour_list(
                positions[offsets[k] : offsets[k + 1]],
                cells[k],
                pbcs[k],
                params["cut_off"],
                params["self_interaction"],
            )
            counts[k + 1] = len(i)
            edges.append(np.stack([i, j]).astype(np.int32))
            shifts.append(s.astype(np.int32))
        edge_offsets = np.cumsum(counts)
        total = int(edge_offsets[-1])
        edge_index = np.empty((2, total), dtype=np.int32)
        all_shifts = np.empty((total, 3), dtype=np.int32)
        if edges:
            np.concatenate(edges, axis=1, out=edge_index)
            np.concatenate(shifts, out=all_shifts)
        log.info(
            "%s: %d edges for %d structures (%.1f per atom) with cut_off %g",
            self.path,
            total,
            num,
            total / max(self.num_atoms, 1),
            params["cut_off"],
        )
        return NeighbourTable(edge_offsets, edge_index, all_shifts.astype(_shift_dtype(all_shifts)))


def _array(group: zarr.Group, name: str) -> np.ndarray:
    array = group[name]
    if not isinstance(array, zarr.Array):
        raise StoreError(f"{group.store_path}/{name} is not an array")
    return np.asarray(array[...])


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (released when the process dies)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_table(path: Path) -> NeighbourTable | None:
    if not (path / "zarr.json").is_file():
        return None
    group = zarr.open_group(path, mode="r", zarr_format=3)
    if not group.attrs.get("complete"):
        return None
    arrays = {name: _array(group, name) for name in ("offsets", "edge_index", "shifts")}
    return NeighbourTable(**arrays)


def _write_table(path: Path, table: NeighbourTable, params: dict[str, Any]) -> None:
    group = zarr.open_group(path, mode="w", zarr_format=3)
    group.create_array("offsets", data=table.offsets, chunks=_chunks(table.offsets.shape, np.int64))
    rows = _chunks((table.edge_index.shape[1], 2), table.edge_index.dtype)[0]
    group.create_array("edge_index", data=table.edge_index, chunks=(2, rows))
    group.create_array(
        "shifts", data=table.shifts, chunks=_chunks(table.shifts.shape, table.shifts.dtype)
    )
    group.attrs.update({**params, "num_edges": int(table.offsets[-1])})
    group.attrs["complete"] = True
