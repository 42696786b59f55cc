"""A non-editable install (wheel) finds its configs and shipped data from any directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv (reusing this environment's dependencies) with physicsml installed from a wheel."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], check=True)
    wheel_dir = tmp_path_factory.mktemp("wheel")
    python = venv / "bin" / "python"
    subprocess.run(  # built by this environment's setuptools (a new venv's is too old)
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
    )
    (wheel,) = wheel_dir.glob("physicsml-*.whl")
    subprocess.run(
        [python, "-m", "pip", "install", "--no-deps", "--force-reinstall", wheel],
        check=True,
        capture_output=True,
    )
    return venv


def test_wheel_trains_from_another_directory(installed_venv: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PHYSICSML_CACHE"] = str(tmp_path / "cache")
    python = installed_venv / "bin" / "python"
    where = subprocess.run(
        [python, "-c", "import physicsml, sys; print(physicsml.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "site-packages" in where.stdout  # not this checkout
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
