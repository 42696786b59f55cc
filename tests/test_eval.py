"""model.pt is the best epoch's model, test=true tests it, and physicsml-eval."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.io import read, write
from hydra.core.global_hydra import GlobalHydra

from physicsml.api import compose_config
from physicsml.data.ingest import ingest
from physicsml.data.store import AtomsStore
from physicsml.evaluate import error_table, predict, read_labelled
from physicsml.inference import load_module, predict_atoms
from physicsml.saved_model import read_model_file
from physicsml.train import train
from tests.structures import ETHANOL, cu_bulk

SPLITS = {"train": "0:120", "validation": "120:160", "test": "160:200"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict[str, Path]]:
    """A 3-epoch tiny EGNN whose best checkpoint is not its last: the checkpoint callback
    keeps the highest validation loss (the first epoch's, as the loss falls)."""
    tmp = tmp_path_factory.mktemp("eval")
    stores = {name: tmp / f"{name}.zarr" for name in SPLITS}
    for name, index in SPLITS.items():
        ingest(ETHANOL, stores[name], index=index)
    return tmp / "run", train_run(tmp / "run", stores, epochs=3), stores


def train_run(run_dir: Path, stores: dict[str, Path], epochs: int) -> dict:
    """Train, continue or leave alone (finished) the tiny run of ``epochs`` in ``run_dir``."""
    cfg = compose_config(
        [
            "datamodule.dataset=null",
            *(f"datamodule.{name}_data={path}" for name, path in stores.items()),
            f"datamodule.cache_dir={run_dir.parent / 'cache'}",
            "module=egnn",
            "module.model.c_hidden=16",
            "module.model.num_layers=2",
            f"trainer.max_epochs={epochs}",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            "callbacks.best_checkpoint.mode=max",
            "test=true",
        ],
        run_dir=run_dir,
    )
    try:
        return train(cfg, run_dir)
    finally:
        GlobalHydra.instance().clear()


def test_model_pt_holds_the_best_checkpoint(run) -> None:
    run_dir, metrics, _ = run
    best = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    _, weights = read_model_file(run_dir / "model.pt")
    assert weights.keys() == best["state_dict"].keys()
    for key, value in weights.items():
        assert torch.equal(value, best["state_dict"][key]), key
    assert any(not torch.equal(v, last["state_dict"][k]) for k, v in weights.items())
    recorded = json.loads((run_dir / "metrics.json").read_text())
    assert recorded["epoch"] == 3  # the final epoch's metrics stay
    assert recorded["model_epoch"] == recorded["best_epoch"] == best["epoch"] + 1 < 3
    assert recorded["model_source"] == "checkpoints/best.ckpt (highest val_loss)"
    assert recorded["best_val_loss"] > recorded["val_loss"]
    assert recorded == json.loads(json.dumps(metrics))


def _table(model: Path, store: Path) -> dict:
    module = load_module(model)
    data = read_labelled(AtomsStore(store), module)
    energy, forces = predict(module, data.atoms, batch_size=8, progress=False)
    return error_table(data, energy, forces)["overall"]


def test_test_metrics_are_those_of_the_best_weights(run) -> None:
    run_dir, metrics, stores = run
    best = _table(run_dir / "checkpoints" / "best.ckpt", stores["test"])
    last = _table(run_dir / "checkpoints" / "last.ckpt", stores["test"])
    assert metrics["test_forces_mae"] == pytest.approx(best["forces_mae_eV_per_A"], rel=1e-4)
    assert metrics["test_energy_mae"] == pytest.approx(best["energy_mae_eV"], rel=1e-4)
    assert metrics["test_energy_mae"] != pytest.approx(last["energy_mae_eV"], rel=0.1)


def _eval(*args: object, cache: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "physicsml.cli.eval", *map(str, args)]
    env = {**os.environ, "PHYSICSML_CACHE": str(cache)}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_eval_writes_predictions_and_errors(run, tmp_path: Path) -> None:
    run_dir, _, stores = run
    out, table = tmp_path / "pred.extxyz", tmp_path / "errors.json"
    args = [run_dir, stores["test"], "--out", out, "--json", table, "--batch-size", "16"]
    result = _eval(*args, cache=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "F MAE eV/Å" in result.stdout and "element H" in result.stdout
    written = read(out, ":")
    frames = read(ETHANOL, "160:200")
    expected = predict_atoms(load_module(run_dir / "model.pt"), frames)
    assert len(written) == len(frames) == 40
    np.testing.assert_allclose(
        [a.info["pred_energy"] for a in written], expected["energy"], rtol=0, atol=1e-6
    )
    for atoms, ref, forces in zip(written, frames, expected["forces"], strict=True):
        np.testing.assert_allclose(atoms.arrays["pred_forces"], forces, atol=1e-6)
        np.testing.assert_allclose(atoms.get_forces(), ref.get_forces(), atol=1e-6)
        assert atoms.get_potential_energy() == pytest.approx(ref.get_potential_energy())
    errors = np.concatenate([a.arrays["pred_forces"] - a.get_forces() for a in written])
    energies = np.array([a.info["pred_energy"] - a.get_potential_energy() for a in written])
    saved = json.loads(table.read_text())
    assert saved["overall"]["forces_mae_eV_per_A"] == pytest.approx(np.abs(errors).mean())
    assert saved["overall"]["energy_rmse_eV"] == pytest.approx(np.sqrt((energies**2).mean()))
    assert saved["overall"]["energy_mae_meV_per_atom"] == pytest.approx(
        1000 * np.abs(energies).mean() / 9
    )
    assert set(saved["per_element"]) == {"C", "H", "O"}
    assert saved["per_element"]["H"]["atoms"] == 6 * 40
    assert list(saved["per_size"]) == ["9"]


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and lines[0].startswith("physicsml-eval: error: "), result.stderr
    return lines[0]


def test_eval_errors(run, tmp_path: Path) -> None:
    run_dir, _, stores = run
    missing = _one_error_line(_eval(tmp_path / "nothing", stores["test"], cache=tmp_path))
    assert "no model.pt" in missing
    assert "does not exist" in _one_error_line(_eval(run_dir, tmp_path / "no.zarr", cache=tmp_path))
    copper = tmp_path / "cu.extxyz"
    write(copper, cu_bulk(2), format="extxyz")
    unknown = _one_error_line(_eval(run_dir, copper, "--quiet", cache=tmp_path))
    assert "element Cu not known to the model" in unknown


def test_eval_without_labels_writes_predictions_only(run, tmp_path: Path) -> None:
    run_dir, _, _ = run
    bare = tmp_path / "bare.extxyz"
    frames = read(ETHANOL, ":3")
    for atoms in frames:
        atoms.calc = None
    write(bare, frames, format="extxyz")
    refused = _one_error_line(_eval(run_dir, bare, "--quiet", cache=tmp_path))
    assert "no reference energies or forces" in refused and "--out" in refused
    out = tmp_path / "pred.extxyz"
    result = _eval(run_dir, bare, "--quiet", "--out", out, cache=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "predictions only" in result.stdout
    assert [len(a.arrays["pred_forces"]) for a in read(out, ":")] == [9, 9, 9]


def test_without_a_best_checkpoint_model_pt_is_the_last_epoch(cfg_factory, tmp_path: Path) -> None:
    cfg = cfg_factory(
        "module.model.c_hidden=16",
        "module.model.num_layers=1",
        "datamodule.split.train=0.1",
        "trainer.max_epochs=1",
        "callbacks=none",
    )
    metrics = train(cfg, tmp_path / "run")
    assert metrics["model_epoch"] == metrics["epoch"] == 1
    assert metrics["model_source"] == "last epoch" and "best_epoch" not in metrics
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_finished_run_is_left_alone_and_continuing_keeps_the_best(run) -> None:
    """Last in this file: it continues the module's run."""
    run_dir, metrics, stores = run
    model = run_dir / "model.pt"
    written = model.stat().st_mtime_ns
    assert train_run(run_dir, stores, epochs=3) == json.loads(json.dumps(metrics))
    assert model.stat().st_mtime_ns == written
    continued = train_run(run_dir, stores, epochs=4)
    best = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert continued["epoch"] == 4
    # the best epoch is still the first: the best score survived the resume
    assert continued["model_epoch"] == best["epoch"] + 1 == metrics["model_epoch"]
    _, weights = read_model_file(model)
    assert all(torch.equal(v, best["state_dict"][k]) for k, v in weights.items())
    assert model.stat().st_mtime_ns != written
