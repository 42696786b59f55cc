"""Writing a store: frames validated, buffered and appended in blocks, renamed into place."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from physicsml.data.files import check_interrupted, staged, widen
from physicsml.data.integrity import write_manifest
from physicsml.data.store import AtomsStore
from physicsml.data.store_format import (
    FLUSH_ATOMS,
    FORMAT,
    SCHEMA_VERSION,
    STRING,
    Frame,
    PropertySpec,
    chunks,
    frame_problem,
    new_property_specs,
)


class _Writer:
    """Appends frames to the arrays of a new store (a group at ``path``) in blocks.

    A property that a frame lacks is stored as missing (``PropertySpec.missing``; an integer
    property becomes float64 to hold NaN); one that first appears in a later frame gets a
    column whose earlier rows are missing.
    """

    def __init__(self, root: zarr.Group, path: Path) -> None:
        self.root = root
        self.path = path
        self.specs: dict[str, PropertySpec] = {}
        self.missing: dict[str, int] = {}
        """Frames that lack each property, by name (only names some frame lacks)."""
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
        for name, (tail, dtype) in tails.items():
            self._create(name, tail, dtype)
        offsets = root.create_array(
            "structures/offsets", shape=(1,), dtype=np.int64, chunks=chunks((1,), np.int64)
        )
        offsets[:] = 0
        self.buffers["structures/offsets"] = []

    def _create(self, name: str, tail: tuple[int, ...], dtype: np.dtype) -> None:
        shape = (0, *tail)
        self.root.create_array(name, shape=shape, dtype=dtype, chunks=chunks(shape, dtype))
        self.buffers[name] = []

    @staticmethod
    def _key(name: str, spec: PropertySpec) -> str:
        return f"{'atoms' if spec.level == 'atom' else 'structures'}/{name}"

    def add_properties(self, specs: dict[str, PropertySpec]) -> None:
        """Columns for new properties, missing in the frames added so far."""
        for name, spec in specs.items():
            self.specs[name] = spec
            self._create(self._key(name, spec), spec.shape, spec.dtype)
            if self.num_structures:
                rows = self.num_atoms if spec.level == "atom" else self.num_structures
                self.buffers[self._key(name, spec)].append(spec.missing(rows))
                self.missing[name] = self.num_structures

    def _to_float(self, name: str) -> None:
        """Store the integer property ``name`` as float64 from now on (to hold NaN)."""
        spec = self.specs[name]
        key = self._key(name, spec)
        widen(self.root, self.path, key, np.dtype(np.float64))
        self.buffers[key] = [part.astype(np.float64) for part in self.buffers[key]]
        self.specs[name] = PropertySpec(spec.level, spec.shape, np.dtype(np.float64))

    def add(self, frame: Frame) -> None:
        n = len(frame.numbers)
        buffers = self.buffers
        buffers["atoms/positions"].append(np.asarray(frame.positions, dtype=np.float64))
        buffers["atoms/numbers"].append(np.asarray(frame.numbers, dtype=np.int64))
        buffers["structures/cell"].append(np.asarray(frame.cell, dtype=np.float64)[None])
        buffers["structures/pbc"].append(np.asarray(frame.pbc, dtype=bool)[None])
        for name in list(self.specs):
            props = frame.atom_props if self.specs[name].level == "atom" else frame.structure_props
            if name in props:
                spec = self.specs[name]
                value = np.asarray(props[name], spec.dtype)
                value = value if spec.level == "atom" else value[None]
            else:
                if self.specs[name].dtype.kind in "iu":
                    self._to_float(name)
                spec = self.specs[name]
                value = spec.missing(n if spec.level == "atom" else 1)
                self.missing[name] = self.missing.get(name, 0) + 1
            buffers[self._key(name, spec)].append(value)
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

    def properties(self, units: dict[str, str]) -> dict[str, dict[str, Any]]:
        """The ``properties`` attribute: level, shape, unit (and ``dtype`` of strings)."""
        properties: dict[str, dict[str, Any]] = {}
        for name, spec in self.specs.items():
            entry: dict[str, Any] = {"level": spec.level, "shape": list(spec.shape)}
            entry["unit"] = units.get(name, "")
            if spec.dtype == STRING:
                entry["dtype"] = "string"
            properties[name] = entry
        return properties


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

    A store column holds each property (name, level, trailing shape) that any frame has;
    frames without it hold NaN (an empty string for string labels), counted in the
    ``missing`` attribute. ``units`` maps quantity and property names to unit strings
    (``"energy": "eV"``, ``"forces": "eV/Å"``...). A frame that cannot be stored (non-finite
    values, wrong shapes) raises ``ValueError`` naming its index, or, when ``on_bad`` is
    given, is skipped after calling ``on_bad(index, problem)``. The store is written to
    ``<path>.tmp-<pid>`` and renamed at the end, so an interrupted write (``Interrupted``,
    checked between frames and before the rename) leaves nothing at ``path``; an existing
    ``path`` is replaced (only once the new store is complete) when ``overwrite`` is true,
    else ``FileExistsError`` is raised.
    """
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    with staged(path) as tmp:
        check_interrupted()
        root = zarr.open_group(tmp, mode="w", zarr_format=3)
        writer = _Writer(root, tmp)
        for index, frame in enumerate(frames):
            check_interrupted()
            try:
                new = new_property_specs(frame, writer.specs)
                problem = frame_problem(frame, writer.specs | new)
            except ValueError as error:
                if writer.num_structures == 0:  # the first frame: the input's own labels
                    raise
                new, problem = {}, str(error)
            if problem is None:
                writer.add_properties(new)
                writer.add(frame)
            elif on_bad is None:
                raise ValueError(f"frame {index}: {problem}")
            else:
                on_bad(index, problem)
        if writer.num_structures == 0:
            raise ValueError("no frames to write")
        writer.flush()
        root.attrs.update(
            {
                "format": FORMAT,
                "schema_version": SCHEMA_VERSION,
                "num_structures": writer.num_structures,
                "num_atoms": writer.num_atoms,
                "elements": sorted(writer.elements),
                "properties": writer.properties(units),
                "units": dict(units),
                "source": dict(source),
            }
        )
        if writer.missing:
            root.attrs["missing"] = dict(sorted(writer.missing.items()))
        root.attrs["complete"] = True
        write_manifest(tmp)
        check_interrupted()  # the last check: from here on the store is complete
    return AtomsStore(path)
