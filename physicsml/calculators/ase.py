"""ASE calculator backed by a trained physicsml potential."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ase.calculators.calculator import Calculator, all_changes

from physicsml.inference import load_module, predict_atoms


class PhysicsMLCalculator(Calculator):
    """Energy (eV) and forces (eV/Å) for ``ase.Atoms`` from a trained model.

    ``path`` is a run directory, a checkpoint (``.ckpt``) or a saved model. The neighbour
    list is built exactly as in training (same cut-off, pbc/cell overrides and padding).
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(
        self, path: str | Path, device: str = "cpu", double: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.module = load_module(path, map_location=device).to(device)
        if double:
            self.module = self.module.double()
        targets = self.module.targets
        energy_names = targets.get("y_graph_scalars") or []
        if not energy_names:
            raise ValueError(f"{path}: the model predicts no energy (y_graph_scalars is empty)")
        if not self.module.compute_forces:
            raise ValueError(f"{path}: the model was trained without compute_forces")
        self.energy_name = energy_names[0]
        self.forces_name = targets.get("y_node_vector")

    def calculate(
        self, atoms: Any = None, properties: Any = None, system_changes: Any = all_changes
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        preds = predict_atoms(self.module, [self.atoms], batch_size=1)
        energy = float(preds[self.energy_name][0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": preds[self.forces_name][0].copy(),
        }
