"""Pre-batching: batches collated once per composition, held in memory or cached on disk.

A *composition* is the split of one loader's structures into batches. Training compositions
are the batches the plain loader would make in epoch ``E`` (``EpochSampler``'s order for
``seed + E``, cut into ``batch_size`` chunks), so pre-batching changes neither which
structures an epoch sees nor how they are grouped on the epochs where a composition is
drawn. Between re-draws the same batches are served in a new order each epoch. Evaluation
compositions are the structures in order, cut into batches: exact, without padding.

On disk, a composition is a zarr group (no pickles) of the concatenated per-atom, per-edge
and per-structure arrays plus batch offsets, under ``<pre_batch_dir>/<key>/<name>`` where
``key`` hashes the data and every parameter that changes the batches.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler

from physicsml.data.dataset import StructureDataset
from physicsml.data.files import complete, locked, remove, staged, zarr_array
from physicsml.data.graph import LEVELS, Structures, assemble, level_of
from physicsml.data.offsets import offsets_of, ranges, structure_blocks
from physicsml.data.sampler import EpochSampler
from physicsml.data.store import AtomsStore

log = logging.getLogger(__name__)

PREBATCH_VERSION = 1
"""Bump when the on-disk layout or the batching changes so that old caches are not reused."""
CHUNK_BYTES = 2**18
"""Target size of one on-disk chunk (256 KiB): a batch read touches one or two chunks."""
WRITE_ATOMS = 2**16
"""Atoms gathered and packed at a time while writing a composition: this, not the number of
structures, sets the memory of the run that builds it."""

Layout = list[tuple[str, int, list[int], str]]
"""Columns of a packed level: ``(name, first column, trailing shape, numpy dtype)``."""
EDGE_DTYPE = np.dtype(np.int32)
"""On disk the arrays of a level are packed as columns of one array (one read per level):
float64 for atoms and structures (atomic numbers, counts and pbc are exact in it), int32
for edges."""
BatchKey = tuple[str, int]
"""``(composition name, batch number)``: what a pre-batched loader's sampler yields."""


def batch_slices(parts: Structures, batch_size: int) -> dict[str, np.ndarray]:
    """Offsets ``[B+1]`` of every batch into the structure, atom and edge axes of ``parts``."""
    graphs = np.append(np.arange(0, len(parts["counts"]), batch_size), len(parts["counts"]))
    return {
        "graphs": graphs,
        "atoms": offsets_of(parts["counts"])[graphs],
        "edges": offsets_of(parts["edge_counts"])[graphs],
    }


def _select(parts: Structures, slices: dict[str, np.ndarray], b: int) -> Structures:
    return {
        name: value[slices[level_of(name)][b] : slices[level_of(name)][b + 1]]
        for name, value in parts.items()
    }


