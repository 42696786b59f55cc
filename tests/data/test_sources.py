"""A split's data as a list of sources (stores or files), read as one store in order."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
import zarr
from omegaconf import OmegaConf

from physicsml.config.errors import ConfigError
from physicsml.config.schema import DataModuleConfig
from physicsml.data.concat import ConcatenatedArray
from physicsml.data.datamodule import AtomsDataModule
from physicsml.data.sources import open_source
from physicsml.data.store import AtomsStore
from physicsml.data.store_format import Frame
from physicsml.data.store_writer import write_store
from tests.structures import ASPIRIN

Batch = dict[str, torch.Tensor]


def frames(store: AtomsStore, keep: tuple[str, ...] = ("energy", "forces")) -> Iterator[Frame]:
    """The structures of ``store`` with the properties ``keep``."""
    data = store.load()
    for k in range(store.num_structures):
        atoms = slice(data.offsets[k], data.offsets[k + 1])
        yield Frame(
            data.positions[atoms],
            data.numbers[atoms],
            data.cell[k],
            data.pbc[k],
            {n: v[atoms] for n, v in data.atom_props.items() if n in keep},
            {n: v[k] for n, v in data.structure_props.items() if n in keep},
        )


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory, ethanol_store: Path) -> dict[str, Path]:
    """Ethanol cut into two stores (250 + 150 structures), 40 aspirin frames as an extxyz
    file, and the three written as one store in that order."""
    root = tmp_path_factory.mktemp("sources")
    ethanol = list(frames(AtomsStore(ethanol_store)))
    out = {
        "first": write_store(root / "first.zarr", ethanol[:250], source={}, units={}).path,
        "second": write_store(root / "second.zarr", ethanol[250:], source={}, units={}).path,
        "aspirin": root / "aspirin.extxyz",
    }
    ase.io.write(out["aspirin"], ase.io.read(ASPIRIN, ":40"))
    aspirin = list(frames(open_source(out["aspirin"], root / "cache")))
    whole = write_store(root / "whole.zarr", [*ethanol, *aspirin], source={}, units={})
    return out | {"whole": whole.path}


def datamodule(cfg_factory, run_dir: Path, *overrides: str) -> AtomsDataModule:
    cfg = cfg_factory("datamodule.dataset=null", *overrides)
    config = OmegaConf.to_object(cfg.datamodule)
    assert isinstance(config, DataModuleConfig)
    dm = AtomsDataModule(config, run_dir=run_dir)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def epoch(dm: AtomsDataModule, split: str, number: int = 0) -> list[Batch]:
    loader = dm.train_dataloader() if split == "train" else dm.val_dataloader()
    loader.sampler.set_epoch(number)  # type: ignore[attr-defined]  # as Lightning does
    return list(loader)


def sorted_edges(batch: Batch) -> Batch:
    """``batch`` with its edges in one order: neighbour lists computed in other blocks of
    molecules may list a structure's edges in another order."""
    i, j = batch["edge_index"].numpy()
    order = torch.from_numpy(np.lexsort((*batch["cell_shift"].numpy().T, j, i)))
    return batch | {
        "edge_index": batch["edge_index"][:, order],
        "cell_shift": batch["cell_shift"][order],
    }


def assert_same_batches(left: list[Batch], right: list[Batch]) -> None:
    assert len(left) == len(right) > 1
    for a, b in zip(map(sorted_edges, left), map(sorted_edges, right), strict=True):
        assert a.keys() == b.keys()
        assert all(a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]) for key in a)


def test_per_split_lists_read_as_one_store(
    cfg_factory, sources: dict[str, Path], tmp_path: Path
) -> None:
    listed = f"[{sources['first']},{sources['second']},{sources['aspirin']}]"
    several = datamodule(
        cfg_factory,
        tmp_path / "several",
        f"datamodule.train_data={listed}",
        f"datamodule.validation_data=[{sources['second']}]",
    )
    one = datamodule(
        cfg_factory,
        tmp_path / "one",
        f"datamodule.train_data={sources['whole']}",
        f"datamodule.validation_data={sources['second']}",
    )
    assert len(several.datasets["train"]) == 440
    assert several.elements == one.elements == [1, 6, 8]
    assert several.statistics is not None and several.statistics == one.statistics
    assert several.statistics.num_structures == 440
    for number in (0, 1):
        assert_same_batches(epoch(one, "train", number), epoch(several, "train", number))
    assert_same_batches(epoch(one, "validation"), epoch(several, "validation"))

    split = json.loads((tmp_path / "several" / "split.json").read_text())
    assert split["train"]["source"] == [str(sources[k]) for k in ("first", "second", "aspirin")]
    assert split["train"]["store"][:2] == [str(sources["first"]), str(sources["second"])]
    assert Path(split["train"]["store"][2]).parent == tmp_path / "cache"  # ingested once
    assert split["train"]["indices"] == list(range(440))
    assert split["validation"]["source"] == split["validation"]["store"] == str(sources["second"])


