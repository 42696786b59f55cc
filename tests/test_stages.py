"""Training stages (``module.stages``): the switch happens at the configured epoch, survives a
resume, and freezes exactly what it names."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from physicsml.config.errors import ConfigError
from physicsml.train import train
from tests.test_module import TINY


def _lr_per_epoch(run_dir: Path) -> list[float]:
    """The learning rate the monitor logged at the start of each epoch."""
    with open(run_dir / "csv" / "metrics.csv") as handle:
        return [float(r["lr-AdamW"]) for r in csv.DictReader(handle) if r.get("lr-AdamW")]


def test_the_second_stage_starts_at_its_epoch(cfg_factory) -> None:
    cfg = cfg_factory(
        *TINY,
        "trainer.max_epochs=3",
        "module.scheduler.name=null",
        "module.stages=[{epoch: 2, lr: 1e-5, loss_weights: {y_graph_scalars: 1000.0}}]",
    )
    run_dir = Path(cfg.hydra.runtime.output_dir)
    train(cfg, run_dir)
    lrs = _lr_per_epoch(run_dir)
    assert lrs == pytest.approx([3e-3, 3e-3, 1e-5])


def test_a_stage_freezes_what_it_names_and_a_resume_keeps_it(cfg_factory, tmp_path: Path) -> None:
    stages = "module.stages=[{epoch: 1, freeze: ['model.embed.*', 'model.layers.*']}]"
    first = cfg_factory(*TINY, "module.scheduler.name=null", stages, run_dir=tmp_path / "a")
    train(first, tmp_path / "a")
    after_one = torch.load(tmp_path / "a/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    resumed = cfg_factory(
        *TINY,
        "module.scheduler.name=null",
        stages,
        "trainer.max_epochs=2",
        f"ckpt_path={tmp_path / 'a/checkpoints/last.ckpt'}",
        run_dir=tmp_path / "b",
    )
    train(resumed, tmp_path / "b")
    after_two = torch.load(tmp_path / "b/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    frozen = [k for k in after_one if k.startswith(("model.embed.", "model.layers."))]
    trained = [k for k in after_one if k.startswith("model.energy_head.")]
    assert frozen and trained
    for key in frozen:
        torch.testing.assert_close(after_two[key], after_one[key], rtol=0.0, atol=0.0)
    assert all(not torch.equal(after_two[k], after_one[k]) for k in trained)


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ("[{epoch: 0}]", r"module.stages\[0\].epoch: expected the 0-based epoch >= 1"),
        ("[{epoch: 3}, {epoch: 2}]", r"module.stages\[1\].epoch: 2 must be later than 3"),
        ("[{epoch: 1, lr: -1.0}]", r"module.stages\[0\].lr: expected a positive"),
        ("[{epoch: 1, speed: 2}]", r"module.stages\[0\]: unknown keys \['speed'\]"),
        ("[{epoch: 1, loss_weights: {stress: 1.0}}]", r"'stress' is not a target kind"),
        ("[{epoch: 1, freeze: ['model.nothing*']}]", r"freeze: 'model.nothing\*' matches no"),
    ],
)
def test_bad_stages_are_named(cfg_factory, stages: str, message: str) -> None:
    cfg = cfg_factory(*TINY, f"module.stages={stages}")
    with pytest.raises(ConfigError, match=message):
        train(cfg, Path(cfg.hydra.runtime.output_dir))


def test_linear_warm_up_then_the_scheduler(cfg_factory) -> None:
    """Four steps an epoch, eight of warm-up: lr/8 at the first step, 4.5/8 of it at the fifth,
    the full rate from the ninth on; the preset's plateau scheduler (patience 5) goes on."""
    cfg = cfg_factory(*TINY, "trainer.max_epochs=4", "module.scheduler.warmup_steps=8")
    run_dir = Path(cfg.hydra.runtime.output_dir)
    train(cfg, run_dir)
    lr = 3e-3
    assert _lr_per_epoch(run_dir) == pytest.approx([lr / 8, lr * 4.5 / 8, lr, lr])
