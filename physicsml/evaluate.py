"""Evaluate a trained potential on labelled data: predictions per structure and error tables.

The reference labels are the data's properties that the model was trained on (its first
``y_graph_scalars``, the energy, and its ``y_node_vector``, the forces). Errors are grouped
overall, per element (forces) and per structure size. Stores keep numeric labels only, so a
string ``config_type`` of an extxyz file is not available to group by; stresses are not
evaluated yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import chemical_symbols
from tqdm.auto import tqdm

from physicsml.data.store import AtomsStore
from physicsml.inference import check_atoms, predict_atoms
from physicsml.lightning.module import PotentialModule, target_names

MAX_SIZE_GROUPS = 8
"""Structure sizes beyond this many distinct atom counts are binned into this many ranges."""


class EvaluationError(ValueError):
    """Data the model cannot be evaluated on (the CLI prints it on one line)."""


@dataclass
class Labelled:
    """Structures with their reference labels where the data have them."""

    atoms: list[Atoms]
    energy: np.ndarray | None
    """[S] eV"""
    forces: list[np.ndarray] | None
    """[n, 3] eV/Å per structure"""


def reference_names(module: PotentialModule) -> tuple[str | None, str | None]:
    """The data's names of the model's energy and forces targets (None where it has none)."""
    energies = target_names(module.targets, "y_graph_scalars")
    forces = target_names(module.targets, "y_node_vector")
    return (energies[0] if energies else None), (forces[0] if forces else None)


def read_labelled(store: AtomsStore, module: PotentialModule) -> Labelled:
    """Every structure of ``store`` and the labels of ``module``'s energy and forces."""
    data = store.load()
    offsets = data.offsets
    atoms = [
        Atoms(
            numbers=data.numbers[offsets[k] : offsets[k + 1]],
            positions=data.positions[offsets[k] : offsets[k + 1]],
            cell=data.cell[k],
            pbc=data.pbc[k],
        )
        for k in range(len(offsets) - 1)
    ]
    energy_name, forces_name = reference_names(module)
    energy = data.structure_props.get(energy_name) if energy_name else None
    forces = data.atom_props.get(forces_name) if forces_name else None
    return Labelled(
        atoms=atoms,
        energy=None if energy is None else np.asarray(energy, dtype=np.float64).reshape(-1),
        forces=None
        if forces is None
        else [np.asarray(forces[offsets[k] : offsets[k + 1]]) for k in range(len(atoms))],
    )


