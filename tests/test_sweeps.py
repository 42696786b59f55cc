"""Sweeps with Hydra's basic launcher, failed-job reports, run dirs for requeue, auto-resume."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from physicsml.cli.report import report
from physicsml.config.registry import config_dir, register_configs
from physicsml.train import train
from tests.test_ddp import run_cli

TINY = [
    "module.model.c_hidden=8",
    "module.model.num_layers=1",
    "datamodule.split.train=0.1",
    "datamodule.split.validation=0.05",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]

HEADER = [
    "job", "overrides", "status", "best energy MAE", "final energy MAE", "best forces MAE",
    "final forces MAE", "epochs", "wall time",
]  # fmt: skip


def test_sweep_runs_every_combination_and_reports_the_failed_jobs(
    ethanol_store: Path, tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep"
    done = run_cli(
        "-m",
        *TINY[1:],
        f"datamodule.dataset={ethanol_store}",
        f"datamodule.cache_dir={tmp_path / 'cache'}",
        "trainer.max_epochs=1",
        "module.model.c_hidden=8,12",
        "trainer.inference_mode=false,true",  # true raises a ConfigError in its jobs only
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    jobs = {
        p.parents[1].name: [o.lower() for o in yaml.safe_load(p.read_text())]
        for p in sweep.glob("*/.hydra/overrides.yaml")
    }
    assert sorted(jobs) == ["0", "1", "2", "3"]
    good = [n for n, o in jobs.items() if "trainer.inference_mode=false" in o]
    bad = [n for n, o in jobs.items() if "trainer.inference_mode=true" in o]
    assert len(good) == len(bad) == 2
    hidden = set()
    for name in good:
        metrics = json.loads((sweep / name / "metrics.json").read_text())
        assert math.isfinite(metrics["val_forces_mae"]) and metrics["epoch"] == 1
        resolved = yaml.safe_load((sweep / name / "config.yaml").read_text())
        hidden.add(resolved["module"]["model"]["c_hidden"])
        assert not (sweep / name / "error.txt").exists()
    assert hidden == {8, 12}
    for name in bad:
        assert not (sweep / name / "metrics.json").exists()
        assert "inference_mode" in (sweep / name / "error.txt").read_text()
    assert f"sweep {sweep}: 2 of 4 jobs succeeded, 2 failed:" in done.stdout
    for name in bad:
        assert f"  job {name} (" in done.stdout

    table = report(sweep).splitlines()
    assert table[0].split("|")[1:-1] == [
        f" {k} ".ljust(len(c)) for k, c in zip(HEADER, table[0].split("|")[1:-1], strict=True)
    ]
    rows = {line.split("|")[1].strip(): line for line in table[2:6]}
    for name in good:
        final = json.loads((sweep / name / "metrics.json").read_text())["val_forces_mae"]
        assert "| ok " in rows[name] and f"{final:.4g}" in rows[name]
        assert "trainer.inference_mode=false" in rows[name].lower()
        assert "datamodule.dataset" not in rows[name]  # the same in every job: not shown
        assert (sweep / "report" / f"parity_{name}.png").stat().st_size > 1000
    for name in bad:
        assert "| failed " in rows[name]
        assert f"job {name} failed: ConfigError: trainer.inference_mode" in "\n".join(table)
    assert (sweep / "report" / "learning_curves.png").stat().st_size > 1000


def hydra_dirs(monkeypatch: pytest.MonkeyPatch, job_id: str | None) -> tuple[str, str]:
    """hydra.run.dir and hydra.sweep.dir of the shipped config, resolved."""
    if job_id is None:
        monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    else:
        monkeypatch.setenv("SLURM_JOB_ID", job_id)
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            cfg = compose("train", return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        return str(cfg.hydra.run.dir), str(cfg.hydra.sweep.dir)
    finally:
        GlobalHydra.instance().clear()


def test_a_slurm_jobs_run_dir_is_its_job_id(monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir, _ = hydra_dirs(monkeypatch, "4242")
    assert run_dir == "outputs/train/runs/4242"  # the same for a requeued job and every task
    local, _ = hydra_dirs(monkeypatch, None)
    assert local.startswith("outputs/train/runs/20") and "4242" not in local


def test_the_sweep_summary_callback_is_registered() -> None:
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", return_hydra_config=True)
    GlobalHydra.instance().clear()
    callbacks = OmegaConf.to_container(cfg.hydra.callbacks)
    assert callbacks == {"sweep_summary": {"_target_": "physicsml.cli.report.SweepSummary"}}


def test_a_rerun_in_the_same_run_dir_resumes_from_last_ckpt(
    cfg_factory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    first = train(cfg_factory(*TINY, "trainer.max_epochs=1", run_dir=run_dir), run_dir)
    steps_per_epoch = first["global_step"]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()

    # what a requeued job does: the same command (ckpt_path=null) in the same run dir
    with caplog.at_level(logging.INFO, logger="physicsml.train"):
        second = train(cfg_factory(*TINY, "trainer.max_epochs=2", run_dir=run_dir), run_dir)
    assert f"resuming from {run_dir / 'checkpoints' / 'last.ckpt'}" in caplog.text
    assert second["epoch"] == 2
    assert second["global_step"] == 2 * steps_per_epoch  # one more epoch, not two
