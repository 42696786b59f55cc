"""Every YAML of every group composes and type-checks; bad keys and types fail clearly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from physicsml.config.registry import architecture_class, config_dir
from physicsml.config.schema import DataModuleConfig, TrainerConfig

GROUPS = ["module", "datamodule", "trainer", "callbacks", "logger", "experiment"]


def group_options() -> list[tuple[str, str]]:
    return [
        (group, path.stem)
        for group in GROUPS
        for path in sorted((config_dir() / group).glob("*.yaml"))
    ]


@pytest.mark.parametrize(("group", "option"), group_options())
def test_every_option_composes_and_type_checks(cfg_factory, group: str, option: str) -> None:
    cfg = cfg_factory(f"{group}={option}")
    body = {k: v for k, v in cfg.items() if k != "hydra"}
    resolved = OmegaConf.to_container(OmegaConf.create(body), resolve=True, throw_on_missing=True)
    assert isinstance(resolved, dict)
    assert isinstance(OmegaConf.to_object(cfg.datamodule), DataModuleConfig)
    assert isinstance(OmegaConf.to_object(cfg.trainer), TrainerConfig)
    assert cfg.trainer.inference_mode is False
    architecture_class(cfg.module.model.architecture)  # a registered architecture


def test_spec_defaults_in_schema() -> None:
    dm, tr = DataModuleConfig(), TrainerConfig()
    assert (dm.train.batch_size, dm.validation.batch_size, dm.predict.batch_size) == (1, 1, 1)
    assert (dm.num_workers, dm.num_elements, dm.cut_off, dm.self_interaction) == (0, 0, 5.0, False)
    assert dm.pbc is None and dm.cell is None and dm.pre_batch is None
    assert (tr.accelerator, tr.devices, tr.strategy, tr.precision) == ("auto", "auto", "auto", 32)
    assert (tr.default_root_dir, tr.enable_checkpointing, tr.max_epochs) == ("training", False, 1)
    assert tr.min_epochs is None and tr.gradient_clip_val is None


def test_cut_off_is_one_setting(cfg_factory) -> None:
    cfg = cfg_factory("datamodule.cut_off=3.5")
    assert "cut_off" not in cfg.module.model  # the model receives the datamodule's value


def run_train_cli(*overrides: str, run_dir: Path) -> subprocess.CompletedProcess[str]:
    """``physicsml-train OVERRIDES`` in a fresh process, writing into ``run_dir`` (and its
    cache beside it unless an override chooses one)."""
    if not any(o.startswith("datamodule.cache_dir=") for o in overrides):
        overrides = (*overrides, f"datamodule.cache_dir={run_dir.parent / 'cache'}")
    return subprocess.run(
        [sys.executable, "-m", "physicsml.cli.train", *overrides, f"hydra.run.dir={run_dir}"],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("datamodule.not_a_key=1", "datamodule.not_a_key"),
        ("datamodule.cut_off=abc", "datamodule.cut_off"),
        ("trainer.max_epochs=many", "trainer.max_epochs"),
        ("datamodule.pre_batch=gpu", "datamodule.pre_batch"),
        ("module=not_a_model", "module"),
    ],
)
def test_cli_rejects_bad_overrides(override: str, expected: str, tmp_path: Path) -> None:
    result = run_train_cli(override, run_dir=tmp_path / "run")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert not (tmp_path / "run").exists()  # failed before any work


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("keep_freed_memory_mb=0", "keep_freed_memory_mb must be a positive number of MiB or null"),
        ("module.optimizer.name=Adamm", "module.optimizer.name: torch.optim has no 'Adamm'"),
        ("module=ani", "datamodule.cut_off (5.0) must be >= 5.2 for module=ani"),
    ],
)
def test_cli_rejects_bad_values_before_training(
    override: str, message: str, tmp_path: Path
) -> None:
    # well-typed values that only the run can judge: one line, exit 2, no results written
    result = run_train_cli(override, run_dir=tmp_path / "run")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"physicsml-train: error: {message}")
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert not (tmp_path / "run" / "model.pt").exists()
