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
from ase import Atoms
from ase.build import bulk
from ase.io import read, write
from hydra.core.global_hydra import GlobalHydra

from physicsml.api import compose_config
from physicsml.data.ingest import ingest
from physicsml.data.store import AtomsStore
from physicsml.evaluate import error_table, predict, read_labelled
from physicsml.inference import load_module, predict_atoms
from physicsml.saved_model import read_model_file
from physicsml.train import train
from tests.structures import ETHANOL, cu_bulk, cu_vacancy, labelled

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
    return error_table(data, predict(module, data.atoms, batch_size=8, progress=False))["overall"]


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
    assert saved["per_config_type"] == {}  # ethanol has no config_type
    assert "S MAE" not in result.stdout and "config_type" not in result.stdout


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


@pytest.fixture(scope="module")
def copper_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-epoch tiny EGNN trained on EMT copper energies, forces and stresses."""
    tmp = tmp_path_factory.mktemp("copper")
    write(tmp / "cu.extxyz", cu_bulk(4) + cu_vacancy(4), format="extxyz")
    ingest(tmp / "cu.extxyz", tmp / "cu.zarr")
    cfg = compose_config(
        [
            f"datamodule.dataset={tmp / 'cu.zarr'}",
            f"datamodule.cache_dir={tmp / 'cache'}",
            "datamodule.y_graph_tensor=stress",
            "datamodule.cut_off=4.0",
            "datamodule.split.train=0.75",
            "datamodule.split.validation=0.25",
            "module=egnn",
            "module.compute_stress=true",
            "module.model.c_hidden=8",
            "module.model.num_layers=1",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
        ],
        run_dir=tmp / "run",
    )
    try:
        train(cfg, tmp / "run")
    finally:
        GlobalHydra.instance().clear()
    return tmp / "run"


def copper_cluster() -> Atoms:
    """A non-periodic EMT Cu cluster: energy and forces, no stress, config_type ``cluster``."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.pbc, atoms.cell = False, np.zeros((3, 3))
    return labelled(atoms, "cluster", stress=False)


def test_eval_per_config_type_and_stress(copper_run: Path, tmp_path: Path) -> None:
    frames = cu_bulk(2) + cu_vacancy(2) + [copper_cluster()]
    data = tmp_path / "mixed.extxyz"
    write(data, frames, format="extxyz")
    out, table = tmp_path / "pred.extxyz", tmp_path / "errors.json"
    result = _eval(copper_run, data, "--quiet", "--out", out, "--json", table, cache=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "config_type cu_vacancy" in result.stdout and "S MAE GPa" in result.stdout
    saved = json.loads(table.read_text())
    groups = saved["per_config_type"]
    assert list(groups) == ["cu_bulk", "cu_vacancy", "cluster"]
    assert [g["structures"] for g in groups.values()] == [2, 2, 1]
    assert groups["cluster"]["stress_mae_eV_per_A3"] is None  # no stress: left out

    written = read(out, ":")
    module = load_module(copper_run / "model.pt")
    expected = predict_atoms(module, frames[:4], stress=True)["stress"]
    for atoms, ref, stress in zip(written[:4], frames[:4], expected, strict=True):
        assert atoms.info["pred_stress"].shape == (3, 3)
        # float32 model on positions that went through extxyz text: 1e-6 eV/Å³ is 1.6e-4 GPa
        np.testing.assert_allclose(atoms.info["pred_stress"], stress, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(atoms.get_stress(), ref.get_stress(), rtol=1e-9, atol=1e-12)
        assert atoms.info["config_type"] == ref.info["config_type"]
    assert "pred_stress" not in written[4].info and "stress" not in written[4].calc.results
    errors = np.array([a.info["pred_stress"] - a.get_stress(voigt=False) for a in written[:4]])
    mae = np.abs(errors).mean()
    assert mae > 0 and saved["overall"]["stress_mae_eV_per_A3"] == pytest.approx(mae, rel=1e-6)
    assert saved["overall"]["stress_mae_GPa"] == pytest.approx(mae * 160.21766, rel=1e-6)
    vacancy = np.abs(errors[2:]).mean()
    assert groups["cu_vacancy"]["stress_mae_eV_per_A3"] == pytest.approx(vacancy, rel=1e-6)
    energies = [a.info["pred_energy"] - a.get_potential_energy() for a in written]
    assert groups["cluster"]["energy_mae_eV"] == pytest.approx(abs(energies[4]), rel=1e-6)
    assert groups["cu_bulk"]["energy_rmse_eV"] == pytest.approx(
        np.sqrt(np.mean(np.square(energies[:2]))), rel=1e-6
    )


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
