"""Reading a store (layout in ``physicsml.data.store_format``): checks, arrays, neighbour lists."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from physicsml.data.files import zarr_array
from physicsml.data.neighbours import NeighbourTable, store_neighbours
from physicsml.data.store_format import FORMAT, SCHEMA_VERSION, Array, StoreError


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


class AtomsStore:
    """A read-only physicsml store on disk (see ``physicsml.data.store_format``)."""

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
        return np.asarray(zarr_array(self._root, name)[...])

    def load(self) -> StoreData:
        """Read the whole store into memory."""
        return self._data(self._read)

    def open_arrays(self) -> StoreData:
        """The store's arrays as zarr arrays read on demand (only ``offsets`` in memory)."""
        return self._data(partial(zarr_array, self._root))

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
