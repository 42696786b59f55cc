"""Pre-batching in memory and on disk: same batches, exact evaluation, cache reuse, training."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from physicsml.config.errors import ConfigError
from physicsml.config.schema import BatchConfig, DataModuleConfig, PreBatch, SplitConfig
from physicsml.data.datamodule import AtomsDataModule
from physicsml.inference import load_module
from physicsml.train import train

Batch = dict[str, torch.Tensor]
MODES = (None, PreBatch.in_memory, PreBatch.on_disk)


def make_datamodule(store: Path, cache: Path, pre_batch: PreBatch | None, **kw) -> AtomsDataModule:
    """200 training and 100 validation structures of the 400-frame ethanol store."""
    config = DataModuleConfig(
        dataset=str(store),
        cache_dir=str(cache),
        pre_batch=pre_batch,
        split=SplitConfig(train=0.5, validation=0.25, seed=7),
        y_graph_scalars=["energy"],
        y_node_vector="forces",
        train=BatchConfig(batch_size=kw.pop("batch_size", 16)),
        validation=BatchConfig(batch_size=24),
        **kw,
    )
    datamodule = AtomsDataModule(config)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def epoch_batches(loader: DataLoader, epoch: int) -> list[Batch]:
    loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]  # as Lightning does
    return list(loader)


def assert_same_batches(left: list[Batch], right: list[Batch]) -> None:
    assert len(left) == len(right)
    for a, b in zip(left, right, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype, key
            assert torch.equal(a[key], b[key]), key


def structures(batches: list[Batch]) -> list[tuple[float, ...]]:
    """One identity per structure (its first atom's position), in the order seen."""
    out = []
    for batch in batches:
        first = batch["coordinates"][batch["ptr"][:-1]]
        out += [tuple(row) for row in first.tolist()]
    return out


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def test_training_batches_equal_the_plain_loaders(ethanol_store: Path, cache: Path) -> None:
    plain = make_datamodule(ethanol_store, cache, None).train_dataloader()
    in_memory = make_datamodule(ethanol_store, cache, PreBatch.in_memory).train_dataloader()
    on_disk = make_datamodule(
        ethanol_store, cache, PreBatch.on_disk, rebatch_every_n_epochs=1
    ).train_dataloader()
    for epoch in (0, 1):
        expected = epoch_batches(plain, epoch)
        assert len(structures(expected)) == 200 == len(set(structures(expected)))
        assert_same_batches(expected, epoch_batches(in_memory, epoch))
        assert_same_batches(expected, epoch_batches(on_disk, epoch))
    assert structures(epoch_batches(plain, 0)) != structures(epoch_batches(plain, 1))


def test_every_mode_sees_every_structure_once_per_epoch(ethanol_store: Path, cache: Path) -> None:
    loaders = [make_datamodule(ethanol_store, cache, mode).train_dataloader() for mode in MODES]
    for epoch in (0, 1, 2):
        seen = [structures(epoch_batches(loader, epoch)) for loader in loaders]
        assert len(seen[0]) == len(set(seen[0])) == 200
        assert sorted(seen[0]) == sorted(seen[1]) == sorted(seen[2])


def test_composition_is_kept_between_redraws(ethanol_store: Path, cache: Path) -> None:
    dm = make_datamodule(ethanol_store, cache, PreBatch.in_memory, rebatch_every_n_epochs=2)
    loader = dm.train_dataloader()
    for batch in epoch_batches(loader, 0):
        batch["coordinates"].requires_grad_(True)  # as the module does for forces
    assert not any(b["coordinates"].requires_grad for b in epoch_batches(loader, 1))
    epochs = [[tuple(structures([b])) for b in epoch_batches(loader, e)] for e in range(3)]
    assert epochs[1] != epochs[0]  # new batch order...
    assert sorted(epochs[1]) == sorted(epochs[0])  # ...of the same batches
    assert sorted(epochs[2]) != sorted(epochs[0])  # re-drawn in epoch 2...
    plain = make_datamodule(ethanol_store, cache, None).train_dataloader()
    assert_same_batches(epoch_batches(plain, 2), epoch_batches(loader, 2))  # ...as the plain loader


@pytest.mark.parametrize("mode", [PreBatch.in_memory, PreBatch.on_disk])
def test_validation_is_exact(ethanol_store: Path, cache: Path, mode: PreBatch) -> None:
    plain = make_datamodule(ethanol_store, cache, None)
    pre = make_datamodule(ethanol_store, cache, mode)
    batches = list(pre.val_dataloader())
    seen = structures(batches)
    assert len(seen) == len(set(seen)) == len(pre.indices["validation"]) == 100
    assert [len(b["ptr"]) - 1 for b in batches] == [24, 24, 24, 24, 4]
    assert_same_batches(list(plain.val_dataloader()), batches)


def test_on_disk_cache_is_reused_and_keyed(ethanol_store: Path, cache: Path) -> None:
    first = make_datamodule(ethanol_store, cache, PreBatch.on_disk)
    epoch_batches(first.train_dataloader(), 0)
    directory = first.pre_batch_directory("train", 16, shuffle=True)
    assert directory.parent == cache / "prebatch"
    written = directory / "train-e0-r0of1" / "zarr.json"
    stamp = written.stat().st_mtime_ns, written.stat().st_ino

    second = make_datamodule(ethanol_store, cache, PreBatch.on_disk)
    assert second.pre_batch_directory("train", 16, shuffle=True) == directory
    batches = epoch_batches(second.train_dataloader(), 0)
    assert_same_batches(epoch_batches(first.train_dataloader(), 0), batches)
    assert (written.stat().st_mtime_ns, written.stat().st_ino) == stamp
    assert sorted(p.name for p in directory.iterdir()) == ["train-e0-r0of1", "train-e0-r0of1.lock"]

    other = make_datamodule(ethanol_store, cache, PreBatch.on_disk, batch_size=8)
    assert other.pre_batch_directory("train", 8, shuffle=True) != directory
    assert len(epoch_batches(other.train_dataloader(), 0)) == 25


def test_on_disk_reads_with_workers(ethanol_store: Path, cache: Path, tmp_path: Path) -> None:
    plain = make_datamodule(ethanol_store, cache, None)
    workers = make_datamodule(
        ethanol_store, cache, PreBatch.on_disk, num_workers=2, pre_batch_dir=str(tmp_path / "pb")
    )
    assert workers.pre_batch_directory("train", 16, shuffle=True).parent == tmp_path / "pb"
    batches = epoch_batches(workers.train_dataloader(), 1)  # composition of epoch 0, reordered
    expected = epoch_batches(plain.train_dataloader(), 1)
    assert sorted(structures(batches)) == sorted(structures(expected))
    assert_same_batches(list(plain.val_dataloader()), list(workers.val_dataloader()))


def test_training_and_identical_predictions(
    cfg_factory, ethanol_store: Path, tmp_path: Path
) -> None:
    small = [
        "trainer.max_epochs=2",
        "module.model.c_hidden=8",
        "module.model.num_layers=1",
        "datamodule.split.train=0.2",
        "datamodule.split.validation=0.05",
    ]
    runs, metrics = {}, {}
    for name in ("null", "in_memory", "on_disk"):
        cfg = cfg_factory(
            *small,
            f"datamodule.pre_batch={name}",
            "datamodule.rebatch_every_n_epochs=1",  # batches equal to the plain loader's
            run_dir=tmp_path / name,
        )
        run_dir = Path(cfg.hydra.runtime.output_dir)
        metrics[name] = train(cfg, run_dir)
        assert metrics[name]["epoch"] == 2 and np.isfinite(metrics[name]["val_forces_mae"])
        assert len(json.loads((run_dir / "split.json").read_text())["validation"]["indices"]) == 20
        runs[name] = run_dir
    for key in ("train_loss", "val_loss", "val_energy_mae", "val_forces_mae"):
        assert metrics["in_memory"][key] == metrics["null"][key] == metrics["on_disk"][key], key
    written = sorted(p.name for p in (tmp_path / "cache" / "prebatch").glob("*/*-r0of1"))
    assert written == ["eval-r0of1", "train-e0-r0of1", "train-e1-r0of1"]

    module = load_module(runs["in_memory"])
    outputs = []
    for mode in MODES:
        config = DataModuleConfig(
            predict_data=str(ethanol_store),
            cache_dir=str(runs["in_memory"] / "cache"),
            pre_batch=mode,
            elements=module.spec.elements,
            predict=BatchConfig(batch_size=96),
        )
        trainer = L.Trainer(logger=False, enable_progress_bar=False, inference_mode=False)
        preds = trainer.predict(module, datamodule=AtomsDataModule(config))
        assert preds is not None and len(preds) == 5
        outputs.append({k: torch.cat([p[k] for p in preds]) for k in preds[0] if k != "ptr"})
    for other in outputs[1:]:
        assert outputs[0].keys() == other.keys()
        for key in outputs[0]:
            assert torch.equal(outputs[0][key], other[key]), key


def test_negative_rebatch_schedule_is_a_config_error(ethanol_store: Path, cache: Path) -> None:
    with pytest.raises(ConfigError, match="rebatch_every_n_epochs"):
        make_datamodule(ethanol_store, cache, PreBatch.in_memory, rebatch_every_n_epochs=-1)
