"""Well-typed values that cannot work are one-line errors before any work (exit 2)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from physicsml.lightning.module import PotentialModule
from physicsml.saved_model import SPEC_KEY
from tests.structures import ETHANOL
from tests.test_configs import run_train_cli
from tests.test_saved_model import egnn_spec


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["+module.optimizer.config.momentm=0.9"],
            "module.optimizer.config: AdamW: got an unexpected keyword argument 'momentm'",
        ),
        (["module.scheduler.monitor=val_forces_mea"], "module.scheduler.monitor: no metric"),
        (
            ["callbacks=early_stopping", "callbacks.early_stopping.monitor=val_los"],
            "callbacks.early_stopping.monitor: no metric 'val_los' is logged; choose one of",
        ),
        (["module.y_node_vector_loss.name=MSELos"], "module.y_node_vector_loss.name: torch.nn"),
        (["datamodule.train.batch_size=0"], "datamodule.train.batch_size must be at least 1"),
        (["module.optimizer.config.lr=-1"], "module.optimizer.config: AdamW: Invalid learning"),
        (["+module.scheduler.config.patiense=3"], "module.scheduler.config: ReduceLROnPlateau"),
        (["seed=-1"], "seed must be null or in [0, 2**32)"),
        (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val must be >= 0"),
        (["datamodule.cache_dir=/proc/no_such_dir"], "datamodule.cache_dir: cannot create"),
        (["ckpt_path=missing.ckpt"], "ckpt_path: no such file"),
    ],
)
def test_values_that_cannot_work_fail_before_any_work(
    overrides: list[str], message: str, tmp_path: Path
) -> None:
    result = run_train_cli(*overrides, run_dir=tmp_path / "run")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"physicsml-train: error: {message}"), result.stderr
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_ckpt_path_must_be_a_checkpoint_of_the_same_architecture(tmp_path: Path) -> None:
    module = PotentialModule(egnn_spec())
    saved = tmp_path / "model.pt"
    torch.save({SPEC_KEY: module.spec.as_dict(), "state_dict": module.state_dict()}, saved)
    result = run_train_cli(f"ckpt_path={saved}", run_dir=tmp_path / "run")
    assert result.returncode == 2
    assert "is a saved model, not a training checkpoint" in result.stderr

    mace = replace(module.spec, architecture="mace", hyperparameters={})
    checkpoint = tmp_path / "mace.ckpt"
    torch.save(
        {
            "hyper_parameters": {SPEC_KEY: mace.as_dict()},
            "state_dict": {},
            "optimizer_states": [],
        },
        checkpoint,
    )
    result = run_train_cli(f"ckpt_path={checkpoint}", run_dir=tmp_path / "run")
    assert result.returncode == 2
    assert "a checkpoint of a mace model, but module.model.architecture is egnn" in result.stderr


def test_hyperparameters_the_model_rejects_are_one_line(tmp_path: Path) -> None:
    # caught when the model is built, after the data are prepared
    result = run_train_cli("module.model.c_hidden=-4", run_dir=tmp_path / "run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("physicsml-train: error: module.model: egnn cannot be built with")
    )
    assert not (tmp_path / "run" / "model.pt").exists()


def test_unreadable_data_and_unusable_accelerator_are_one_line(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a structure file\n")
    result = run_train_cli(f"datamodule.dataset={text}", run_dir=tmp_path / "a")
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"physicsml-train: error: {text}: cannot read frame 0")
    )
    assert "Traceback" not in result.stderr
    if not torch.cuda.is_available():
        result = run_train_cli("trainer.accelerator=gpu", run_dir=tmp_path / "b")
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert "physicsml-train: error: No supported gpu backend found" in result.stderr


def test_a_bad_frame_in_a_training_file_points_at_physicsml_ingest(tmp_path: Path) -> None:
    lines = ETHANOL.read_text().splitlines()[:33]  # three 9-atom frames
    lines[12] = re.sub(r"energy=\S+", "energy=nan", lines[12])  # frame 1's comment line
    bad = tmp_path / "bad.extxyz"
    bad.write_text("\n".join(lines) + "\n")
    result = run_train_cli(f"datamodule.dataset={bad}", run_dir=tmp_path / "run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"physicsml-train: error: {bad}: frame 1")
    assert "physicsml-ingest --skip-bad" in last