def predict(
    module: PotentialModule, atoms: Sequence[Atoms], batch_size: int, progress: bool
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Predicted energies [S] (eV) and forces ([n, 3] eV/Å each); an ``EvaluationError``
    naming the first structure the model cannot evaluate (e.g. an unknown element)."""
    for index, structure in enumerate(atoms):
        try:
            check_atoms(structure, module)
        except ValueError as exc:
            raise EvaluationError(f"structure {index}: {exc}") from None
    energies: list[np.ndarray] = []
    forces: list[np.ndarray] = []
    with tqdm(total=len(atoms), desc="evaluating", unit="structure", disable=not progress) as bar:
        for start in range(0, len(atoms), batch_size):
            chunk = atoms[start : start + batch_size]
            preds = predict_atoms(module, chunk, batch_size=batch_size)
            energies += preds["energy"]
            forces += preds["forces"]
            bar.update(len(chunk))
    return np.asarray(energies, dtype=np.float64).reshape(-1), forces


def annotated(data: Labelled, energy: np.ndarray, forces: list[np.ndarray]) -> list[Atoms]:
    """Copies of the structures holding the reference labels as their calculator's results
    (extxyz ``energy`` / ``forces``) and the predictions as ``pred_energy`` / ``pred_forces``."""
    out = []
    for k, structure in enumerate(data.atoms):
        atoms = structure.copy()
        results: dict[str, Any] = {}
        if data.energy is not None:
            results["energy"] = float(data.energy[k])
        if data.forces is not None:
            results["forces"] = data.forces[k]
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info["pred_energy"] = float(energy[k])
        atoms.arrays["pred_forces"] = np.asarray(forces[k], dtype=np.float64)
        out.append(atoms)
    return out


def _mae_rmse(errors: np.ndarray) -> tuple[float | None, float | None]:
    if errors.size == 0:
        return None, None
    return float(np.abs(errors).mean()), float(np.sqrt((errors**2).mean()))


def error_row(
    data: Labelled, energy: np.ndarray, forces: list[np.ndarray], select: Sequence[int]
) -> dict[str, Any]:
    """MAE and RMSE of the structures ``select``: energy (eV and meV/atom), forces (eV/Å)."""
    sizes = np.array([len(data.atoms[k]) for k in select])
    row: dict[str, Any] = {"structures": len(select), "atoms": int(sizes.sum())}
    if data.energy is not None:
        diff = energy[list(select)] - data.energy[list(select)]
        row["energy_mae_eV"], row["energy_rmse_eV"] = _mae_rmse(diff)
        mae, rmse = _mae_rmse(1000.0 * diff / sizes)
        row["energy_mae_meV_per_atom"], row["energy_rmse_meV_per_atom"] = mae, rmse
    if data.forces is not None:
        diff = np.concatenate([forces[k] - data.forces[k] for k in select]).reshape(-1)
        row["forces_mae_eV_per_A"], row["forces_rmse_eV_per_A"] = _mae_rmse(diff)
    return row


def element_rows(data: Labelled, forces: list[np.ndarray]) -> dict[str, dict[str, Any]]:
    """Force MAE and RMSE (eV/Å) on the atoms of each element, by chemical symbol."""
    assert data.forces is not None
    numbers = np.concatenate([a.numbers for a in data.atoms])
    diff = np.concatenate([f - r for f, r in zip(forces, data.forces, strict=True)])
    rows = {}
    for z in np.unique(numbers):
        mae, rmse = _mae_rmse(diff[numbers == z].reshape(-1))
        rows[chemical_symbols[int(z)]] = {
            "atoms": int((numbers == z).sum()),
            "forces_mae_eV_per_A": mae,
            "forces_rmse_eV_per_A": rmse,
        }
    return rows


def size_groups(sizes: np.ndarray) -> dict[str, list[int]]:
    """Structure indices by number of atoms: one group per size, or ``MAX_SIZE_GROUPS``
    equal ranges (``"lo-hi"``) when there are more distinct sizes."""
    distinct = np.unique(sizes)
    if len(distinct) <= MAX_SIZE_GROUPS:
        return {str(n): np.flatnonzero(sizes == n).tolist() for n in distinct}
    edges = np.linspace(distinct[0], distinct[-1] + 1, MAX_SIZE_GROUPS + 1).astype(int)
    groups = {}
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        members = np.flatnonzero((sizes >= lo) & (sizes < hi)).tolist()
        if members:
            groups[f"{lo}-{hi - 1}"] = members
    return groups


def error_table(data: Labelled, energy: np.ndarray, forces: list[np.ndarray]) -> dict[str, Any]:
    """The errors overall, per element (forces) and per structure size (number of atoms)."""
    everything = list(range(len(data.atoms)))
    sizes = np.array([len(a) for a in data.atoms])
    return {
        "overall": error_row(data, energy, forces, everything),
        "per_element": {} if data.forces is None else element_rows(data, forces),
        "per_size": {
            n: error_row(data, energy, forces, members) for n, members in size_groups(sizes).items()
        },
    }


COLUMNS = {
    "structures": "structures",
    "atoms": "atoms",
    "energy_mae_eV": "E MAE eV",
    "energy_rmse_eV": "E RMSE eV",
    "energy_mae_meV_per_atom": "E MAE meV/atom",
    "energy_rmse_meV_per_atom": "E RMSE meV/atom",
    "forces_mae_eV_per_A": "F MAE eV/Å",
    "forces_rmse_eV_per_A": "F RMSE eV/Å",
}
"""Keys of a row and their column headers in the printed table."""


def _cell(value: float | int | None) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def format_table(table: dict[str, Any]) -> str:
    """``error_table`` as aligned text: the overall row, then per element and per size."""
    groups = [("overall", table["overall"])]
    groups += [(f"element {k}", row) for k, row in table["per_element"].items()]
    groups += [(f"{k} atoms", row) for k, row in table["per_size"].items()]
    keys = [k for k in COLUMNS if any(k in row for _, row in groups)]
    header = ["group", *(COLUMNS[k] for k in keys)]
    lines = [header]
    for name, row in groups:
        cells = [row.get(k) for k in keys]
        lines.append([name, *(_cell(v) for v in cells)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    rows = ("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines)
    return "\n".join(row.rstrip() for row in rows)
