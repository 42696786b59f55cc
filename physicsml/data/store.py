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
from functools import partial
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import zarr
from numpy.typing import DTypeLike
from tqdm.auto import tqdm

from physicsml.data.neighbours import molecule_neighbour_lists, neighbour_list

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


Array: TypeAlias = Any
"""A ``numpy.ndarray``, or a ``zarr.Array`` read on demand: both index alike (integer
arrays select along one axis), and ``numpy.asarray`` of a selection is an ndarray."""


@dataclass
class StoreData:
    """A store's arrays; atoms of structure ``k`` are ``offsets[k]:offsets[k+1]``.

    ``AtomsStore.load`` reads them all into memory; ``AtomsStore.open_arrays`` leaves all
    but ``offsets`` on disk, read on demand.
    """

    offsets: np.ndarray
    positions: Array
    numbers: Array
    cell: Array
    pbc: Array
    atom_props: dict[str, Array]
    structure_props: dict[str, Array]


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


def ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + c)`` for every ``(s, c)``."""
    ends = np.cumsum(counts)
    return np.repeat(starts - (ends - counts), counts) + np.arange(
        int(ends[-1]) if len(ends) else 0
    )


def structure_blocks(offsets: np.ndarray, atoms: int) -> list[tuple[int, int]]:
    """Consecutive ranges ``(k0, k1)`` of structures holding about ``atoms`` atoms each."""
    bounds = np.searchsorted(offsets, np.arange(0, int(offsets[-1]), atoms), side="right") - 1
    starts = np.unique(np.append(bounds, 0))
    return list(zip(starts.tolist(), [*starts[1:].tolist(), len(offsets) - 1], strict=True))


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
        if value.dtype.kind not in "iufc":  # not np.issubdtype: this runs for every frame
            return f"'{name}' is not numeric ({value.dtype})"
        if value.dtype.kind == "f" and not np.isfinite(value).all():
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
        return np.asarray(_zarr_array(self._root, name)[...])

    def load(self) -> StoreData:
        """Read the whole store into memory."""
        return self._data(self._read)

    def open_arrays(self) -> StoreData:
        """The store's arrays as zarr arrays read on demand (only ``offsets`` in memory)."""
        return self._data(partial(_zarr_array, self._root))

    def _data(self, read: Callable[[str], Array]) -> StoreData:
        levels = {name: p["level"] for name, p in self.properties.items()}
        return StoreData(
            offsets=self._read("structures/offsets"),
            positions=read("atoms/positions"),
            numbers=read("atoms/numbers"),
            cell=read("structures/cell"),
            pbc=read("structures/pbc"),
            atom_props={n: read(f"atoms/{n}") for n, lv in levels.items() if lv == "atom"},
            structure_props={
                n: read(f"structures/{n}") for n, lv in levels.items() if lv == "structure"
            },
        )

    def neighbours(
        self,
        cut_off: float,
        pbc: Iterable[bool] | None = None,
        cell: Iterable[Iterable[float]] | np.ndarray | None = None,
        self_interaction: bool = False,
        progress: bool = True,
        lazy: bool = False,
    ) -> NeighbourTable:
        """Neighbour lists of all structures, computed once and cached in the store.

        ``pbc``/``cell`` override every structure's own pbc ``(3,)`` and cell ``(3, 3)``
        when given. The first call for a set of parameters computes the table block by block
        (with a progress bar when ``progress``) into ``neighbours/<key>``; processes calling
        at the same time wait for it and reuse it. ``lazy`` returns the cached edge arrays as
        zarr arrays read on demand instead of reading them into memory. A store that is not
        writable gets the table computed in memory, with a warning.
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
        cached = _read_table(directory / key, lazy)
        if cached is not None:
            return cached
        if not os.access(self.path, os.W_OK):
            log.warning("%s is not writable: neighbour lists are not cached", self.path)
            return _concatenate(self._neighbour_blocks(params, progress))
        directory.mkdir(exist_ok=True)
        with _locked(directory / ".lock"):
            if not _complete(directory / key):
                zarr.open_group(directory, mode="a", zarr_format=3)
                tmp = directory / f".tmp-{key}-{os.getpid()}"
                _remove(tmp)
                try:
                    _write_table(tmp, self._neighbour_blocks(params, progress), params)
                    os.replace(tmp, directory / key)
                except BaseException:
                    _remove(tmp)
                    raise
                log.info(
                    "%s: neighbour lists with cut_off %g cached in %s",
                    self.path,
                    params["cut_off"],
                    directory / key,
                )
        table = _read_table(directory / key, lazy)
        assert table is not None
        return table

    def _neighbour_blocks(self, params: dict[str, Any], progress: bool) -> Iterator[_EdgeBlock]:
        """Edges of consecutive blocks of structures, read from the store block by block."""
        offsets = self._read("structures/offsets")
        positions = _zarr_array(self._root, "atoms/positions")
        cells = _zarr_array(self._root, "structures/cell")
        pbcs = _zarr_array(self._root, "structures/pbc")
        bar = tqdm(
            total=self.num_structures,
            desc=f"neighbour lists (cut_off={params['cut_off']:g}) of {self.path.name}",
            unit=" structures",
            disable=not progress,
            mininterval=1.0,
            delay=2.0,
        )
        for k0, k1 in structure_blocks(offsets, FLUSH_ATOMS):
            block = np.asarray(positions[offsets[k0] : offsets[k1]])
            local = offsets[k0 : k1 + 1] - offsets[k0]
            block_cells = np.asarray(cells[k0:k1])
            block_pbcs = np.asarray(pbcs[k0:k1])
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


_EdgeBlock = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Edge counts ``[s]``, ``edge_index [2,e]`` int32 and ``shifts [e,3]`` int32 of a block of
structures."""


