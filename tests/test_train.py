"""End-to-end training on real data, run directories, resume, and data errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.io import read

from physicsml.config.errors import ConfigError
from physicsml.train import train
from tests.structures import ETHANOL

SMALL_MODEL = ["module.model.c_hidden=32", "module.model.num_layers=3", "module.model.num_rbf=8"]


def test_training_lowers_force_error_below_zero_baseline(cfg_factory) -> None:
    cfg = cfg_factory(
        *SMALL_MODEL,
        "trainer.max_epochs=6",
        "datamodule.train.batch_size=8",
        "module.optimizer.config.lr=0.005",
    )
    run_dir = Path(cfg.hydra.runtime.output_dir)
    metrics = train(cfg, run_dir)

    split = json.loads((run_dir / "split.json").read_text())
    frames = read(ETHANOL, ":400")
    val_forces = np.concatenate([frames[k].get_forces() for k in split["validation"]["indices"]])
    zero_force_mae = float(np.abs(val_forces).mean())
    assert metrics["val_forces_mae"] < 0.6 * zero_force_mae
    assert metrics["epoch"] == 6

    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["val_forces_mae"] == pytest.approx(metrics["val_forces_mae"])
    for key in ("val_energy_mae", "val_energy_rmse", "val_forces_rmse", "val_loss", "train_loss"):
        assert key in saved
    for name in ("config.yaml", "split.json", "statistics.json", "model.pt", "csv/metrics.csv"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert set(split["train"]["indices"]).isdisjoint(split["validation"]["indices"])
    assert len(split["train"]["indices"]) == 320 and len(split["validation"]["indices"]) == 80


def straight_and_resumed(cfg_factory, tmp_path: Path, common: list[str]) -> tuple[dict, dict, Path]:
    """Train 4 epochs in one go and 2 + 2 resumed from the first run's ``last.ckpt``; return
    both final checkpoints and the one resumed from."""
    straight = cfg_factory(*common, "trainer.max_epochs=4", run_dir=tmp_path / "straight")
    train(straight, tmp_path / "straight")
    first = cfg_factory(*common, "trainer.max_epochs=2", run_dir=tmp_path / "first")
    train(first, tmp_path / "first")
    ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    resumed = cfg_factory(
        *common, "trainer.max_epochs=4", f"ckpt_path={ckpt}", run_dir=tmp_path / "resumed"
    )
    assert train(resumed, tmp_path / "resumed")["epoch"] == 4
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    return a, b, ckpt


def test_resume_gives_the_same_weights(cfg_factory, tmp_path: Path) -> None:
    common = [
        "module.model.c_hidden=16",
        "module.model.num_layers=2",
        "datamodule.split.train=0.2",
        "datamodule.split.validation=0.05",
        "trainer.deterministic=true",
        "module.scheduler.config.patience=0",  # ReduceLROnPlateau: its state must resume too
    ]
    a, b, ckpt = straight_and_resumed(cfg_factory, tmp_path, common)
    assert a["global_step"] == b["global_step"]
    assert a["lr_schedulers"][0] == b["lr_schedulers"][0]
    assert a["lr_schedulers"][0]["last_epoch"] >= 3  # the scheduler really stepped
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=0, msg=key)
    (opt_a,), (opt_b,) = a["optimizer_states"], b["optimizer_states"]
    for index, state in opt_a["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(opt_b["state"][index][name], value, rtol=0, atol=0)
    mid = torch.load(ckpt, weights_only=True)
    assert any(not torch.equal(mid["state_dict"][k], v) for k, v in a["state_dict"].items()), (
        "the resumed epochs changed nothing"
    )


def test_unknown_target_lists_store_contents(cfg_factory) -> None:
    cfg = cfg_factory("datamodule.y_node_vector=forcez", "trainer.max_epochs=1")
    with pytest.raises(ConfigError, match=r"'forcez' is not in .*the store has: .*forces \(atom\)"):
        train(cfg, Path(cfg.hydra.runtime.output_dir))


def test_bad_split_fractions(cfg_factory) -> None:
    cfg = cfg_factory("datamodule.split.train=0.9", "datamodule.split.validation=0.3")
    with pytest.raises(ConfigError, match="datamodule.split"):
        train(cfg, Path(cfg.hydra.runtime.output_dir))


def test_precision_64_trains(cfg_factory) -> None:
    cfg = cfg_factory(
        "module.model.c_hidden=8",
        "module.model.num_layers=1",
        "trainer.precision=64",
        "trainer.max_epochs=1",
        "datamodule.split.train=0.1",
        "datamodule.split.validation=0.05",
    )
    metrics = train(cfg, Path(cfg.hydra.runtime.output_dir))
    assert np.isfinite(metrics["val_forces_mae"])
