"""A non-editable install (wheel) finds its configs and shipped data from any directory."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def dependency_dirs() -> list[str]:
    """The running interpreter's site directories, where physicsml's dependencies live."""
    dirs = site.getsitepackages()
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return dirs


def clean_environment() -> dict[str, str]:
    """This process's environment without ``PYTHONPATH``."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.fixture(scope="module")
def installed_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with physicsml installed from a wheel (without its dependencies) that
    imports those dependencies from the running interpreter's site directories, through a
    ``.pth`` file: this works whether or not the tests run inside a virtual environment."""
    venv = tmp_path_factory.mktemp("venv")
    # without PYTHONPATH (the SLURM fixture puts this checkout on it): pip would take the
    # checkout for an installed physicsml and skip the wheel
    env = clean_environment()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, env=env)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.strip()
    (Path(purelib) / "physicsml_test_dependencies.pth").write_text("\n".join(dependency_dirs()))
    wheel_dir = tmp_path_factory.mktemp("wheel")
    subprocess.run(  # built by this environment's setuptools (a new venv's may be too old)
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            wheel_dir,
            REPO,
        ],
        check=True,
        capture_output=True,
        env=env,
    )
    (wheel,) = wheel_dir.glob("physicsml-*.whl")
    subprocess.run(  # this environment's pip, installing into the venv (which has none)
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", wheel],
        check=True,
        capture_output=True,
        env=env,
    )
    return venv


def test_wheel_trains_from_another_directory(installed_venv: Path, tmp_path: Path) -> None:
    env = clean_environment()
    env["PHYSICSML_CACHE"] = str(tmp_path / "cache")
    python = installed_venv / "bin" / "python"
    where = subprocess.run(
        [python, "-c", "import physicsml; print(physicsml.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.returncode == 0, where.stderr[-3000:]
    package = Path(where.stdout.strip()).resolve().parent
    assert package.is_relative_to(installed_venv.resolve())  # the wheel, not this checkout
    assert (package / "conf" / "train.yaml").is_file()
    assert (package / "data_files" / "ethanol.extxyz").is_file()
    result = subprocess.run(
        [
            installed_venv / "bin" / "physicsml-train",
            "trainer=debug",
            "module.model.c_hidden=8",
            "module.model.num_layers=1",
            "datamodule.split.train=0.05",
            "datamodule.split.validation=0.02",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epoch"] == 1
    assert "run directory" in result.stdout
