"""Writing a store: frames validated, buffered and appended in blocks, renamed into place."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from physicsml.data.files import staged, uninterrupted
from physicsml.data.integrity import write_manifest
from physicsml.data.store import AtomsStore
from physicsml.data.store_format import (
    FLUSH_ATOMS,
    FORMAT,
    SCHEMA_VERSION,
    Frame,
    PropertySpec,
    chunks,
    frame_problem,
    property_specs,
)


class _Writer:
    """Appends frames to the arrays of a new store in blocks."""

    def __init__(self, root: zarr.Group, specs: dict[str, PropertySpec]) -> None:
        self.root = root
        self.specs = specs
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
        for name, spec in specs.items():
            group = "atoms" if spec.level == "atom" else "structures"
            tails[f"{group}/{name}"] = (spec.shape, spec.dtype)
        for name, (tail, dtype) in tails.items():
            shape = (0, *tail)
            root.create_array(name, shape=shape, dtype=dtype, chunks=chunks(shape, dtype))
            self.buffers[name] = []
        offsets = root.create_array(
            "structures/offsets", shape=(1,), dtype=np.int64, chunks=chunks((1,), np.int64)
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
        for name, spec in self.specs.items():
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
        with uninterrupted():
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
    with staged(path) as tmp:
        with uninterrupted():  # zarr writes, finished before a signal stops the write
            root = zarr.open_group(tmp, mode="w", zarr_format=3)
        writer: _Writer | None = None
        for index, frame in enumerate(frames):
            if writer is None:
                with uninterrupted():
                    writer = _Writer(root, property_specs(frame))
            problem = frame_problem(frame, writer.specs)
            if problem is None:
                writer.add(frame)
            elif on_bad is None:
                raise ValueError(f"frame {index}: {problem}")
            else:
                on_bad(index, problem)
        if writer is None or writer.num_structures == 0:
            raise ValueError("no frames to write")
        with uninterrupted():
            writer.flush()
            properties: dict[str, Any] = {
                name: {"level": spec.level, "shape": list(spec.shape), "unit": units.get(name, "")}
                for name, spec in writer.specs.items()
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
            write_manifest(tmp)
    return AtomsStore(path)
