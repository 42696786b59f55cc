"""DDP on CPU (gloo) without SLURM: Lightning's subprocess launcher, one run dir, exact metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from physicsml.train import train

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "module.model.c_hidden=8",
    "module.model.num_layers=1",
    "module.optimizer.config.lr=0.01",
    "datamodule.split.train=0.2",
    "datamodule.split.validation=0.1",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


DDP_ON_CPU = ["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu"]
"""Two ranks on CPU (gloo): the DDP setup of every test here and in tests/slurm."""


def data(store: Path, tmp_path: Path) -> list[str]:
    """The ethanol store, with a cache inside the test's directory."""
    return [f"datamodule.dataset={store}", f"datamodule.cache_dir={tmp_path / 'cache'}"]


def assert_matches_single_process(run_dir: Path, single_dir: Path, expected: dict) -> None:
    """A DDP run's metrics and weights equal the 1-process run on the global batch
    (``expected`` are its metrics), and only rank 0 logged: one validation row per epoch."""
    got = json.loads((run_dir / "metrics.json").read_text())
    assert got["global_step"] == expected["global_step"]
    for key in ("train_loss", "val_loss", "val_energy_mae", "val_forces_mae", "val_forces_rmse"):
        assert got[key] == pytest.approx(expected[key], rel=1e-4), key
    a = torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(single_dir / "model.pt", weights_only=True)["state_dict"]
    for key, value in b.items():
        torch.testing.assert_close(a[key], value, rtol=1e-4, atol=1e-5, msg=key)
    rows = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    column = rows[0].split(",").index("val_loss")
    assert sum(1 for r in rows[1:] if r.split(",")[column]) == expected["epoch"]


def run_cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m physicsml.cli.train ARGS`` in ``cwd`` (this checkout on ``PYTHONPATH``)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [sys.executable, "-m", "physicsml.cli.train", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def test_ddp_on_two_cpu_processes_matches_one_process_on_the_global_batch(
    cfg_factory, ethanol_store: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    ddp_dir = runs / "ddp"
    done = run_cli(
        *TINY,
        *data(ethanol_store, tmp_path),
        "datamodule.train.batch_size=4",  # per rank: the global batch is 8
        *DDP_ON_CPU,
        f"hydra.run.dir={ddp_dir}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "GLOBAL_RANK: 1" in done.stderr + done.stdout  # a second rank really ran
    # Lightning re-executed the command for rank 1 into the same directory: no other run dir
    assert [p.name for p in runs.iterdir()] == ["ddp"]
    assert not (tmp_path / "outputs").exists()

    single = cfg_factory(*TINY, "datamodule.train.batch_size=8", run_dir=runs / "single")
    expected = train(single, runs / "single")

    assert expected["global_step"] == 2 * 10  # 80 frames / 8 per step, 2 epochs
    assert_matches_single_process(ddp_dir, runs / "single", expected)


@pytest.mark.slow
def test_a_sweep_of_ddp_jobs_with_the_basic_launcher(ethanol_store: Path, tmp_path: Path) -> None:
    """Each job starts its own second rank, in its own directory, not the whole sweep again."""
    sweep = tmp_path / "sweep"
    done = run_cli(
        "-m",
        *TINY,
        *data(ethanol_store, tmp_path),
        "datamodule.split.train=0.1",
        "trainer.max_epochs=1",
        "module.model.c_hidden=8,12",
        *DDP_ON_CPU,
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (done.stdout + done.stderr).count("GLOBAL_RANK: 1, MEMBER: 2/2") == 2
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "1", "multirun.yaml"]
    for job in ("0", "1"):
        assert json.loads((sweep / job / "metrics.json").read_text())["epoch"] == 1
        assert (sweep / job / "train_ddp_process_1.log").is_file()  # rank 1 ran in this job's dir
    assert not (tmp_path / "outputs").exists()
    assert f"sweep {sweep}: 2 of 2 jobs succeeded" in done.stdout


@pytest.mark.slow
def test_a_ddp_job_through_the_local_submitit_launcher(ethanol_store: Path, tmp_path: Path) -> None:
    """hydra/launcher=local starts both tasks; they join one process group (no re-exec)."""
    sweep = tmp_path / "sweep"
    done = run_cli(
        "-m",
        "hydra/launcher=local",
        *TINY,
        *data(ethanol_store, tmp_path),
        "datamodule.split.train=0.1",
        "trainer.max_epochs=1",
        *DDP_ON_CPU,
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in logs and "GLOBAL_RANK: 1, MEMBER: 2/2" in logs
    assert not list((sweep / "0").glob("*ddp_process*"))  # Lightning started no process
    assert json.loads((sweep / "0" / "metrics.json").read_text())["epoch"] == 1
