"""The exponential moving average of the weights (``module.ema_decay``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import numpy as np
import pytest
import torch
from ase.io import read
from torch import Tensor

from physicsml.inference import load_module, predict_atoms
from physicsml.train import train
from tests.structures import ETHANOL
from tests.test_configs import run_train_cli
from tests.test_ddp import DDP_ON_CPU, assert_matches_single_process, data, run_cli
from tests.test_ddp import TINY as DDP_TINY
from tests.test_train import straight_and_resumed

TINY = [
    "module.model.c_hidden=8",
    "module.model.num_layers=1",
    "datamodule.split.train=0.1",
    "datamodule.split.validation=0.05",
    "datamodule.train.batch_size=8",
]


class RawWeights(L.Callback):
    """Records the weights at the start of fitting and after every training step."""

    history: ClassVar[list[dict[str, Tensor]]] = []

    @staticmethod
    def _record(module: L.LightningModule) -> None:
        RawWeights.history.append({n: p.detach().clone() for n, p in module.named_parameters()})

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        RawWeights.history.clear()
        self._record(pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        self._record(pl_module)


def test_average_is_the_ema_of_the_raw_weights_and_is_the_saved_model(
    cfg_factory, tmp_path: Path
) -> None:
    decay = 0.2  # below the warm-up's (1 + n) / (10 + n) from the third step on
    cfg = cfg_factory(
        *TINY,
        "trainer.max_epochs=1",
        f"module.ema_decay={decay}",
        "+callbacks.raw_weights._target_=tests.test_ema.RawWeights",
    )
    train(cfg, tmp_path / "run")

    initial, *steps = RawWeights.history
    assert len(steps) == 5
    expected = dict(initial)
    for n, weights in enumerate(steps):
        d = min(decay, (1 + n) / (10 + n))
        expected = {name: d * expected[name] + (1 - d) * w for name, w in weights.items()}
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    saved = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert last["ema"]["num_updates"] == 5
    for name, value in expected.items():
        torch.testing.assert_close(last["state_dict"][name], value, msg=name)
        torch.testing.assert_close(saved["state_dict"][name], value, msg=name)
        assert torch.equal(last["ema"]["raw_weights"][name], steps[-1][name]), name
    assert any(not torch.equal(v, steps[-1][n]) for n, v in expected.items())


def _maes(module: Any, frames: list[Any]) -> tuple[float, float]:
    """Energy (eV) and force (eV/Å) MAEs of ``module`` on ``frames``."""
    predicted = predict_atoms(module, frames)
    energy = np.array(predicted["energy"]) - [a.get_potential_energy() for a in frames]
    forces = np.concatenate(predicted["forces"]) - np.concatenate([a.get_forces() for a in frames])
    return float(np.abs(energy).mean()), float(np.abs(forces).mean())


def test_validation_uses_the_averaged_weights(cfg_factory, tmp_path: Path) -> None:
    cfg = cfg_factory(
        *TINY, "trainer.max_epochs=2", "module.ema_decay=0.9", "module.optimizer.config.lr=0.01"
    )
    metrics = train(cfg, tmp_path / "run")
    logged = (metrics["val_energy_mae"], metrics["val_forces_mae"])

    split = json.loads((tmp_path / "run" / "split.json").read_text())
    frames = read(ETHANOL, ":400")
    val_frames = [frames[k] for k in split["validation"]["indices"]]
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert _maes(load_module(last), val_frames) == pytest.approx(logged, rel=1e-4)
    raw = load_module(last)
    raw.load_state_dict(torch.load(last, weights_only=True)["ema"]["raw_weights"], strict=False)
    assert _maes(raw, val_frames)[0] != pytest.approx(logged[0], rel=1e-2)


def test_resume_gives_the_same_average_and_raw_weights(cfg_factory, tmp_path: Path) -> None:
    common = [*TINY, "module.ema_decay=0.9", "trainer.deterministic=true"]
    a, b, _ = straight_and_resumed(cfg_factory, tmp_path, common)
    assert a["ema"]["num_updates"] == b["ema"]["num_updates"] == a["global_step"] == 20
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=0, msg=key)
    raw_a, raw_b = a["ema"]["raw_weights"], b["ema"]["raw_weights"]
    for key, value in raw_a.items():
        torch.testing.assert_close(raw_b[key], value, rtol=0, atol=0, msg=key)
    assert any(not torch.equal(a["state_dict"][k], v) for k, v in raw_a.items())


def test_ddp_average_matches_one_process(cfg_factory, ethanol_store: Path, tmp_path: Path) -> None:
    """Two ranks (4 structures each) average as one process on the global batch of 8."""
    runs = tmp_path / "runs"
    common = [*DDP_TINY, "module.ema_decay=0.9"]
    done = run_cli(
        *common,
        *data(ethanol_store, tmp_path),
        "datamodule.train.batch_size=4",
        *DDP_ON_CPU,
        f"hydra.run.dir={runs / 'ddp'}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    single = cfg_factory(*common, "datamodule.train.batch_size=8", run_dir=runs / "single")
    expected = train(single, runs / "single")
    assert_matches_single_process(runs / "ddp", runs / "single", expected)
    last = torch.load(runs / "ddp" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["ema"]["num_updates"] == expected["global_step"] == 20


@pytest.mark.parametrize("decay", ["0", "1", "1.5", "-0.1"])
def test_decay_out_of_range_is_a_one_line_error(decay: str, tmp_path: Path) -> None:
    result = run_train_cli(f"module.ema_decay={decay}", run_dir=tmp_path / "run")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "module.ema_decay must be in (0, 1)" in lines[0]