class BatchPlan:
    """Which structures make which batches, epoch by epoch, for one rank of one loader.

    Training (``shuffle``): the composition used in epoch ``e`` is drawn in epoch
    ``e - e % rebatch_every`` (``0`` when ``rebatch_every == 0``, drawn once) and served in
    its drawn order that epoch, in an order seeded by ``(seed, e)`` on the other epochs.
    Evaluation: one composition, structures in order, batches in order.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        rebatch_every: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if rebatch_every < 0:
            raise ValueError(f"rebatch_every_n_epochs must be >= 0, got {rebatch_every}")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rebatch_every = rebatch_every if shuffle else 0
        self.sampler = EpochSampler(num_items, shuffle, seed, rank, world_size, even=shuffle)
        self.num_batches = -(-len(self.sampler) // batch_size)

    def drawn_in(self, epoch: int) -> int:
        """The epoch whose order defines the composition served in ``epoch``."""
        return epoch - epoch % self.rebatch_every if self.rebatch_every else 0

    def name(self, epoch: int) -> str:
        """Name of the composition served in ``epoch`` (its on-disk group)."""
        s = self.sampler
        kind = f"train-e{self.drawn_in(epoch)}" if self.shuffle else "eval"
        return f"{kind}-r{s.rank}of{s.world_size}"

    def items(self, epoch: int) -> np.ndarray:
        """Dataset items of the composition served in ``epoch``, in batch order."""
        self.sampler.set_epoch(self.drawn_in(epoch))
        return self.sampler.order()

    def batch_order(self, epoch: int) -> np.ndarray:
        """Order in which the batches of the composition are served in ``epoch``."""
        if not self.shuffle or epoch == self.drawn_in(epoch):
            return np.arange(self.num_batches)
        return np.random.default_rng((self.seed, epoch)).permutation(self.num_batches)


class PrebatchSampler(DistributedSampler):
    """Yields ``(composition, batch)`` keys of one epoch, preparing the composition first.

    It shards across ranks itself (through its ``BatchPlan``); it derives from
    ``DistributedSampler`` only so that Lightning does not wrap it in another one when
    ``use_distributed_sampler`` is on (``physicsml.train`` turns it off).
    """

    def __init__(self, plan: BatchPlan, prepare: Callable[[str, np.ndarray], None]) -> None:
        super().__init__(
            range(plan.num_batches),  # type: ignore[arg-type]
            num_replicas=1,
            rank=0,
            shuffle=plan.shuffle,
            seed=plan.seed,
        )
        self.plan = plan
        self.prepare = prepare

    def __iter__(self) -> Iterator[BatchKey]:  # type: ignore[override]
        name = self.plan.name(self.epoch)
        self.prepare(name, self.plan.items(self.epoch))
        return ((name, int(b)) for b in self.plan.batch_order(self.epoch))

    def __len__(self) -> int:
        return self.plan.num_batches


class InMemoryBatches(Dataset[dict[str, Tensor]]):
    """The collated batches of the current composition, as tensors (use ``num_workers=0``)."""

    def __init__(
        self,
        dataset: StructureDataset,
        batch_size: int,
        lookup: np.ndarray,
        num_elements: int,
        dtype: torch.dtype,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.collate_args = (lookup, num_elements, dtype)
        self.name: str | None = None
        self.batches: list[dict[str, Tensor]] = []

    def prepare(self, name: str, items: np.ndarray) -> None:
        """Collate composition ``name`` (structures ``items`` in batch order) unless held."""
        if name == self.name:
            return
        self.batches = []  # free the previous composition first
        parts = self.dataset.gather(items)
        slices = batch_slices(parts, self.batch_size)
        self.batches = [
            assemble(_select(parts, slices, b), *self.collate_args)
            for b in range(len(slices["graphs"]) - 1)
        ]
        self.name = name

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, key: BatchKey) -> dict[str, Tensor]:
        name, b = key
        if name != self.name:
            raise KeyError(f"composition {name} is not prepared (holding {self.name})")
        # new tensor objects (same memory), so that requires_grad_ or .grad do not stick
        return {key: value.detach() for key, value in self.batches[b].items()}


def _identity(store: AtomsStore) -> dict[str, Any]:
    source = store.attrs.get("source", {})
    return {
        "store": str(store.path.resolve()),
        "sha256": source.get("sha256"),
        "created": source.get("created"),
        "num_structures": store.num_structures,
        "num_atoms": store.num_atoms,
    }


def cache_key(stores: list[AtomsStore], params: dict[str, Any]) -> str:
    """Folder name of a pre-batch cache of the concatenation of ``stores``: the first store's
    name (``+<n>`` more) and a hash of the data and the parameters."""
    # one store: the key that single-store versions gave, so that their caches stay valid
    data = _identity(stores[0]) if len(stores) == 1 else {"stores": list(map(_identity, stores))}
    identity = {"version": PREBATCH_VERSION, **data, **params}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    more = f"+{len(stores) - 1}" if len(stores) > 1 else ""
    return f"{stores[0].path.stem}{more}-{digest}"


def _chunk_rows(tail: tuple[int, ...], dtype: np.dtype) -> int:
    row = int(np.prod(tail, dtype=np.int64)) * dtype.itemsize
    return max(1, CHUNK_BYTES // max(row, 1))


def write_batches(
    path: Path, dataset: StructureDataset, items: np.ndarray, batch_size: int
) -> None:
    """Write the composition ``items`` (cut into ``batch_size`` batches) as a zarr group.

    Built block by block into ``<name>.tmp-<pid>`` next to ``path`` and renamed at the end;
    concurrent writers are serialised by a lock on ``<path>.lock`` and the later ones reuse
    the first one's result.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path.with_name(f"{path.name}.lock")):
        if complete(path):
            return
        with staged(path) as tmp:
            root = zarr.open_group(tmp, mode="w", zarr_format=3)
            mean_atoms = dataset.data.offsets[-1] / max(len(dataset.data.offsets) - 1, 1)
            block = max(1, int(WRITE_ATOMS / max(mean_atoms, 1)) // batch_size) * batch_size
            counts, edge_counts = [], []
            layout: dict[str, Layout] = {}
            for parts in _blocks_in_order(dataset, items, block, tmp / "staging"):
                counts.append(parts["counts"])
                edge_counts.append(parts["edge_counts"])
                for level in LEVELS:
                    packed, layout[level] = _pack(parts, level)
                    _append(root, level, packed)
            remove(tmp / "staging")
            slices = batch_slices(
                {"counts": np.concatenate(counts), "edge_counts": np.concatenate(edge_counts)},
                batch_size,
            )
            for level, offsets in slices.items():
                root.create_array(f"batches/{level}", data=offsets, compressors=None)
            root.attrs.update(
                {"num_batches": len(offsets) - 1, "batch_size": batch_size, "layout": layout}
            )
            root.attrs["complete"] = True
    log.info("pre-batched %d structures into %s", len(items), path)


def _blocks_in_order(
    dataset: StructureDataset, items: np.ndarray, block: int, staging: Path
) -> Iterator[Structures]:
    """``dataset.gather`` of ``items[start : start + block]`` for every ``start``, in order.

    A dataset whose arrays are on disk (zarr) is not read at random, which would decompress
    the whole store for every block of a shuffled composition, but in two passes: the items
    are gathered in store order, block by block, and appended to one staging file per output
    block; then each output block is read back and put in composition order.
    """
    if isinstance(dataset.data.positions, np.ndarray):
        for start in range(0, len(items), block):
            yield dataset.gather(items[start : start + block])
        return
    staging.mkdir()
    by_key = np.argsort(dataset.indices[items], kind="stable")  # positions in items
    counts = (
        dataset.data.offsets[dataset.indices[items] + 1]
        - dataset.data.offsets[dataset.indices[items]]
    )
    layout: dict[str, Layout] = {}
    for p0, p1 in structure_blocks(offsets_of(counts[by_key]), WRITE_ATOMS):
        positions = by_key[p0:p1]
        parts = dataset.gather(items[positions])
        for b in np.unique(positions // block):
            chosen = np.flatnonzero(positions // block == b)
            with open(staging / f"{b}.positions", "ab") as handle:
                handle.write(positions[chosen].tobytes())
            for level in LEVELS:
                packed, layout[level] = _pack(_take(parts, chosen), level)
                with open(staging / f"{b}.{level}", "ab") as handle:
                    handle.write(packed.tobytes())
    for b in range(-(-len(items) // block)):
        parts = {}
        for level in LEVELS:
            dtype = EDGE_DTYPE if level == "edges" else np.dtype(np.float64)
            packed = np.fromfile(staging / f"{b}.{level}", dtype=dtype)
            width = sum(int(np.prod(shape, dtype=np.int64)) for _, _, shape, _ in layout[level])
            parts.update(_unpack(packed.reshape(-1, width), layout[level]))
        order = np.argsort(np.fromfile(staging / f"{b}.positions", dtype=np.int64))
        yield _take(parts, order)
        for name in ("positions", *LEVELS):
            (staging / f"{b}.{name}").unlink()


def _take(parts: Structures, structures: np.ndarray) -> Structures:
    """The structures ``structures`` of ``parts``, in that order."""
    rows = {
        "atoms": ranges(offsets_of(parts["counts"])[structures], parts["counts"][structures]),
        "edges": ranges(
            offsets_of(parts["edge_counts"])[structures], parts["edge_counts"][structures]
        ),
        "graphs": structures,
    }
    return {name: value[rows[level_of(name)]] for name, value in parts.items()}


def _pack(parts: Structures, level: str) -> tuple[np.ndarray, Layout]:
    """The arrays of ``level`` as columns of one array, and their ``(name, column, shape,
    dtype)`` layout."""
    names = [n for n in parts if level_of(n) == level]
    dtype = EDGE_DTYPE if level == "edges" else np.dtype(np.float64)
    columns = [parts[n].reshape(len(parts[n]), -1) for n in names]
    starts = np.cumsum([0] + [c.shape[1] for c in columns])
    layout = [
        (n, int(c), list(parts[n].shape[1:]), parts[n].dtype.str)
        for n, c in zip(names, starts, strict=False)
    ]
    return np.concatenate(columns, axis=1, dtype=dtype), layout


def _unpack(packed: np.ndarray, layout: Layout) -> Structures:
    out = {}
    for name, column, shape, dtype in layout:
        width = int(np.prod(shape, dtype=np.int64))
        block = packed[:, column : column + width]
        out[name] = block.reshape(len(packed), *shape).astype(np.dtype(dtype))
    return out


def _append(root: zarr.Group, name: str, value: np.ndarray) -> None:
    if name not in root:
        root.create_array(
            name,
            shape=(0, value.shape[1]),
            dtype=value.dtype,
            chunks=(_chunk_rows(value.shape[1:], value.dtype), value.shape[1]),
            compressors=None,
        )
    array = root[name]
    assert isinstance(array, zarr.Array)
    start = array.shape[0]
    array.resize((start + len(value), value.shape[1]))
    array[start:] = value


@dataclass
class _OpenComposition:
    arrays: dict[str, zarr.Array]
    slices: dict[str, np.ndarray]
    layout: dict[str, Layout]


class OnDiskBatches(Dataset[dict[str, Tensor]]):
    """Reads batches ``(composition, b)`` from the zarr groups under ``directory``.

    Holds only the batch offsets of the compositions it has opened, so its memory does not
    grow with the number of structures; safe in DataLoader workers (opened lazily).
    """

    def __init__(
        self, directory: Path, lookup: np.ndarray, num_elements: int, dtype: torch.dtype
    ) -> None:
        self.directory = directory
        self.collate_args = (lookup, num_elements, dtype)
        self._open: dict[str, _OpenComposition] = {}

    def _group(self, name: str) -> _OpenComposition:
        if name not in self._open:
            self._open.clear()  # one composition at a time
            root = zarr.open_group(self.directory / name, mode="r", zarr_format=3)
            self._open[name] = _OpenComposition(
                arrays={level: zarr_array(root, level) for level in LEVELS},
                slices={
                    level: np.asarray(zarr_array(root, f"batches/{level}")[...]) for level in LEVELS
                },
                layout=root.attrs["layout"],  # type: ignore[arg-type]
            )
        return self._open[name]

    def __getitem__(self, key: BatchKey) -> dict[str, Tensor]:
        name, b = key
        group = self._group(name)
        parts: Structures = {}
        for level in LEVELS:
            start, stop = group.slices[level][b : b + 2]
            rows = np.asarray(group.arrays[level][start:stop])
            parts.update(_unpack(rows, group.layout[level]))
        return assemble(parts, *self.collate_args)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_open": {}}