def test_dataset_list_is_split_like_one_store(
    cfg_factory, sources: dict[str, Path], tmp_path: Path
) -> None:
    parts = f"[{sources['first']},{sources['second']},{sources['aspirin']}]"
    several = datamodule(cfg_factory, tmp_path / "several", f"datamodule.dataset={parts}")
    one = datamodule(cfg_factory, tmp_path / "one", f"datamodule.dataset={sources['whole']}")
    for name in ("train", "validation"):
        np.testing.assert_array_equal(several.indices[name], one.indices[name])
    assert several.indices["validation"].max() >= 400  # aspirin structures are drawn too
    assert several.statistics == one.statistics
    assert_same_batches(epoch(one, "train"), epoch(several, "train"))
    split = json.loads((tmp_path / "several" / "split.json").read_text())
    assert len(split["validation"]["source"]) == 3
    assert split["validation"]["indices"] == several.indices["validation"].tolist()


def test_on_disk_batches_of_several_stores(
    cfg_factory, sources: dict[str, Path], tmp_path: Path
) -> None:
    listed = f"datamodule.train_data=[{sources['first']},{sources['second']},{sources['aspirin']}]"
    plain = datamodule(cfg_factory, tmp_path / "plain", listed)
    on_disk = datamodule(
        cfg_factory,
        tmp_path / "on_disk",
        listed,
        "datamodule.pre_batch=on_disk",
        "datamodule.rebatch_every_n_epochs=1",
    )
    data = on_disk.datasets["train"].data
    assert isinstance(data.positions, ConcatenatedArray)  # left on disk
    assert on_disk.statistics == plain.statistics
    assert_same_batches(epoch(plain, "train", 1), epoch(on_disk, "train", 1))
    directory = on_disk.pre_batch_directory("train", 16, shuffle=True)
    assert directory.name.startswith("first+2-")


def test_source_type_and_properties_are_checked(
    cfg_factory, sources: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"datamodule.train_data: expected a path or a non-emp"):
        datamodule(cfg_factory, tmp_path, "datamodule.train_data=3")
    with pytest.raises(ConfigError, match=r"datamodule.dataset: expected a path or a non-empty"):
        datamodule(cfg_factory, tmp_path, "datamodule.dataset=[]")
    unlabelled = write_store(
        tmp_path / "energies.zarr",
        frames(AtomsStore(sources["second"]), keep=("energy",)),
        source={},
        units={},
    ).path
    with pytest.raises(ConfigError, match=r"y_node_vector: 'forces' is not in .*energies.zarr"):
        datamodule(
            cfg_factory, tmp_path, f"datamodule.train_data=[{sources['first']},{unlabelled}]"
        )


def test_concatenated_array_reads_like_numpy(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(n, 3)) for n in (5, 0, 7, 4)]
    on_disk = [zarr.create_array(tmp_path / f"{k}.zarr", data=a) for k, a in enumerate(arrays)]
    joined, expected = ConcatenatedArray(on_disk), np.concatenate(arrays)
    assert joined.shape == expected.shape and len(joined) == 16
    np.testing.assert_array_equal(joined[5], expected[5])
    np.testing.assert_array_equal(joined[3:14], expected[3:14])
    rows = np.array([15, 0, 6, 5, 7, 8, 4, 12])
    np.testing.assert_array_equal(joined[rows], expected[rows])
    edges = [rng.integers(0, 9, size=(2, n)).astype(np.int32) for n in (3, 6)]
    wide = ConcatenatedArray(
        [zarr.create_array(tmp_path / f"e{n}.zarr", data=e) for n, e in enumerate(edges)], axis=1
    )
    np.testing.assert_array_equal(wide[:, 2:8], np.concatenate(edges, axis=1)[:, 2:8])
    np.testing.assert_array_equal(
        wide[:, rows[rows < 9]], np.concatenate(edges, axis=1)[:, rows[rows < 9]]
    )
