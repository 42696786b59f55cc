"""``physicsml-train``'s command line: help, completion, flags, --config-dir, one-line errors;
``physicsml-report``'s parity plot data."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from physicsml.cli import train as cli
from physicsml.cli.report import validation_predictions
from physicsml.config.registry import config_dir
from physicsml.config.resolvers import config_groups


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``physicsml-train ARGS`` in a fresh process, in ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "physicsml.cli.train", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def main_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> str:
    """Run ``physicsml-train ARGS`` in this process; it must stop with exit 2 and one line on
    stderr, which is returned."""
    monkeypatch.setattr(sys, "argv", ["physicsml-train", *args])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("physicsml-train: error: ")
    return lines[0]


def test_help_lists_the_options_without_the_schemas(tmp_path: Path) -> None:
    done = run_cli("--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "_schema" not in done.stdout
    for group in ("module", "datamodule", "trainer", "experiment", "logger", "callbacks"):
        options = sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))
        assert f"\n{group}: {', '.join(options)}\n" in done.stdout
    assert config_groups() in done.stdout  # also resolvable outside the CLI (a saved config)


def test_choosing_a_schema_is_a_one_line_error(monkeypatch, capsys) -> None:
    line = main_error(monkeypatch, capsys, "module=egnn_schema")
    assert "module=egnn_schema: an internal schema, not an option" in line
    assert "egnn, mace" in line


def test_shell_completion_installs(tmp_path: Path) -> None:
    done = run_cli("-sc", "install=bash", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "complete -o nospace -o default -F hydra_bash_completion" in done.stdout


def test_info_prints_each_line_once(tmp_path: Path) -> None:
    done = run_cli("--info", "plugins", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (done.stdout + done.stderr).count("Installed Hydra Plugins") == 1


def test_config_dir_adds_an_experiment(tmp_path: Path) -> None:
    (tmp_path / "mine" / "experiment").mkdir(parents=True)
    (tmp_path / "mine" / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ntask_name: mine\ntrainer:\n  max_epochs: 3\n"
    )
    (tmp_path / "mine" / "mine.yaml").write_text("defaults:\n  - train\n  - _self_\nseed: 7\n")
    assert "experiment/mine" in str(cli.compose_error(["experiment=mine"]))
    assert cli.compose_error(["experiment=mine"], str(tmp_path / "mine")) is None
    # a primary config (--config-name) in the extra directory
    assert cli.compose_error(["seed=3"], str(tmp_path / "mine"), "mine") is None
    bad_key = cli.compose_error(["trainer.bad=1"], str(tmp_path / "mine"), "mine")
    assert "Key 'bad' not in 'TrainerConfig'" in str(bad_key)

    done = run_cli("-cd", str(tmp_path / "mine"), "experiment=mine", "--cfg", "job", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "task_name: mine" in done.stdout
    assert "max_epochs: 3" in done.stdout


def test_a_missing_config_dir_is_a_one_line_error(monkeypatch, capsys, tmp_path: Path) -> None:
    line = main_error(monkeypatch, capsys, "--config-dir", str(tmp_path / "no"), "seed=1")
    assert f"--config-dir {tmp_path / 'no'}: no such directory" in line


def test_use_distributed_sampler_is_not_a_trainer_key(monkeypatch, capsys) -> None:
    line = main_error(monkeypatch, capsys, "trainer.use_distributed_sampler=true")
    assert "Key 'use_distributed_sampler' not in 'TrainerConfig'" in line


def test_optuna_search_without_the_sweeper(monkeypatch, capsys) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == cli.OPTUNA_SWEEPER else find_spec(name, *a),
    )
    message = 'hparams_search=optuna needs the Optuna sweeper: pip install "physicsml[optuna]"'
    assert cli.sweeper_error(["seed=1", "hparams_search=optuna"]) == message
    assert cli.sweeper_error(["seed=1"]) is None
    assert main_error(monkeypatch, capsys, "-m", "hparams_search=optuna").endswith(message)


def test_a_run_logs_once_and_its_parity_data_is_the_whole_validation_split(
    tmp_path: Path,
) -> None:
    """The shipped ethanol's validation split holds 300 structures (more than the 256 the
    plot once took); the parity MAEs equal the run's validation MAEs."""
    run_dir = tmp_path / "run"
    done = run_cli(
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        f"datamodule.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (done.stdout + done.stderr).count("epoch 1/1 ") == 1  # printed once, not per handler
    count, pairs = validation_predictions(run_dir)
    split = json.loads((run_dir / "split.json").read_text())["validation"]
    assert count == len(split["indices"]) == 300
    assert len(pairs["energy"][0]) == count
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for name in ("energy", "forces"):
        reference, predicted = pairs[name]
        mae = float(np.abs(predicted - reference).mean())
        assert mae == pytest.approx(metrics[f"val_{name}_mae"], rel=1e-4), name
