"""A run directory never loses its run: a rerun resumes only the same run (run.json), a finished
one is left alone, another run is refused before anything is written, and a failed run says why."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from physicsml.data.ingest import ingest
from physicsml.run_dir import RUN_FILE, RunDirConflict
from physicsml.train import train
from tests.structures import ETHANOL
from tests.test_ddp import run_cli

TINY = [
    "module.model.c_hidden=16",
    "module.model.num_layers=2",
    "datamodule.split.train=0.1",
    "datamodule.split.validation=0.05",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]
REFUSED = (
    "holds a run with other settings ({}): start a new run directory (hydra.run.dir=...) or "
    "resume deliberately with ckpt_path={}/checkpoints/last.ckpt in a new directory"
)


class CrashInSecondEpoch(Callback):
    """Fails at the start of the second epoch, after the first one's checkpoint: a killed job."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:
            raise RuntimeError("killed in the second epoch")


def snapshot(run_dir: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``run_dir``: its bytes and modification time."""
    return {
        str(p.relative_to(run_dir)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


def cli(run_dir: Path, *overrides: str, store: Path, tmp: Path):
    return run_cli(
        *TINY,
        f"datamodule.dataset={store}",
        f"datamodule.cache_dir={tmp / 'cache'}",
        f"hydra.run.dir={run_dir}",
        *overrides,
        cwd=tmp,
    )


@pytest.fixture(scope="module")
def finished(ethanol_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of one epoch, finished by ``physicsml-train``."""
    tmp = tmp_path_factory.mktemp("finished")
    done = cli(tmp / "run", "trainer.max_epochs=1", store=ethanol_store, tmp=tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / "run"


def test_the_same_command_again_is_a_no_op(finished: Path, ethanol_store: Path) -> None:
    before = snapshot(finished)
    again = cli(finished, "trainer.max_epochs=1", store=ethanol_store, tmp=finished.parent)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.strip() == (
        f"physicsml-train: {finished} holds this run, finished after 1 epochs: nothing to do "
        "(a larger trainer.max_epochs continues it)"
    )
    assert snapshot(finished) == before
    metrics = json.loads((finished / "metrics.json").read_text())
    assert metrics["epoch"] == 1 and metrics["val_forces_mae"] > 0


def test_other_hyperparameters_are_refused(finished: Path, ethanol_store: Path) -> None:
    before = snapshot(finished)
    refused = cli(
        finished,
        "trainer.max_epochs=1",
        "module.optimizer.config.lr=0.001",
        store=ethanol_store,
        tmp=finished.parent,
    )
    assert refused.returncode == 2
    assert refused.stderr.strip() == "physicsml-train: error: " + str(finished) + " " + (
        REFUSED.format("module.optimizer.config.lr: 0.003 -> 0.001", finished)
    )
    assert snapshot(finished) == before  # config.yaml, model.pt, metrics.json, .hydra/, train.log


def test_another_dataset_is_refused(finished: Path, ethanol_store: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.zarr"
    ingest(ETHANOL, other, index="1:401")  # the same size, other frames
    before = snapshot(finished)
    refused = cli(finished, "trainer.max_epochs=1", store=other, tmp=finished.parent)
    assert refused.returncode == 2
    expected = REFUSED.format("data of datamodule.dataset differ", finished)
    assert refused.stderr.strip() == f"physicsml-train: error: {finished} {expected}"
    assert snapshot(finished) == before


def test_a_run_older_than_run_json_is_known_by_its_config(
    finished: Path, cfg_factory, tmp_path: Path
) -> None:
    old = tmp_path / "old"
    shutil.copytree(finished, old)
    (old / RUN_FILE).unlink()
    before = snapshot(old)
    with pytest.raises(RunDirConflict, match=r"other settings \(module.model.c_hidden: 16 -> 8\)"):
        train(cfg_factory(*TINY, "module.model.c_hidden=8", run_dir=old), old)
    metrics = train(cfg_factory(*TINY, "trainer.max_epochs=1", run_dir=old), old)
    assert metrics == json.loads((old / "metrics.json").read_text())
    assert snapshot(old) == before


def test_a_larger_max_epochs_continues_from_the_checkpoint(
    cfg_factory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    first = train(cfg_factory(*TINY, "trainer.max_epochs=1", run_dir=run_dir), run_dir)
    with caplog.at_level(logging.INFO, logger="physicsml.train"):
        second = train(cfg_factory(*TINY, "trainer.max_epochs=2", run_dir=run_dir), run_dir)
    assert f"resuming from {run_dir / 'checkpoints' / 'last.ckpt'}" in caplog.text
    assert second["epoch"] == 2 and second["global_step"] == 2 * first["global_step"]
    assert json.loads((run_dir / RUN_FILE).read_text())["stop"]["trainer.max_epochs"] == 2

    before = snapshot(run_dir)
    for epochs in (2, 1):  # trained that far already: nothing to do
        again = train(cfg_factory(*TINY, f"trainer.max_epochs={epochs}", run_dir=run_dir), run_dir)
        assert again == json.loads((run_dir / "metrics.json").read_text())
        assert again["epoch"] == 2 and again["val_forces_mae"] == pytest.approx(
            second["val_forces_mae"]
        )
    assert snapshot(run_dir) == before


def test_an_interrupted_run_leaves_error_txt_and_resumes(
    ethanol_store: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    crash = f"+callbacks.crash._target_={__name__}.CrashInSecondEpoch"
    failed = cli(run_dir, "trainer.max_epochs=2", crash, store=ethanol_store, tmp=tmp_path)
    assert failed.returncode == 1
    assert "RuntimeError: killed in the second epoch" in failed.stderr  # Hydra's traceback
    error = "RuntimeError: killed in the second epoch\n"
    assert (run_dir / "error.txt").read_text() == error
    assert "Traceback" in (run_dir / "train.log").read_text()
    assert error.strip() in (run_dir / "train.log").read_text()
    assert not (run_dir / "metrics.json").exists()
    one_epoch = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]

    # the callbacks are no part of a run's identity: the same run, which resumes
    resumed = cli(run_dir, "trainer.max_epochs=2", store=ethanol_store, tmp=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {run_dir / 'checkpoints' / 'last.ckpt'}" in resumed.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epoch"] == 2 and metrics["global_step"] == 2 * one_epoch
    assert not (run_dir / "error.txt").exists()


def test_a_user_error_leaves_error_txt_and_the_log(ethanol_store: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    failed = cli(run_dir, "datamodule.y_node_vector=forcez", store=ethanol_store, tmp=tmp_path)
    assert failed.returncode == 2
    message = failed.stderr.strip().splitlines()[-1]
    assert message.startswith("physicsml-train: error: datamodule.y_node_vector: 'forcez'")
    error = (run_dir / "error.txt").read_text()
    assert error.startswith("ConfigError: datamodule.y_node_vector: 'forcez' is not in")
    assert error.strip() in (run_dir / "train.log").read_text()


def test_settings_a_later_version_adds_unset_keep_the_run(
    ethanol_store: Path, tmp_path: Path
) -> None:
    """A run recorded before ``module.ema_decay``/``module.freeze`` existed is the same run."""
    run = tmp_path / "run"
    assert cli(run, "trainer.max_epochs=1", store=ethanol_store, tmp=tmp_path).returncode == 0
    record = json.loads((run / RUN_FILE).read_text())
    for key in ("module.ema_decay", "module.freeze", "module.init_from"):
        del record["settings"][key]
    (run / RUN_FILE).write_text(json.dumps(record))
    again = cli(run, "trainer.max_epochs=1", store=ethanol_store, tmp=tmp_path)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stderr[-2000:]
    refused = cli(
        run, "trainer.max_epochs=1", "module.ema_decay=0.9", store=ethanol_store, tmp=tmp_path
    )
    assert refused.returncode == 2 and "module.ema_decay: (absent) -> 0.9" in refused.stderr
