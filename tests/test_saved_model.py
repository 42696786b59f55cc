"""The saved-model contract: one versioned spec for checkpoints and model.pt."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.io import read

from physicsml.calculators import PhysicsMLCalculator
from physicsml.config.errors import ConfigError
from physicsml.inference import load_module, predict_atoms
from physicsml.lightning.module import PotentialModule
from physicsml.saved_model import (
    SPEC_KEY,
    VERSION,
    GraphSettings,
    ModelSpec,
    SavedModelError,
    read_model_file,
    write_model_file,
)
from tests.structures import ETHANOL

LOSSES = {
    "y_graph_scalars_loss": {"name": "MSELoss", "weight": 1.0},
    "y_node_vector_loss": {"name": "MSELoss", "weight": 1.0},
}


def egnn_spec(**training: object) -> ModelSpec:
    """A small EGNN for ethanol's elements, as training would describe it."""
    return ModelSpec(
        architecture="egnn",
        hyperparameters={"c_hidden": 8, "num_layers": 2, "num_rbf": 4},
        training={"compute_forces": True, **LOSSES, **training},
        elements=[1, 6, 8],
        num_elements=3,
        statistics={
            "elements": [1, 6, 8],
            "reference_energies": [-10.0, -40.0, -70.0],
            "energy_scale": 0.5,
            "avg_num_neighbours": 6.0,
            "num_structures": 10,
        },
        targets={"y_graph_scalars": ["energy"], "y_node_vector": "forces"},
        graph=GraphSettings(cut_off=4.0),
    )


def test_model_file_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = PotentialModule(egnn_spec()).eval()
    write_model_file(module.spec, module.state_dict(), tmp_path / "model.pt")
    assert set(torch.load(tmp_path / "model.pt", weights_only=True)) == {SPEC_KEY, "state_dict"}

    spec, _ = read_model_file(tmp_path)  # a directory finds its model.pt
    assert spec == module.spec
    frames = read(ETHANOL, ":3")
    before = predict_atoms(module, frames)
    after = predict_atoms(load_module(tmp_path / "model.pt"), frames)
    np.testing.assert_allclose(np.array(after["energy"]), np.array(before["energy"]), rtol=1e-6)
    np.testing.assert_allclose(after["forces"][1], before["forces"][1], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("version", "advice"), [(VERSION + 1, "upgrade physicsml"), (VERSION - 1, "retrain")]
)
def test_other_format_versions_say_what_to_do(tmp_path: Path, version: int, advice: str) -> None:
    module = PotentialModule(egnn_spec())
    blob = {SPEC_KEY: {**module.spec.as_dict(), "version": version}, "state_dict": {}}
    torch.save(blob, tmp_path / "model.pt")
    with pytest.raises(SavedModelError, match=advice):
        read_model_file(tmp_path / "model.pt")


def test_first_format_and_foreign_files_are_named(tmp_path: Path) -> None:
    torch.save(
        {"hyper_parameters": {"module": {}, "data": {}}, "state_dict": {}}, tmp_path / "a.pt"
    )
    with pytest.raises(SavedModelError, match=r"a\.pt: saved by physicsml 0\.1\.0"):
        read_model_file(tmp_path / "a.pt")
    (tmp_path / "b.pt").write_text("not a model")
    with pytest.raises(SavedModelError, match=r"b\.pt: cannot read"):
        read_model_file(tmp_path / "b.pt")
    with pytest.raises(SavedModelError, match="no model.pt"):
        read_model_file(tmp_path / "empty_dir_that_does_not_exist")


def test_unknown_architecture_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="egnn"):
        PotentialModule(replace(egnn_spec(), architecture="collections.Counter"))


def test_reference_energies_given_for_every_element() -> None:
    given = PotentialModule(egnn_spec(reference_energies={1: -1.0, 6: -2.0, 8: -3.0}))
    torch.testing.assert_close(given.reference_energies, torch.tensor([-1.0, -2.0, -3.0]))
    fitted = PotentialModule(egnn_spec())
    torch.testing.assert_close(fitted.reference_energies, torch.tensor([-10.0, -40.0, -70.0]))
    with pytest.raises(ConfigError, match=r"module.reference_energies: elements \[29\]"):
        PotentialModule(egnn_spec(reference_energies={29: 0.05}))
    with pytest.raises(ConfigError, match=r"\[6, 8\] missing"):
        PotentialModule(egnn_spec(reference_energies={1: -1.0}))
    with pytest.raises(ConfigError, match="expected {atomic number: energy in eV}"):
        PotentialModule(egnn_spec(reference_energies=[1.0, 2.0, 3.0]))


def test_calculator_gives_forces_of_an_energy_only_model(tmp_path: Path) -> None:
    spec = replace(
        egnn_spec(),
        training={"compute_forces": False, **LOSSES},
        targets={"y_graph_scalars": ["energy"]},
    )
    torch.manual_seed(0)
    module = PotentialModule(spec)
    write_model_file(spec, module.state_dict(), tmp_path / "model.pt")
    atoms = read(ETHANOL, 0)
    atoms.calc = PhysicsMLCalculator(tmp_path, double=True)
    forces = atoms.get_forces()
    h = 1e-5
    atoms.positions[3, 0] += h
    e_plus = atoms.get_potential_energy()
    atoms.positions[3, 0] -= 2 * h
    e_minus = atoms.get_potential_energy()
    assert -(e_plus - e_minus) / (2 * h) == pytest.approx(forces[3, 0], abs=1e-6)


@pytest.mark.parametrize(
    ("hyperparameters", "key"),
    [({"c_hidden": "os.system"}, "c_hidden"), ({"_target_": "collections.Counter"}, "_target_")],
)
def test_hyperparameters_are_checked_before_anything_is_built(
    hyperparameters: dict[str, object], key: str
) -> None:
    spec = replace(egnn_spec(), hyperparameters=hyperparameters)
    with pytest.raises(ConfigError, match=f"module.model.{key}"):
        PotentialModule(spec)


def test_a_crafted_model_file_imports_and_calls_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a module on sys.path that would leave a marker if anything imported it
    marker = tmp_path / "imported"
    (tmp_path / "payload_module.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
        "class Evil:\n    def __init__(self, **kw):\n        Path(__file__).touch()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = egnn_spec().as_dict()
    for architecture, hyperparameters in [
        ("payload_module.Evil", {}),
        ("payload_module:Evil", {}),
        ("egnn", {"_target_": "payload_module.Evil", "c_hidden": 8}),
    ]:
        blob = {**spec, "architecture": architecture, "hyperparameters": hyperparameters}
        torch.save({SPEC_KEY: blob, "state_dict": {}}, tmp_path / "model.pt")
        with pytest.raises(ConfigError):
            PhysicsMLCalculator(tmp_path)
    assert not marker.exists()
    assert "payload_module" not in sys.modules
