"""physicsml-train on the local SLURM cluster through hydra/launcher=slurm (submitit):
a 2-job sweep, a 2-task DDP job (every rank started by srun), and a requeued job that resumes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from physicsml.train import train
from tests.slurm.conftest import SlurmCluster
from tests.test_ddp import DDP_ON_CPU, assert_matches_single_process

TINY = [
    "module.model.c_hidden=8",
    "module.model.num_layers=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def sweep_command(store: Path, tmp_path: Path, cluster: SlurmCluster, *overrides: str) -> list[str]:
    """``python -m physicsml.cli.train -m hydra/launcher=slurm ...`` writing into ``tmp_path``."""
    return [
        sys.executable, "-m", "physicsml.cli.train", "-m", "hydra/launcher=slurm",
        f"hydra.launcher.partition={cluster.partition}", "hydra.launcher.timeout_min=20",
        f"hydra.sweep.dir={tmp_path / 'sweep'}", f"datamodule.dataset={store}",
        f"datamodule.cache_dir={tmp_path / 'cache'}", *TINY, *overrides,
    ]  # fmt: skip


def run(command: list[str], cwd: Path, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
        env=os.environ,
    )  # fmt: skip


def job_logs(sweep: Path) -> dict[str, str]:
    """submitit's per-task logs (stdout + stderr), by file stem (``<job id>_<task>``)."""
    logs: dict[str, str] = {}
    for path in sorted((sweep / ".submitit").rglob("*_log.*")):
        stem = path.name.rsplit("_log.", 1)[0]
        logs[stem] = logs.get(stem, "") + path.read_text(errors="replace")
    return logs


