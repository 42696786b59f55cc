"""The ``slurm_cluster`` fixture: a real one-node SLURM cluster on 127.0.0.1.

The cluster is started by ``start_local_slurm.sh`` (root and the Debian packages are needed; see
the script) and left running after the session: stop it with ``stop_local_slurm.sh``. Without
``sbatch`` the tests that use it are skipped, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
START_SCRIPT = HERE / "start_local_slurm.sh"


@dataclass(frozen=True)
class SlurmCluster:
    """The running cluster; ``SLURM_CONF`` is exported for the whole test session."""

    conf: Path
    partition: str = "debug"
    node: str = "localhost"

    @property
    def accounting(self) -> bool:
        """Whether slurmdbd runs, i.e. ``sacct`` works (submitit needs it to see cancelled jobs)."""
        return "accounting_storage/slurmdbd" in self.conf.read_text()

    def run(self, *cmd: str, timeout: float = 60) -> str:
        """Run a SLURM command (``sbatch``, ``scontrol``...) and return its stdout."""
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr}")
        return done.stdout

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (``JobState``, ``Restarts``, ``NodeList``...)."""
        text = self.run("scontrol", "show", "job", "--oneliner", job_id)
        return dict(re.findall(r"(\w+)=(\S*)", text))

    def wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``condition`` every 0.2 s; fail the test after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.2)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """Start the local cluster (a no-op when it is up) and export ``SLURM_CONF``.

    ``PYTHONPATH`` gets the repository root, so that job processes import ``physicsml`` and
    ``tests`` from this checkout, as pytest does.
    """
    if shutil.which("sbatch") is None:
        reason = (
            "SLURM is not installed (no sbatch); install it with: apt-get install -y "
            "--no-install-recommends munge slurmctld slurmd slurm-client slurmdbd mariadb-server"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    done = subprocess.run(
        ["bash", str(START_SCRIPT)], capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"{START_SCRIPT.name} failed:\n{done.stderr}")
    conf = Path(done.stdout.strip().removeprefix("export SLURM_CONF="))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", str(conf))
        mp.setenv(
            "PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        )
        yield SlurmCluster(conf=conf)
