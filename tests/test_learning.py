"""Every model learns aspirin forces: a short run of its ``experiment=aspirin_<model>`` preset
beats the mean-force baseline on held-out frames (issue 3, item 5: a loose bound, short run)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from physicsml.api import compose_config
from physicsml.data.ingest import ingest
from physicsml.data.store import AtomsStore
from physicsml.train import train
from tests.structures import ASPIRIN

NUM_FRAMES = 400  # the first frames of the trajectory: train on the first ones, then validate
NUM_VAL = 100  # on the NUM_VAL frames that follow them
BOUND = 0.8  # validation force MAE must be below BOUND x the mean-force baseline

# model -> (training frames, epochs, learning rate): a few dozen optimiser steps, each short
# enough for the run to take well under a minute on a loaded 2-core machine.
RUNS: dict[str, tuple[int, int, float]] = {
    "mace": (80, 3, 0.01),
    "egnn": (300, 3, 0.005),
    "nequip": (128, 3, 0.01),
    "allegro": (160, 3, 0.01),
    "tensornet": (128, 3, 0.005),
    "ani": (300, 4, 0.005),
}


@pytest.fixture(scope="module")
def aspirin_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first NUM_FRAMES frames of the GFN2-xTB aspirin trajectory."""
    path = tmp_path_factory.mktemp("aspirin") / "aspirin.zarr"
    ingest(ASPIRIN, path, index=f":{NUM_FRAMES}")
    return path


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core machine two threads often run slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def mean_force_baseline(store: Path, train: slice, validation: slice) -> float:
    """MAE (eV/Å) of predicting every validation force component by the training mean."""
    data = AtomsStore(store).load()
    forces = np.asarray(data.atom_props["forces"], dtype=np.float64)
    offsets = data.offsets

    def block(frames: slice) -> np.ndarray:
        return forces[offsets[frames.start] : offsets[frames.stop]]

    return float(np.mean(np.abs(block(validation) - block(train).mean(axis=0))))


@pytest.mark.parametrize("model", sorted(RUNS))
def test_model_learns_aspirin_forces(
    model: str, aspirin_store: Path, tmp_path: Path, one_thread: None
) -> None:
    num_train, epochs, lr = RUNS[model]
    cfg = compose_config(
        [
            f"experiment=aspirin_{model}",
            f"datamodule.dataset={aspirin_store}",
            f"datamodule.cache_dir={tmp_path / 'cache'}",
            # consecutive blocks: [0, num_train) trains, the next NUM_VAL frames validate
            f"datamodule.split.train={num_train / NUM_FRAMES}",
            f"datamodule.split.validation={NUM_VAL / NUM_FRAMES}",
            "datamodule.split.shuffle=false",
            "datamodule.validation.batch_size=50",
            f"module.optimizer.config.lr={lr}",
            # equal loss weights (energies per atom, forces per component), pinned so that
            # the calibration above does not move with the defaults
            "module.y_graph_scalars_loss.weight=1.0",
            "module.y_node_vector_loss.weight=1.0",
            "module.scheduler.name=null",
            "module.scheduler.warmup_steps=0",
            "module.ema_decay=null",  # a few dozen steps: an average would lag the weights
            f"trainer.max_epochs={epochs}",
            f"trainer.check_val_every_n_epoch={epochs}",  # validate once, at the end
            "trainer.enable_checkpointing=false",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            "trainer.num_sanity_val_steps=0",
            "logger=none",
            "callbacks=none",
        ],
        run_dir=tmp_path / "run",
    )
    try:
        metrics = train(cfg, tmp_path / "run")
    finally:
        GlobalHydra.instance().clear()
    baseline = mean_force_baseline(
        aspirin_store, slice(0, num_train), slice(num_train, num_train + NUM_VAL)
    )
    assert metrics["val_forces_mae"] < BOUND * baseline, (metrics["val_forces_mae"], baseline)
