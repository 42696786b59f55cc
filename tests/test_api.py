"""Python API (Model), saved models, weights_only checkpoints and the ASE calculator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ase.io import read

import physicsml
from physicsml.calculators import PhysicsMLCalculator
from physicsml.run_dir import RunDirConflict
from physicsml.saved_model import SPEC_KEY, SavedModelError, read_model_file
from tests.structures import ETHANOL

OVERRIDES = [
    "module=egnn",
    "module.model.c_hidden=16",
    "module.model.num_layers=2",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("api")
    frames = read(ETHANOL, ":120")
    model = physicsml.Model.from_overrides(
        [*OVERRIDES, f"datamodule.cache_dir={tmp / 'cache'}"], run_dir=tmp / "run"
    )
    metrics = model.train(train_data=frames[:100], validation_data=frames[100:])
    return model, metrics, frames, tmp


def test_train_from_atoms_lists(trained) -> None:
    model, metrics, _, tmp = trained
    assert metrics["epoch"] == 2
    assert np.isfinite(metrics["val_forces_mae"])
    assert (tmp / "run" / "checkpoints" / "last.ckpt").is_file()


def test_predict_save_load_roundtrip(trained) -> None:
    model, _, frames, tmp = trained
    preds = model.predict(frames[100:105])
    assert len(preds["energy"]) == 5 and preds["forces"][0].shape == (9, 3)
    # Predictions are in eV: near the reference energies thanks to the fitted E0.
    ref = np.array([a.get_potential_energy() for a in frames[100:105]])
    assert np.abs(np.array(preds["energy"]) - ref).max() < 5.0

    model.save(tmp / "saved")
    again = physicsml.Model.load(tmp / "saved")
    preds2 = again.predict(frames[100:105])
    np.testing.assert_allclose(np.array(preds2["energy"]), np.array(preds["energy"]), rtol=1e-6)
    blob = torch.load(tmp / "saved" / "model.pt", weights_only=True)
    assert set(blob) == {SPEC_KEY, "state_dict"}


def test_checkpoints_load_weights_only(trained) -> None:
    _, _, _, tmp = trained
    blob = torch.load(tmp / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert blob["epoch"] == 1 and "rng_states" in blob
    # a checkpoint and model.pt hold the same spec: one contract for both
    from_ckpt, ckpt_weights = read_model_file(tmp / "run" / "checkpoints" / "last.ckpt")
    from_model, model_weights = read_model_file(tmp / "run" / "model.pt")
    assert from_ckpt == from_model and from_model.architecture == "egnn"
    assert ckpt_weights.keys() == model_weights.keys()


@pytest.mark.parametrize("where", ["run", "ckpt", "saved"])
def test_ase_calculator(trained, where: str) -> None:
    model, _, frames, tmp = trained
    model.save(tmp / "saved")
    path = {
        "run": tmp / "run",
        "ckpt": tmp / "run" / "checkpoints" / "last.ckpt",
        "saved": tmp / "saved",
    }[where]
    atoms = frames[110].copy()
    atoms.calc = PhysicsMLCalculator(path, double=True)
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    assert forces.shape == (9, 3)
    # Forces are the negative gradient of the calculator's energy.
    h = 1e-4
    shifted = atoms.copy()
    shifted.calc = atoms.calc
    shifted.positions[2, 1] += h
    e_plus = shifted.get_potential_energy()
    shifted.positions[2, 1] -= 2 * h
    e_minus = shifted.get_potential_energy()
    assert -(e_plus - e_minus) / (2 * h) == pytest.approx(forces[2, 1], abs=1e-4)
    assert np.isfinite(energy)


def test_calculator_rejects_missing_model(tmp_path: Path) -> None:
    with pytest.raises(SavedModelError, match="model.pt"):
        PhysicsMLCalculator(tmp_path)


def test_predict_from_a_file_matches_atoms(trained, tmp_path: Path) -> None:
    model, _, frames, _ = trained
    from ase.io import write

    path = tmp_path / "five.extxyz"
    write(path, frames[100:105])
    from_file = model.predict(path)
    from_atoms = model.predict(frames[100:105])
    np.testing.assert_allclose(np.array(from_file["energy"]), np.array(from_atoms["energy"]))
    np.testing.assert_allclose(from_file["forces"][3], from_atoms["forces"][3], atol=1e-6)


def test_other_atoms_into_a_trained_run_dir_touch_nothing(trained) -> None:
    _, _, frames, tmp = trained
    before = {p: p.read_bytes() for p in (tmp / "run").rglob("*") if p.is_file()}
    other = physicsml.Model.from_overrides(
        [*OVERRIDES, f"datamodule.cache_dir={tmp / 'cache'}"], run_dir=tmp / "run"
    )
    with pytest.raises(RunDirConflict, match="data of datamodule.train_data differ"):
        other.train(train_data=frames[:50], validation_data=frames[100:])
    after = {p: p.read_bytes() for p in (tmp / "run").rglob("*") if p.is_file()}
    assert after == before
