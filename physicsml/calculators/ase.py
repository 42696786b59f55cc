"""ASE calculator backed by a trained physicsml potential."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ase.calculators.calculator import Calculator, all_changes

from physicsml.inference import load_module, predict_atoms


class PhysicsMLCalculator(Calculator):
    """Energy (eV) and forces (eV/Å, -dE/dx by autograd) for ``ase.Atoms`` from a trained
    model, whatever targets it was trained on.

    ``path`` is a run directory, a checkpoint (``.ckpt``) or a saved model. The neighbour
    list is built exactly as in training (same cut-off, pbc/cell overrides and padding).
    A structure it cannot evaluate (no atoms, non-finite positions or cell, a singular
    periodic cell, an element the model does not know) is a ``ValueError`` saying what is
    wrong (``physicsml.inference.check_atoms``).
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(
        self, path: str | Path, device: str = "cpu", double: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.module = load_module(path, map_location=device).to(device)
        if double:
            self.module = self.module.double()

    def calculate(
        self, atoms: Any = None, properties: Any = None, system_changes: Any = all_changes
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        preds = predict_atoms(self.module, [self.atoms], batch_size=1)
        energy = float(preds["energy"][0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": preds["forces"][0].copy(),
        }
