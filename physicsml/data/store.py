"""Reading a store (layout in ``physicsml.data.store_format``): checks, arrays, neighbour lists."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from physicsml.data.files import zarr_array
from physicsml.data.integrity import CheckedArray, Manifest, read_manifest
from physicsml.data.neighbours import NeighbourTable, store_neighbours, table_manifests
from physicsml.data.store_format import FORMAT, SCHEMA_VERSION, Array, StoreError


@dataclass
class StoreData:
    """A store's arrays; atoms of structure ``k`` are ``offsets[k]:offsets[k+1]``.

    A label that a structure lacks reads as NaN; a string label (``config_type``) is a
    ``structure_props`` array of numpy's ``StringDType`` (its ``properties`` entry has
    ``dtype: string``), "" where a structure has none.

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


class AtomsStore:
    """A read-only physicsml store on disk (see ``physicsml.data.store_format``).

    Opening it checks that every chunk recorded in the manifests of the store and of its
    neighbour-list caches exists with its recorded size (``StoreError`` otherwise), so that
    no chunk reads as zarr's fill value; ``verify`` checks their hashes.
    """

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
        if attrs.get("schema_version") == 1:
            source = attrs.get("source")
            origin = source.get("path") if isinstance(source, dict) else None
            raise StoreError(
                f"{self.path} was written by an older physicsml (schema_version 1, no manifest "
                "of its chunks to check them against): ingest it again, physicsml-ingest "
                f"--overwrite {origin or 'SOURCE'} {self.path}"
            )
        if attrs.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema_version {attrs.get('schema_version')}, this physicsml "
                f"reads version {SCHEMA_VERSION}; convert it with physicsml-ingest"
            )
        self.attrs: dict[str, Any] = attrs
        self.manifest: Manifest = read_manifest(self.path, self.path)
        for manifest in self.manifests():
            manifest.check_files()

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

    def content_hash(self) -> str:
        """SHA-256 (hex) of the store's content: the hashes of its arrays' chunks and its
        attributes but ``source`` (path, time). Two stores written from the same frames by
        the same physicsml have the same hash; neighbour-list caches are not part of it."""
        attrs = {k: v for k, v in self.attrs.items() if k != "source"}
        content = {"attributes": attrs, "arrays": self.manifest.arrays}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()

    def verify(self, force: bool = False, progress: bool = False) -> int:
        """Check the hash of every chunk of the store and of its neighbour-list caches against
        their manifests; ``StoreError`` naming the first that differs.

        A verified store is remembered (``verified.json``) until one of its files changes, so
        only the first call hashes, unless ``force``. Returns the number of files hashed.
        """
        return sum(manifest.verify(force, progress) for manifest in self.manifests())

    def manifests(self) -> list[Manifest]:
        """The manifest of the store and those of its neighbour-list caches."""
        return [self.manifest, *table_manifests(self.path)]

    def _array(self, name: str) -> CheckedArray:
        return self.manifest.checked(zarr_array(self._root, name), name)

    def _read(self, name: str) -> np.ndarray:
        return np.asarray(self._array(name)[...])

    def load(self) -> StoreData:
        """Read the whole store into memory."""
        return self._data(self._read)

    def open_arrays(self) -> StoreData:
        """The store's arrays read on demand (only ``offsets`` in memory): zarr arrays whose
        read errors are ``StoreError`` naming the store, array and chunk (``CheckedArray``)."""
        return self._data(self._array)

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
        return store_neighbours(self, cut_off, pbc, cell, self_interaction, progress, lazy)