def _zarr_array(group: zarr.Group, name: str) -> zarr.Array:
    array = group[name]
    if not isinstance(array, zarr.Array):
        raise StoreError(f"{group.store_path}/{name} is not an array")
    return array


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (released when the process dies)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _complete(path: Path) -> bool:
    if not (path / "zarr.json").is_file():
        return False
    return bool(zarr.open_group(path, mode="r", zarr_format=3).attrs.get("complete"))


def _read_table(path: Path, lazy: bool) -> NeighbourTable | None:
    if not _complete(path):
        return None
    group = zarr.open_group(path, mode="r", zarr_format=3)
    edge_index, shifts = (_zarr_array(group, name) for name in ("edge_index", "shifts"))
    return NeighbourTable(
        offsets=np.asarray(_zarr_array(group, "offsets")[...]),
        edge_index=edge_index if lazy else np.asarray(edge_index[...]),
        shifts=shifts if lazy else np.asarray(shifts[...]),
    )


def _concatenate(blocks: Iterable[_EdgeBlock]) -> NeighbourTable:
    """A neighbour table in memory from its blocks."""
    counts, edges, shifts = zip(*blocks, strict=True)
    all_shifts = np.concatenate(shifts)
    return NeighbourTable(
        np.concatenate([[0], np.cumsum(np.concatenate(counts))]),
        np.concatenate(edges, axis=1),
        all_shifts.astype(_shift_dtype(all_shifts)),
    )


def _write_table(path: Path, blocks: Iterable[_EdgeBlock], params: dict[str, Any]) -> None:
    """Append the edge blocks to a new zarr group, shifts in the smallest dtype that fits."""
    group = zarr.open_group(path, mode="w", zarr_format=3)
    rows = _chunks((0, 2), np.int32)[0]
    edge_index = group.create_array("edge_index", shape=(2, 0), dtype=np.int32, chunks=(2, rows))
    dtype = np.dtype(np.int8)
    shifts = group.create_array("shifts", shape=(0, 3), dtype=dtype, chunks=_chunks((0, 3), dtype))
    counts = []
    for block_counts, block_edges, block_shifts in blocks:
        counts.append(block_counts)
        start = edge_index.shape[1]
        edge_index.resize((2, start + block_edges.shape[1]))
        edge_index[:, start:] = block_edges
        if _shift_dtype(block_shifts).itemsize > shifts.dtype.itemsize:
            shifts = _widen(group, path, _shift_dtype(block_shifts))
        shifts.resize((start + len(block_shifts), 3))
        shifts[start:] = block_shifts
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(counts))])
    group.create_array("offsets", data=offsets, chunks=_chunks(offsets.shape, np.int64))
    group.attrs.update({**params, "num_edges": int(offsets[-1])})
    group.attrs["complete"] = True


def _widen(group: zarr.Group, path: Path, dtype: np.dtype) -> zarr.Array:
    """Rewrite ``shifts`` of ``group`` (a folder at ``path``) in the wider ``dtype``."""
    old = _zarr_array(group, "shifts")
    wide = group.create_array(
        "shifts-wide", shape=old.shape, dtype=dtype, chunks=_chunks(old.shape, dtype)
    )
    for start in range(0, old.shape[0], wide.chunks[0]):
        wide[start : start + wide.chunks[0]] = old[start : start + wide.chunks[0]]
    shutil.rmtree(path / "shifts")
    os.replace(path / "shifts-wide", path / "shifts")
    return _zarr_array(group, "shifts")
