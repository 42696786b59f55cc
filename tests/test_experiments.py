"""Every experiment preset runs a few training steps (on a small ethanol store)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from physicsml.config.registry import config_dir
from physicsml.train import train

PRESETS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_trains_a_few_steps(cfg_factory, preset: str) -> None:
    cfg = cfg_factory(
        f"experiment={preset}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "datamodule.train.batch_size=4",
        "datamodule.validation.batch_size=4",
    )
    assert cfg.task_name == preset
    metrics = train(cfg, Path(cfg.hydra.runtime.output_dir))
    assert np.isfinite(metrics["val_forces_mae"]) and np.isfinite(metrics["val_energy_mae"])
