"""The local SLURM cluster runs multi-task, submitit and requeued jobs and our launcher configs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import submitit
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.slurm.conftest import REPO, SlurmCluster


def rank_and_square(x: int) -> tuple[int, int, int]:
    """Job payload: (task rank, number of tasks, x squared)."""
    env = submitit.JobEnvironment()
    return env.global_rank, env.num_tasks, x * x


@pytest.mark.slurm
def test_two_tasks_run_in_one_job(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    slurm_cluster.run(
        "sbatch", "--wait", "--ntasks=2", "--ntasks-per-node=2", f"--output={out}",
        "--wrap", "srun bash -c 'echo task $SLURM_PROCID of $SLURM_NTASKS on $SLURMD_NODENAME'",
        timeout=120,
    )  # fmt: skip
    lines = sorted(out.read_text().splitlines())
    assert lines == [f"task {rank} of 2 on {slurm_cluster.node}" for rank in (0, 1)]


@pytest.mark.slurm
def test_submitit_runs_a_function_on_two_tasks(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    executor = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm")
    executor.update_parameters(
        timeout_min=5, tasks_per_node=2, cpus_per_task=1, slurm_partition=slurm_cluster.partition
    )
    job = executor.submit(rank_and_square, 7)
    slurm_cluster.wait(job.done, 120, f"submitit job {job.job_id}")
    assert sorted(job.results()) == [(0, 2, 49), (1, 2, 49)]


@pytest.mark.slurm
def test_submitit_sees_a_cancelled_job(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    if not slurm_cluster.accounting:
        pytest.skip("needs accounting (sacct): started with PHYSICSML_SLURM_ACCOUNTING=0")
    executor = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm")
    executor.update_parameters(timeout_min=5, slurm_partition=slurm_cluster.partition)
    job = executor.submit(time.sleep, 300)
    slurm_cluster.wait(
        lambda: slurm_cluster.job(job.job_id)["JobState"] == "RUNNING", 60, "the job to run"
    )
    job.cancel()
    slurm_cluster.wait(lambda: job.done(force_check=True), 60, "submitit to see the cancellation")
    assert job.state.startswith("CANCELLED")


@pytest.mark.slurm
def test_scontrol_requeue_runs_a_running_job_again(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.txt"
    # each run appends its restart count; the first one then waits to be requeued
    script = (
        f'echo "${{SLURM_RESTART_COUNT:-0}}" >> {runs}; '
        '[ "${SLURM_RESTART_COUNT:-0}" -gt 0 ] || sleep 300'
    )
    job_id = slurm_cluster.run(
        "sbatch", "--parsable", f"--output={tmp_path / 'out.txt'}", "--open-mode=append",
        "--wrap", script,
    ).strip()  # fmt: skip
    slurm_cluster.wait(lambda: runs.exists() and runs.read_text() == "0\n", 60, "the first run")
    slurm_cluster.run("scontrol", "requeue", job_id)
    slurm_cluster.wait(
        lambda: slurm_cluster.job(job_id)["JobState"] == "COMPLETED", 120, "the requeued run"
    )
    assert runs.read_text() == "0\n1\n"
    assert slurm_cluster.job(job_id)["Restarts"] == "1"


APP = """
import os
from pathlib import Path

import hydra


@hydra.main(version_base=None, config_path=".", config_name="app")
def main(cfg) -> None:
    rank, ntasks = os.environ["SLURM_PROCID"], os.environ["SLURM_NTASKS"]
    (Path(cfg.out) / f"x{cfg.x}_rank{rank}_of{ntasks}").touch()


main()
"""


def write_app(directory: Path, devices: object) -> None:
    """A Hydra app whose config has the keys our launcher configs read, and sees conf/."""
    (directory / "app.py").write_text(APP)
    config = {
        "trainer": {"devices": devices, "num_nodes": 1},
        "x": 0,
        "out": str(directory),
        "hydra": {"searchpath": [f"file://{REPO / 'conf'}"]},
    }
    OmegaConf.save(config, directory / "app.yaml")


@pytest.mark.parametrize("launcher", ["slurm", "local"])
def test_launcher_configs_compose(launcher: str, tmp_path: Path) -> None:
    write_app(tmp_path, devices=2)
    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        cfg = compose("app", [f"hydra/launcher={launcher}"], return_hydra_config=True)
        params = cfg.hydra.launcher
        assert params._target_.endswith(f"{launcher.capitalize()}Launcher")
        assert params.tasks_per_node == 2
        assert params.submitit_folder.startswith(f"{cfg.hydra.sweep.dir}/.submitit")
        if launcher == "slurm":
            assert params.max_num_timeout > 0
        cfg.trainer.devices = "auto"  # SLURM needs a number of tasks
        with pytest.raises(ValueError, match="tasks_per_node"):
            _ = cfg.hydra.launcher.tasks_per_node


@pytest.mark.slurm
def test_hydra_multirun_on_slurm_gets_one_task_per_device(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    write_app(tmp_path, devices=2)
    done = subprocess.run(
        [
            sys.executable, "app.py", "-m", "hydra/launcher=slurm", "x=3",
            f"hydra.sweep.dir={tmp_path / 'multirun'}", "hydra.launcher.timeout_min=5",
            f"hydra.launcher.partition={slurm_cluster.partition}",
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False, env=os.environ,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.glob("x3_*")) == ["x3_rank0_of2", "x3_rank1_of2"]