@pytest.mark.slurm
def test_a_two_job_sweep_runs_as_slurm_jobs(
    slurm_cluster: SlurmCluster, ethanol_store: Path, tmp_path: Path
) -> None:
    command = sweep_command(
        ethanol_store, tmp_path, slurm_cluster,
        "module.optimizer.config.lr=1e-3,1e-2", "datamodule.split.train=0.1",
        "datamodule.split.validation=0.05", "trainer.max_epochs=1",
    )  # fmt: skip
    done = run(command, tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    sweep = tmp_path / "sweep"
    lrs = set()
    for job in ("0", "1"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["epoch"] == 1 and metrics["val_forces_mae"] > 0
        resolved = yaml.safe_load((sweep / job / "config.yaml").read_text())
        lrs.add(resolved["module"]["optimizer"]["config"]["lr"])
    assert lrs == {1e-3, 1e-2}
    assert "2 of 2 jobs succeeded" in done.stdout
    # each ran in its own SLURM job (a job array), as one task
    assert len(job_logs(sweep)) == 2


@pytest.mark.slurm
def test_a_two_task_ddp_job_matches_one_process_on_the_global_batch(
    slurm_cluster: SlurmCluster, ethanol_store: Path, tmp_path: Path, cfg_factory
) -> None:
    common = [
        "datamodule.split.train=0.2", "datamodule.split.validation=0.1",
        "trainer.max_epochs=2", "module.optimizer.config.lr=0.01",
    ]  # fmt: skip
    command = sweep_command(
        ethanol_store, tmp_path, slurm_cluster, *common, *DDP_ON_CPU,
        "datamodule.train.batch_size=4",
    )  # fmt: skip
    done = run(command, tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    job_dir = tmp_path / "sweep" / "0"
    logs = job_logs(tmp_path / "sweep")
    assert len(logs) == 2, sorted(logs)  # one SLURM job, two srun tasks
    text = "\n".join(logs.values())
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in text and "GLOBAL_RANK: 1, MEMBER: 2/2" in text
    # srun started both ranks: Lightning re-executed nothing and made no other directory
    assert not list(job_dir.glob("*ddp_process*"))
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == [
        ".submitit",
        "0",
        "multirun.yaml",
    ]

    expected = train(
        cfg_factory(*TINY, *common, "datamodule.train.batch_size=8", run_dir=tmp_path / "single"),
        tmp_path / "single",
    )
    assert_matches_single_process(job_dir, tmp_path / "single", expected)


@pytest.mark.slurm
@pytest.mark.parametrize("interrupt", ["scontrol requeue", "USR2"])
def test_an_interrupted_job_is_requeued_and_resumes_in_the_same_run_dir(
    interrupt: str, slurm_cluster: SlurmCluster, ethanol_store: Path, tmp_path: Path
) -> None:
    """``scontrol requeue`` (SIGTERM): the job resumes from the last epoch's checkpoint.
    USR2 (what SLURM sends before the time limit or on preemption, through submitit):
    a checkpoint is saved at once and submitit requeues the job, which resumes from it."""
    epochs = 3
    command = sweep_command(
        ethanol_store, tmp_path, slurm_cluster, "datamodule.split.train=0.5",
        "datamodule.split.validation=0.05", "datamodule.train.batch_size=4",
        f"trainer.max_epochs={epochs}",
    )  # fmt: skip
    sweep = tmp_path / "sweep"
    checkpoints = sweep / "0" / "checkpoints"
    with subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        slurm_cluster.wait(
            lambda: (checkpoints / "last.ckpt").is_file() or proc.poll() is not None, 300, "epoch 1"
        )
        assert proc.poll() is None, "the job ended before it could be interrupted"
        job_id = next(p.name for p in (sweep / ".submitit").iterdir() if p.is_dir())
        if interrupt == "USR2":
            slurm_cluster.run("scancel", "--signal=USR2", job_id)
        else:
            slurm_cluster.run("scontrol", "requeue", job_id)
        out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out[-4000:]
    assert slurm_cluster.job(job_id)["Restarts"] == "1"

    log = "\n".join(job_logs(sweep).values())
    expected = checkpoints / ("preempted.ckpt" if interrupt == "USR2" else "last.ckpt")
    assert re.findall(r"resuming from (\S+) \(left in the run dir", log) == [str(expected)], log[
        -4000:
    ]
    assert "Restored all states from the checkpoint" in log
    if interrupt == "USR2":
        assert "preempted: saved" in log and "this job is preempted" in log
    assert log.count(f"epoch 1/{epochs} ") <= 1  # the first epoch was not trained again
    metrics = json.loads((sweep / "0" / "metrics.json").read_text())
    assert metrics["epoch"] == epochs
    assert sorted(p.name for p in sweep.iterdir()) == [".submitit", "0", "multirun.yaml"]
    assert "1 of 1 jobs succeeded" in out


@pytest.mark.slurm
def test_a_plain_srun_ddp_run_writes_one_run_dir_named_by_the_job_id(
    slurm_cluster: SlurmCluster, ethanol_store: Path, tmp_path: Path
) -> None:
    """Without the launcher: ``sbatch --ntasks=2 --wrap 'srun physicsml-train trainer=ddp ...'``;
    both tasks compose the same run dir (outputs/train/runs/<job id>), whatever their start time."""
    train_cmd = " ".join(
        [
            sys.executable, "-m", "physicsml.cli.train", f"datamodule.dataset={ethanol_store}",
            f"datamodule.cache_dir={tmp_path / 'cache'}", *TINY, "datamodule.split.train=0.1",
            "datamodule.split.validation=0.05", "trainer.max_epochs=1", "trainer=ddp",
            "trainer.devices=2", "trainer.accelerator=cpu",
        ]
    )  # fmt: skip
    job_id = slurm_cluster.run(
        "sbatch", "--parsable", "--wait", "--ntasks=2", "--ntasks-per-node=2", "--job-name=train",
        f"--output={tmp_path / 'out.txt'}", f"--chdir={tmp_path}", "--wrap", f"srun {train_cmd}",
        timeout=300,
    ).strip()  # fmt: skip
    log = (tmp_path / "out.txt").read_text()
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in log, log[-3000:]
    runs = tmp_path / "outputs" / "train" / "runs"
    assert [p.name for p in runs.iterdir()] == [job_id]
    assert json.loads((runs / job_id / "metrics.json").read_text())["epoch"] == 1
