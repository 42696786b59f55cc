"""The opt-in Optuna preset: ``-m hparams_search=optuna`` minimises a named validation metric."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from tests.test_ddp import run_cli


def tiny_run(store: Path, tmp_path: Path) -> list[str]:
    """Overrides for a one-epoch run of a one-layer model on a small ethanol subset."""
    return [
        f"datamodule.dataset={store}",
        f"datamodule.cache_dir={tmp_path / 'cache'}",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "datamodule.split.train=0.1",
        "datamodule.split.validation=0.05",
        "module.model.num_layers=1",
    ]


def test_optuna_search_minimises_the_named_metric(ethanol_store: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    done = run_cli(
        "-m",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        # a small space instead of the preset's (c_hidden must not be swept and overridden)
        "hydra.sweeper.params={module.model.c_hidden:'choice(8, 12)',"
        "module.optimizer.config.lr:'tag(log, interval(1e-3, 1e-2))'}",
        "optimized_metric=val_forces_mae",
        *tiny_run(ethanol_store, tmp_path),
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    maes = {}
    for job in ("0", "1"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        resolved = yaml.safe_load((sweep / job / "config.yaml").read_text())
        assert resolved["module"]["model"]["c_hidden"] in (8, 12)
        assert 1e-3 <= resolved["module"]["optimizer"]["config"]["lr"] <= 1e-2
        assert resolved["optimized_metric"] == "val_forces_mae"
        maes[job] = metrics["val_forces_mae"]
        assert math.isfinite(maes[job]) and maes[job] != metrics["val_loss"]
    assert not (sweep / "2").exists()

    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna"
    assert results["best_value"] == pytest.approx(min(maes.values()), rel=1e-6)
    best = min(maes, key=lambda job: maes[job])
    best_cfg = yaml.safe_load((sweep / best / "config.yaml").read_text())
    assert results["best_params"] == {
        "module.model.c_hidden": best_cfg["module"]["model"]["c_hidden"],
        "module.optimizer.config.lr": pytest.approx(
            best_cfg["module"]["optimizer"]["config"]["lr"]
        ),
    }


def test_a_failed_trial_does_not_stop_the_search(ethanol_store: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    done = run_cli(
        "-m",
        "hparams_search=optuna",
        "hydra.sweeper.sampler.seed=0",  # its first two trials draw lr 0.001, then -1
        "hydra.sweeper.n_trials=2",
        # the preset's keys (params is a struct): lr < 0 makes the optimizer raise
        "hydra.sweeper.params={module.model.c_hidden:'8',"
        "module.optimizer.config.lr:'choice(-1.0, 0.001)'}",
        *tiny_run(ethanol_store, tmp_path),
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr[-3000:]  # the summary names the failed job
    assert "1 of 2 jobs succeeded, 1 failed" in done.stdout
    assert (sweep / "0" / "metrics.json").exists() and not (sweep / "1" / "metrics.json").exists()
    assert "learning rate" in (sweep / "1" / "error.txt").read_text()
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    val_loss = json.loads((sweep / "0" / "metrics.json").read_text())["val_loss"]
    assert results["best_value"] == pytest.approx(val_loss, rel=1e-6)
    assert results["best_params"] == {"module.optimizer.config.lr": 0.001}
