"""LightningDataModule over zarr stores: splits, neighbour lists, statistics, loaders."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from physicsml.config.errors import ConfigError
from physicsml.config.schema import DataModuleConfig, PreBatch
from physicsml.data.concat import concat_data, concat_tables
from physicsml.data.dataset import StructureDataset, TargetSpec
from physicsml.data.graph import assemble, species_lookup
from physicsml.data.neighbours import NeighbourTable
from physicsml.data.prebatch import (
    BatchPlan,
    InMemoryBatches,
    OnDiskBatches,
    PrebatchSampler,
    cache_key,
    write_batches,
)
from physicsml.data.sampler import EpochSampler
from physicsml.data.sources import open_source
from physicsml.data.statistics import DataStatistics, compute_statistics
from physicsml.data.store import AtomsStore, StoreData

SPLITS = ("train", "validation", "test", "predict")


def resolve_num_workers(value: Any) -> int:
    """``num_workers`` as an int: ``"all"`` means every core this process may use."""
    if value == "all":
        return (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1
        )
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise ConfigError(
        f"datamodule.num_workers: expected a non-negative int or 'all', got {value!r}"
    )


def source_paths(key: str, value: Any) -> list[str] | None:
    """``datamodule.<key>`` (a path, a list of paths or None) as a list of paths."""
    if value is None:
        return None
    paths = [value] if isinstance(value, (str, os.PathLike)) else value
    if (
        not isinstance(paths, Sequence)
        or not paths
        or not all(isinstance(p, (str, os.PathLike)) for p in paths)
    ):
        raise ConfigError(
            f"datamodule.{key}: expected a path or a non-empty list of paths, got {value!r}"
        )
    return [str(p) for p in paths]


class AtomsDataModule(L.LightningDataModule):
    """Serves batches of structures from zarr stores (see ``DataModuleConfig`` for the keys)."""

    def __init__(self, config: DataModuleConfig, run_dir: str | Path | None = None) -> None:
        super().__init__()
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.num_workers = resolve_num_workers(config.num_workers)
        self.targets = TargetSpec(
            y_graph_scalars=tuple(config.y_graph_scalars or ()),
            y_graph_vector=config.y_graph_vector,
            y_graph_tensor=config.y_graph_tensor,
            y_node_scalars=tuple(config.y_node_scalars or ()),
            y_node_vector=config.y_node_vector,
            graph_attrs_cols=tuple(config.graph_attrs_cols or ()),
        )
        if config.pbc is not None and len(config.pbc) != 3:
            raise ConfigError(f"datamodule.pbc: expected 3 booleans, got {list(config.pbc)}")
        if config.cell is not None and np.asarray(config.cell).shape != (3, 3):
            raise ConfigError("datamodule.cell: expected a 3x3 matrix of cell vectors")
        if (config.rebatch_every_n_epochs or 0) < 0:
            raise ConfigError(
                "datamodule.rebatch_every_n_epochs: expected >= 0 (0: batches drawn once), "
                f"got {config.rebatch_every_n_epochs}"
            )
        if config.cut_off <= 0:
            raise ConfigError(f"datamodule.cut_off: must be positive, got {config.cut_off}")
        self.sources = self._sources()
        self.dataset_paths = source_paths("dataset", config.dataset)
        self.stores: dict[str, list[AtomsStore]] = {}
        self.indices: dict[str, np.ndarray] = {}
        self.datasets: dict[str, StructureDataset] = {}
        self.statistics: DataStatistics | None = None
        self.elements: list[int] = []

    # -- data sources ----------------------------------------------------------------
    def _sources(self) -> dict[str, list[str]]:
        """The paths of each split that has its own data (``<split>_data``)."""
        cfg = self.config
        explicit = {
            "train": source_paths("train_data", cfg.train_data),
            "validation": source_paths("validation_data", cfg.validation_data),
            "test": source_paths("test_data", cfg.test_data),
            "predict": source_paths("predict_data", cfg.predict_data),
        }
        sources = {k: v for k, v in explicit.items() if v is not None}
        if cfg.dataset is not None:
            taken = [k for k in ("train", "validation", "test") if k in sources]
            if taken:
                raise ConfigError(
                    f"datamodule.dataset is set together with datamodule.{taken[0]}_data: "
                    "use either one source split by datamodule.split, or one source per split"
                )
        return sources

    def prepare_data(self) -> None:
        """Ingest non-store inputs into the cache and build neighbour lists (once, cached)."""
        for path in self._all_paths():
            store = open_source(path, self.config.cache_dir)
            self._neighbours(store, lazy=True)

    def _all_paths(self) -> list[str]:
        lists = [*self.sources.values(), self.dataset_paths or []]
        return list(dict.fromkeys(path for paths in lists for path in paths))

    def _neighbours(self, store: AtomsStore, lazy: bool) -> NeighbourTable:
        cfg = self.config
        return store.neighbours(
            cut_off=cfg.cut_off,
            pbc=None if cfg.pbc is None else list(cfg.pbc),
            cell=None if cfg.cell is None else [list(r) for r in cfg.cell],
            self_interaction=cfg.self_interaction,
            lazy=lazy,
        )

    # -- setup ---------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Open the stores, split, validate the targets and compute training statistics.

        The stores and neighbour lists are read into memory, except with ``pre_batch:
        on_disk``: then they stay on disk and are streamed block by block.
        """
        if self.datasets:
            return
        cfg = self.config
        split_of: dict[str, tuple[tuple[str, ...], np.ndarray | None]] = {
            name: (tuple(paths), None) for name, paths in self.sources.items()
        }
        if self.dataset_paths is not None:
            total = sum(open_source(p, cfg.cache_dir).num_structures for p in self.dataset_paths)
            for name, idx in self._split(total).items():
                split_of[name] = (tuple(self.dataset_paths), idx)
        if not split_of:
            raise ConfigError(
                "no data: set datamodule.dataset (split by datamodule.split) or "
                "datamodule.train_data / validation_data / test_data / predict_data"
            )
        # on_disk batches are built block by block from the stores, left on disk
        lazy = cfg.pre_batch == PreBatch.on_disk
        loaded: dict[tuple[str, ...], tuple[list[AtomsStore], StoreData, NeighbourTable]] = {}
        for name, (paths, chosen) in split_of.items():
            if paths not in loaded:  # several stores: concatenated in order
                stores = [open_source(path, cfg.cache_dir) for path in paths]
                loaded[paths] = (
                    stores,
                    concat_data([s.open_arrays() if lazy else s.load() for s in stores]),
                    concat_tables([self._neighbours(s, lazy) for s in stores]),
                )
            stores, data, table = loaded[paths]
            self._check_targets(stores, with_targets=name != "predict")
            self.stores[name] = stores
            self.indices[name] = np.arange(len(data.offsets) - 1) if chosen is None else chosen
            self.datasets[name] = StructureDataset(
                data,
                table,
                self.indices[name],
                self.targets,
                cell=None if cfg.cell is None else np.asarray(cfg.cell, dtype=np.float64),
                pbc=None if cfg.pbc is None else np.asarray(cfg.pbc, dtype=bool),
                with_targets=name != "predict",
            )
        self.elements = self._elements()
        if "train" in self.datasets:
            _, data, table = loaded[split_of["train"][0]]
            self.statistics = compute_statistics(
                data,
                table,
                self.indices["train"],
                self.elements,
                energy_key=self.targets.y_graph_scalars[0]
                if self.targets.y_graph_scalars
                else None,
                forces_key=self.targets.y_node_vector,
            )
        self._save_split(split_of)

    def _split(self, num: int) -> dict[str, np.ndarray]:
        split = self.config.split
        fractions = {"train": split.train, "validation": split.validation, "test": split.test}
        bad = {k: v for k, v in fractions.items() if not 0.0 <= v <= 1.0}
        if bad or sum(fractions.values()) > 1.0 + 1e-9:
            raise ConfigError(
                "datamodule.split: fractions must lie in [0, 1] and sum to at most 1, "
                f"got {fractions}"
            )
        order = (
            np.random.default_rng(split.seed).permutation(num) if split.shuffle else np.arange(num)
        )
        out: dict[str, np.ndarray] = {}
        start = 0
        for name, fraction in fractions.items():
            count = int(round(fraction * num))
            if count:
                out[name] = np.sort(order[start : start + count])
            start += count
        if "train" not in out:
            raise ConfigError(f"datamodule.split.train={split.train} leaves no training structures")
        return out

    def _elements(self) -> list[int]:
        cfg = self.config
        if cfg.elements:
            elements = sorted(int(z) for z in cfg.elements)
        else:
            found: set[int] = set()
            for stores in self.stores.values():
                found.update(z for store in stores for z in store.elements)
            elements = sorted(found)
        for name, stores in self.stores.items():
            for store in stores:
                extra = sorted(set(store.elements) - set(elements))
                if extra:
                    raise ConfigError(
                        f"datamodule.elements={elements} misses elements {extra} of the {name} "
                        f"data ({store.path})"
                    )
        if cfg.num_elements and cfg.num_elements < len(elements):
            raise ConfigError(
                f"datamodule.num_elements={cfg.num_elements} is smaller than the "
                f"{len(elements)} elements in the data {elements}"
            )
        return elements

    @property
    def num_elements(self) -> int:
        """Width of the one-hot element encoding."""
        return max(self.config.num_elements, len(self.elements))

    def _check_targets(self, stores: list[AtomsStore], with_targets: bool) -> None:
        """Every wanted property is in each store, at its level, in one shape for all."""
        wanted: list[tuple[str, str, str]] = [
            ("graph_attrs_cols", c, "structure") for c in self.targets.graph_attrs_cols
        ]
        if with_targets:
            wanted += [("y_graph_scalars", c, "structure") for c in self.targets.y_graph_scalars]
            wanted += [("y_node_scalars", c, "atom") for c in self.targets.y_node_scalars]
            if self.targets.y_graph_vector:
                wanted.append(("y_graph_vector", self.targets.y_graph_vector, "structure"))
            if self.targets.y_graph_tensor:
                wanted.append(("y_graph_tensor", self.targets.y_graph_tensor, "structure"))
            if self.targets.y_node_vector:
                wanted.append(("y_node_vector", self.targets.y_node_vector, "atom"))
        for store in stores:
            have = store.properties
            listing = ", ".join(f"{n} ({p['level']})" for n, p in sorted(have.items()))
            for key, name, level in wanted:
                if name not in have:
                    raise ConfigError(
                        f"datamodule.{key}: '{name}' is not in {store.path}; the store has: "
                        f"{listing or 'nothing'}"
                    )
                if have[name].get("dtype") == "string":
                    raise ConfigError(
                        f"datamodule.{key}: '{name}' in {store.path} is a string label, not a "
                        f"number to train on; the store has: {listing}"
                    )
                if have[name]["level"] != level:
                    raise ConfigError(
                        f"datamodule.{key}: '{name}' in {store.path} is a per-"
                        f"{have[name]['level']} property, expected per-{level}; the store has: "
                        f"{listing}"
                    )
        tensor = self.targets.y_graph_tensor if with_targets else None
        for store in stores if tensor else []:
            shape = store.properties[str(tensor)]["shape"]
            if int(np.prod(shape)) != 9:
                raise ConfigError(
                    f"datamodule.y_graph_tensor: '{tensor}' in {store.path} has shape {shape} "
                    "per structure, expected a 3x3 tensor (9 values, e.g. the stress)"
                )
        for key, name, _ in wanted:
            shapes = {str(s.path): s.properties[name]["shape"] for s in stores}
            if len({str(shape) for shape in shapes.values()}) > 1:
                raise ConfigError(
                    f"datamodule.{key}: '{name}' has different shapes in the stores read as "
                    f"one: {shapes}"
                )

    def _save_split(self, split_of: dict[str, tuple[tuple[str, ...], np.ndarray | None]]) -> None:
        """``split.json``: per split its source(s), store(s) and indices (into the stores
        concatenated in order when there are several)."""
        if self.run_dir is None or (self.trainer is not None and self.trainer.global_rank != 0):
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.run_dir / "split.json.tmp"
        with open(tmp, "w") as handle:  # indices in chunks: no Python list of a whole split
            handle.write("{")
            for name, (paths, _) in split_of.items():
                stores = [str(store.path) for store in self.stores[name]]
                head = {
                    "source": paths[0] if len(paths) == 1 else list(paths),
                    "store": stores[0] if len(stores) == 1 else stores,
                }
                handle.write(f'{json.dumps(name)}: {json.dumps(head)[:-1]}, "indices": [')
                indices, step = self.indices[name], 65536
                for start in range(0, len(indices), step):
                    chunk = indices[start : start + step].tolist()
                    handle.write(("," if start else "") + ",".join(map(str, chunk)))
                handle.write("]}, ")
            handle.write(f'"seed": {json.dumps(self.config.split.seed)}}}')
        tmp.replace(self.run_dir / "split.json")

    # -- loaders -------------------------------------------------------------------
    def _loader(self, name: str, batch_size: int, shuffle: bool) -> DataLoader:
        if name not in self.datasets:
            raise ConfigError(f"no {name} data configured (datamodule.{name}_data or .dataset)")
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        dataset = self.datasets[name]
        dtype = torch.float64 if self._precision() == 64 else torch.float32
        lookup = species_lookup(self.elements)
        if self.config.pre_batch is not None:
            return self._prebatched_loader(name, batch_size, shuffle, rank, world, dtype)
        sampler = EpochSampler(
            len(dataset),
            shuffle,
            seed=self.config.split.seed,
            rank=rank,
            world_size=world,
            even=shuffle,
        )
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=partial(  # gets a whole batch from StructureDataset.__getitems__
                assemble,
                lookup=lookup,
                num_elements=self.num_elements,
                dtype=dtype,
            ),
        )

    def _prebatched_loader(
        self, name: str, batch_size: int, shuffle: bool, rank: int, world: int, dtype: torch.dtype
    ) -> DataLoader:
        """Whole pre-collated batches (``pre_batch``); see ``physicsml.data.prebatch``."""
        cfg = self.config
        dataset = self.datasets[name]
        every = cfg.rebatch_every_n_epochs
        if every is None:
            every = 1 if cfg.pre_batch == PreBatch.in_memory else 0
        plan = BatchPlan(len(dataset), batch_size, shuffle, cfg.split.seed, rank, world, every)
        collate_args = (species_lookup(self.elements), self.num_elements, dtype)
        if cfg.pre_batch == PreBatch.in_memory:
            batches = InMemoryBatches(dataset, batch_size, *collate_args)
            sampler = PrebatchSampler(plan, batches.prepare)
            return DataLoader(batches, batch_size=None, sampler=sampler, num_workers=0)
        directory = self.pre_batch_directory(name, batch_size, shuffle)
        on_disk = OnDiskBatches(directory, *collate_args)

        def prepare(group: str, items: np.ndarray) -> None:
            write_batches(directory / group, dataset, items, batch_size)

        return DataLoader(
            on_disk,
            batch_size=None,
            sampler=PrebatchSampler(plan, prepare),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def pre_batch_directory(self, name: str, batch_size: int, shuffle: bool) -> Path:
        """Cache folder of split ``name``'s on-disk batches (``pre_batch_dir/<store>-<hash>``)."""
        cfg = self.config
        root = Path(cfg.pre_batch_dir or Path(cfg.cache_dir) / "prebatch").expanduser()
        dataset = self.datasets[name]
        params = {
            "cut_off": float(cfg.cut_off),
            "pbc": None if cfg.pbc is None else [bool(p) for p in cfg.pbc],
            "cell": None if cfg.cell is None else np.asarray(cfg.cell, dtype=float).tolist(),
            "self_interaction": bool(cfg.self_interaction),
            "batch_size": int(batch_size),
            "targets": self.targets.as_dict(),
            "with_targets": dataset.with_targets,
            "shuffle": shuffle,
            "seed": int(cfg.split.seed) if shuffle else None,
            "indices": hashlib.sha256(dataset.indices.astype(np.int64).tobytes()).hexdigest(),
        }
        return root / cache_key(self.stores[name], params)

    def _precision(self) -> int:
        precision = str(self.trainer.precision) if self.trainer is not None else "32"
        return 64 if precision.startswith("64") else 32

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.config.train.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", self.config.validation.batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.config.test.batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", self.config.predict.batch_size, shuffle=False)
