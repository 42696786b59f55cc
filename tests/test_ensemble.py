"""Deep ensembles: a sweep over seeds is an ensemble whose mean and spread physicsml-eval
reports, with the spread's calibration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase.io import read
from hydra.core.global_hydra import GlobalHydra

from physicsml.api import compose_config
from physicsml.data.ingest import ingest
from physicsml.ensemble import ensemble_members
from physicsml.inference import load_module, predict_atoms
from physicsml.saved_model import SavedModelError
from physicsml.train import train
from tests.structures import ETHANOL
from tests.test_eval import _eval, _one_error_line


def _member(run_dir: Path, store: Path, seed: int, cut_off: float = 5.0) -> None:
    cfg = compose_config(
        [
            f"datamodule.dataset={store}",
            f"datamodule.cache_dir={run_dir.parent / 'cache'}",
            f"datamodule.cut_off={cut_off}",
            "module.model.c_hidden=16",
            "module.model.num_layers=1",
            "trainer.max_epochs=2",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            f"seed={seed}",
        ],
        run_dir=run_dir,
    )
    try:
        train(cfg, run_dir)
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Three members trained with seeds 0, 1, 2 in a sweep's layout, and validation data."""
    tmp = tmp_path_factory.mktemp("ensemble")
    ingest(ETHANOL, tmp / "train.zarr", index=":160")
    ingest(ETHANOL, tmp / "test.zarr", index="400:460")
    for seed in range(3):
        _member(tmp / "sweep" / str(seed), tmp / "train.zarr", seed)
    return tmp / "sweep", tmp / "test.zarr"


def test_ensemble_mean_spread_and_calibration(sweep, tmp_path: Path) -> None:
    sweep_dir, data = sweep
    members = ensemble_members(sweep_dir)
    assert [m.parent.name for m in members] == ["0", "1", "2"]
    out, table, plot = tmp_path / "pred.extxyz", tmp_path / "errors.json", tmp_path / "rel.png"
    args = [sweep_dir, data, "--out", out, "--json", table, "--plot", plot, "--quiet"]
    result = _eval(*args, cache=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "an ensemble of 3" in result.stdout and "Spearman" in result.stdout

    frames = read(ETHANOL, "400:460")
    each = [predict_atoms(load_module(m), frames) for m in members]
    energies = np.array([p["energy"] for p in each]).reshape(3, -1)
    forces = np.array([np.stack(p["forces"]) for p in each])  # [member, structure, atom, 3]
    written = read(out, ":")
    np.testing.assert_allclose(
        [a.info["pred_energy"] for a in written], energies.mean(0), atol=1e-6
    )
    np.testing.assert_allclose(
        [a.info["pred_energy_std"] for a in written], energies.std(0), atol=1e-6
    )
    np.testing.assert_allclose(
        np.stack([a.arrays["pred_forces"] for a in written]), forces.mean(0), atol=1e-6
    )
    np.testing.assert_allclose(
        np.stack([a.arrays["pred_forces_std"] for a in written]), forces.std(0), atol=1e-6
    )
    saved = json.loads(table.read_text())
    reference = np.stack([a.get_forces() for a in frames])
    assert saved["overall"]["forces_mae_eV_per_A"] == pytest.approx(
        np.abs(forces.mean(0) - reference).mean(), rel=1e-6
    )
    assert saved["model"] == [str(m) for m in members]
    calibration = saved["calibration"]
    assert -1 <= calibration["forces_spearman"] <= 1 and -1 <= calibration["energy_spearman"] <= 1
    bins = calibration["forces_reliability"]
    assert len(bins) == 5 and sum(b["structures"] for b in bins) == 60
    spreads = [b["mean_std_eV_per_A"] for b in bins]
    assert spreads == sorted(spreads) and spreads[0] > 0
    assert plot.stat().st_size > 0


def test_members_must_take_the_same_inputs(sweep, tmp_path: Path) -> None:
    sweep_dir, data = sweep
    odd = tmp_path / "odd"
    _member(odd, sweep_dir.parent / "train.zarr", seed=5, cut_off=4.0)
    line = _one_error_line(_eval(sweep_dir / "0", odd, data, "--quiet", cache=tmp_path))
    assert "must share elements and graph settings" in line and "cut_off=4.0" in line
    (tmp_path / "empty" / "job").mkdir(parents=True)
    with pytest.raises(SavedModelError, match="neither a run directory nor a sweep"):
        ensemble_members(tmp_path / "empty")


def test_the_calculator_of_an_ensemble_gives_mean_and_spread(sweep) -> None:
    from physicsml.calculators import PhysicsMLCalculator

    sweep_dir, _ = sweep
    atoms = read(ETHANOL, "410")
    single = []
    for member in ensemble_members(sweep_dir):
        atoms.calc = PhysicsMLCalculator(member)
        single.append((atoms.get_potential_energy(), atoms.get_forces()))
    atoms.calc = PhysicsMLCalculator(sweep_dir)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    energies = np.array([e for e, _ in single])
    members_forces = np.stack([f for _, f in single])
    assert energy == pytest.approx(energies.mean(), abs=1e-9)
    assert atoms.calc.results["energy_std"] == pytest.approx(energies.std(), abs=1e-9)
    np.testing.assert_allclose(forces, members_forces.mean(0), atol=1e-9)
    np.testing.assert_allclose(atoms.calc.results["forces_std"], members_forces.std(0), atol=1e-9)
    assert atoms.calc.results["energy_std"] > 0
