"""ASE calculator backed by a trained physicsml potential."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress
from torch import Tensor

from physicsml.calculators.neighbours import SkinNeighbourList
from physicsml.data.graph import assemble, species_lookup
from physicsml.ensemble import check_compatible, ensemble_members
from physicsml.inference import check_atoms, check_stress, load_module


class PhysicsMLCalculator(Calculator):
    """Energy (eV), forces (eV/Å, -dE/dx by autograd) and stress (eV/Å³, Voigt order
    xx yy zz yz xz xy, ASE's sign) for ``ase.Atoms`` from a trained model, whatever targets it
    was trained on.

    ``path`` is a run directory, a checkpoint (``.ckpt``) or a saved model; several of them,
    or a sweep's directory, are a deep ensemble (``physicsml.ensemble``): the results are the
    members' mean, with their spread (standard deviation) as ``energy_std``, ``forces_std``
    ([n, 3]) and, when asked for the stress, ``stress_std``. The neighbour
    list is the one of training (same cut-off, pbc/cell overrides and self-interaction),
    taken from a Verlet list with ``skin`` (Å) that is built again only when an atom moved
    more than ``skin / 2`` or the cell, pbc or atomic numbers changed (``neighbours.builds``
    counts the builds); between such steps only positions are updated. A structure it cannot
    evaluate (no atoms, non-finite positions or cell, a singular periodic cell, an element the
    model does not know) is a ``ValueError`` saying what is wrong
    (``physicsml.inference.check_atoms``); the stress of a structure with no periodic
    direction or no cell volume is a ``PropertyNotImplementedError`` saying why.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(
        self,
        path: str | Path | Sequence[str | Path],
        device: str = "cpu",
        double: bool = False,
        skin: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        files = ensemble_members(path)
        self.members = [load_module(file, map_location=device).to(device) for file in files]
        if double:
            self.members = [member.double() for member in self.members]
        check_compatible(self.members, files)
        self.module = self.members[0]
        graph = self.module.spec.graph
        self.neighbours = SkinNeighbourList(graph.cut_off, skin, graph.self_interaction)
        self._lookup = species_lookup(self.module.spec.elements)
        self._parameter = next(self.module.parameters())
        self._fixed_key: tuple[bytes, bytes, bytes] | None = None
        self._fixed: dict[str, Tensor] = {}

    def calculate(
        self, atoms: Any = None, properties: Any = None, system_changes: Any = all_changes
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        check_atoms(self.atoms, self.module)
        want_stress = "stress" in (properties or ())
        if want_stress:
            try:
                check_stress(self.atoms, self.module)
            except ValueError as exc:
                raise PropertyNotImplementedError(str(exc)) from None
        batch = self._batch(self.atoms)
        outputs: dict[str, list[np.ndarray]] = {"energy": [], "forces": [], "stress": []}
        for member in self.members:
            with torch.enable_grad():
                preds = member(batch, forces=True, stress=want_stress)
            for name in ("energy", "forces", "stress") if want_stress else ("energy", "forces"):
                value = preds[name][0] if name != "forces" else preds[name]
                outputs[name].append(value.detach().cpu().double().numpy())
        self.results = {}
        for name, values in outputs.items():
            if not values:
                continue
            stacked = np.stack(values)
            mean = stacked.mean(axis=0)
            self.results[name] = full_3x3_to_voigt_6_stress(mean) if name == "stress" else mean
            if len(values) > 1:
                std = stacked.std(axis=0)
                self.results[f"{name}_std"] = (
                    full_3x3_to_voigt_6_stress(std) if name == "stress" else std
                )
        self.results["energy"] = float(self.results["energy"])
        self.results["free_energy"] = self.results["energy"]
        if "energy_std" in self.results:
            self.results["energy_std"] = float(self.results["energy_std"])

    def _batch(self, atoms: Any) -> dict[str, Tensor]:
        """The model batch of ``atoms``: what depends only on the cell, pbc and atomic numbers
        is kept from the previous call when those did not change; positions and edges are new."""
        graph = self.module.spec.graph
        positions = np.asarray(atoms.positions, dtype=np.float64)
        numbers = np.asarray(atoms.numbers, dtype=np.int64)
        cell = np.asarray(atoms.cell.array if graph.cell is None else graph.cell, dtype=np.float64)
        pbc = np.asarray(atoms.pbc if graph.pbc is None else graph.pbc, dtype=bool).reshape(3)
        key = (cell.tobytes(), pbc.tobytes(), numbers.tobytes())
        if key != self._fixed_key:
            no_edges = np.zeros((0, 3), dtype=np.int64)
            structure = {
                "positions": positions,
                "numbers": numbers,
                "edge_index": no_edges[:, :2],
                "shifts": no_edges,
                "counts": np.array([len(numbers)]),
                "edge_counts": np.array([0]),
                "cell": cell.reshape(1, 3, 3),
                "pbc": pbc.reshape(1, 3),
            }
            fixed = assemble(
                structure, self._lookup, self.module.spec.num_elements, self._parameter.dtype
            )
            self._fixed = {name: value.to(self._parameter.device) for name, value in fixed.items()}
            self._fixed_key = key
        i, j, shifts = self.neighbours.edges(positions, cell, pbc, numbers)
        like = self._fixed["cell"]
        return {
            **self._fixed,
            "coordinates": torch.from_numpy(positions).to(like.device, like.dtype),
            "edge_index": torch.from_numpy(np.stack([i, j])).to(like.device),
            "cell_shift": torch.from_numpy(shifts @ cell).to(like.device, like.dtype),
        }
