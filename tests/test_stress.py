"""Training on stresses: the strain derivative in the module, masked missing labels, metrics."""

from __future__ import annotations

import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch

from physicsml.config.errors import ConfigError
from physicsml.data.graph import atoms_to_batch
from physicsml.data.ingest import ingest
from physicsml.inference import load_module
from physicsml.lightning.callbacks import GPA_PER_EV_PER_A3
from physicsml.train import train
from tests.structures import cu_bulk, cu_triclinic, cu_vacancy

STRESS = [
    "datamodule.y_graph_tensor=stress",
    "module.compute_stress=true",
    "datamodule.cut_off=4.0",
    "module.model.c_hidden=8",
    "module.model.num_layers=1",
    "datamodule.split.train=0.7",
    "datamodule.split.validation=0.3",
    "datamodule.train.batch_size=2",
    "trainer.max_epochs=2",
]


@pytest.fixture(scope="module")
def copper_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten labelled EMT copper cells (bulk and vacancy; cubic and sheared) as a store."""
    directory = tmp_path_factory.mktemp("copper")
    ase.io.write(directory / "cu.extxyz", cu_bulk(6) + cu_vacancy(4), format="extxyz")
    ingest(directory / "cu.extxyz", directory / "cu.zarr")
    return directory / "cu.zarr"


def test_training_on_stress_logs_stress_errors(cfg_factory, copper_store: Path, caplog) -> None:
    cfg = cfg_factory(*STRESS, f"datamodule.dataset={copper_store}")
    run_dir = Path(cfg.hydra.runtime.output_dir)
    metrics = train(cfg, run_dir)
    for key in ("val_stress_mae", "val_stress_rmse", "train_stress_mae"):
        assert np.isfinite(metrics[key]) and metrics[key] > 0, key
    assert metrics["val_stress_mae"] < 0.05  # eV/Å³: EMT's stresses here are below ~0.1
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["val_stress_mae"] == pytest.approx(metrics["val_stress_mae"])
    line = next(r.getMessage() for r in caplog.records if "epoch 2/2" in r.getMessage())
    gpa = metrics["val_stress_mae"] * GPA_PER_EV_PER_A3
    assert f"val_stress_mae {gpa:.4g} GPa" in line

    module = load_module(run_dir).double()
    atoms = cu_triclinic(1)[0]
    batch = atoms_to_batch([atoms], module.spec.elements, module.spec.graph.cut_off)
    preds = module(batch)
    assert preds["stress"].shape == (1, 3, 3) and module.compute_stress
    # the stress of the trained model is its strain derivative (central difference)
    h, volume = 1e-5, atoms.get_volume()
    energies = []
    for sign in (1.0, -1.0):
        deformed = atoms.copy()
        deformed.set_cell(atoms.cell.array * (1 + sign * h), scale_atoms=True)
        batch = atoms_to_batch([deformed], module.spec.elements, module.spec.graph.cut_off)
        energies.append(module(batch, stress=False)["energy"].item())
    trace = (energies[0] - energies[1]) / (2 * h) / volume
    assert trace == pytest.approx(torch.trace(preds["stress"][0]).item(), rel=1e-5)


def test_stress_target_needs_compute_stress(cfg_factory, copper_store: Path) -> None:
    cfg = cfg_factory(*STRESS, f"datamodule.dataset={copper_store}", "module.compute_stress=false")
    with pytest.raises(ConfigError, match="module.compute_stress=true"):
        train(cfg, Path(cfg.hydra.runtime.output_dir))


def test_a_stress_column_must_be_three_by_three(cfg_factory, copper_store: Path) -> None:
    cfg = cfg_factory(
        *STRESS, f"datamodule.dataset={copper_store}", "datamodule.y_graph_tensor=applied_strain"
    )
    with pytest.raises(ConfigError, match="y_graph_tensor: 'applied_strain'.*3x3"):
        train(cfg, Path(cfg.hydra.runtime.output_dir))


def test_missing_labels_leave_the_loss(cfg_factory, copper_store: Path) -> None:
    """A batch where some structures have no stress (NaN) has the stress loss and metrics of
    the batch without them; a batch where none has one still trains on energy and forces."""
    cfg = cfg_factory(*STRESS, f"datamodule.dataset={copper_store}", "trainer.max_epochs=1")
    train(cfg, Path(cfg.hydra.runtime.output_dir))
    module = load_module(Path(cfg.hydra.runtime.output_dir)).double()
    atoms = cu_bulk(3)
    elements, cut_off = module.spec.elements, module.spec.graph.cut_off

    def batch_of(frames: list, stress_of: list[bool]) -> dict[str, torch.Tensor]:
        batch = atoms_to_batch(frames, elements, cut_off)
        stresses = [
            torch.from_numpy(a.get_stress(voigt=False))
            if has
            else torch.full((3, 3), float("nan"), dtype=torch.float64)
            for a, has in zip(frames, stress_of, strict=True)
        ]
        batch["y_graph_tensor"] = torch.stack(stresses)
        return batch

    module.losses = {"y_graph_tensor": module.losses["y_graph_tensor"]}  # the stress alone
    mixed = batch_of(atoms, [True, False, True])
    kept = batch_of([atoms[0], atoms[2]], [True, True])
    loss_mixed, loss_kept = module._step(mixed, "val"), module._step(kept, "val")
    assert loss_mixed.item() > 0
    torch.testing.assert_close(loss_mixed, loss_kept, rtol=1e-12, atol=0.0)
    assert module._step(batch_of(atoms, [False] * 3), "val").item() == 0.0
    sums = module._sums["val"]
    assert sums["stress_abs"][1].item() == 2 * 9 + 2 * 9  # two labelled structures, twice
