"""Evaluate a trained potential on labelled data: predictions per structure and error tables.

The reference labels are the data's properties that the model was trained on (its first
``y_graph_scalars``, the energy; its ``y_node_vector``, the forces; its ``y_graph_tensor``, the
stress, or the data's ``stress`` for a model that predicts stress without training on it).
Errors are grouped overall, per element (forces), per structure size and per ``config_type``
(when the data have that string label). Labels that a structure lacks (NaN) are left out.
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
from physicsml.ensemble import spread
from physicsml.inference import check_atoms, check_stress, predict_atoms
from physicsml.lightning.callbacks import GPA_PER_EV_PER_A3
from physicsml.lightning.module import PotentialModule, target_names

MAX_SIZE_GROUPS = 8
"""Structure sizes beyond this many distinct atom counts are binned into this many ranges."""
CONFIG_TYPE = "config_type"
"""The per-structure string label whose values group the errors."""
NO_CONFIG_TYPE = "(none)"
"""The group of structures without a ``config_type``."""


class EvaluationError(ValueError):
    """Data the model cannot be evaluated on (the CLI prints it on one line)."""


@dataclass
class Labelled:
    """Structures with their reference labels where the data have them (NaN where a
    structure lacks one)."""

    atoms: list[Atoms]
    energy: np.ndarray | None
    """[S] eV"""
    forces: list[np.ndarray] | None
    """[n, 3] eV/Å per structure"""
    stress: np.ndarray | None = None
    """[S, 3, 3] eV/Å³"""
    config_type: list[str] | None = None
    """each structure's ``config_type`` ("" where it has none)"""


@dataclass
class Predictions:
    """A model's predictions for each structure."""

    energy: np.ndarray
    """[S] eV"""
    forces: list[np.ndarray]
    """[n, 3] eV/Å per structure"""
    stress: np.ndarray | None = None
    """[S, 3, 3] eV/Å³ (NaN for a structure without a stress: no periodic direction), when the
    model predicts stress"""
    energy_std: np.ndarray | None = None
    """[S] eV: an ensemble's spread (standard deviation over its members)"""
    forces_std: list[np.ndarray] | None = None
    """[n, 3] eV/Å per structure: an ensemble's spread"""


def ensemble_mean(members: Sequence[Predictions]) -> Predictions:
    """The mean of the members' predictions, with their spread (``energy_std``,
    ``forces_std``); one member is returned as it is."""
    if len(members) == 1:
        return members[0]
    energy = spread([m.energy for m in members])
    forces = [spread([m.forces[k] for m in members]) for k in range(len(members[0].forces))]
    stresses = [m.stress for m in members if m.stress is not None]
    return Predictions(
        energy=energy.mean,
        forces=[f.mean for f in forces],
        stress=spread(stresses).mean if len(stresses) == len(members) else None,
        energy_std=energy.std,
        forces_std=[f.std for f in forces],
    )


def reference_names(module: PotentialModule) -> tuple[str | None, str | None]:
    """The data's names of the model's energy and forces targets (None where it has none)."""
    energies = target_names(module.targets, "y_graph_scalars")
    forces = target_names(module.targets, "y_node_vector")
    return (energies[0] if energies else None), (forces[0] if forces else None)


def predicts_stress(module: PotentialModule) -> bool:
    """Whether the model predicts stress (``module.compute_stress``)."""
    return bool(getattr(module, "compute_stress", False))


def stress_name(module: PotentialModule) -> str:
    """The data's name of the model's stress target (``stress`` when it has none)."""
    return str(module.targets.get("y_graph_tensor") or "stress")


def read_labelled(store: AtomsStore, module: PotentialModule) -> Labelled:
    """Every structure of ``store``, the labels of ``module``'s energy and forces, the stress
    when the model predicts it and the store has it, and the ``config_type`` when the store
    has that string label."""
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
    stress = data.structure_props.get(stress_name(module)) if predicts_stress(module) else None
    if stress is not None and np.shape(stress)[1:] != (3, 3):
        raise EvaluationError(
            f"{store.path}: '{stress_name(module)}' has shape {list(np.shape(stress)[1:])} "
            "per structure, expected a [3, 3] stress"
        )
    config_type = data.structure_props.get(CONFIG_TYPE)
    if config_type is not None and store.properties[CONFIG_TYPE].get("dtype") != "string":
        config_type = None  # a number, not a label to group by
    return Labelled(
        atoms=atoms,
        energy=None if energy is None else np.asarray(energy, dtype=np.float64).reshape(-1),
        forces=None
        if forces is None
        else [np.asarray(forces[offsets[k] : offsets[k + 1]]) for k in range(len(atoms))],
        stress=None if stress is None else np.asarray(stress, dtype=np.float64),
        config_type=None if config_type is None else [str(c) for c in config_type],
    )


def _has_stress(atoms: Atoms, module: PotentialModule) -> bool:
    try:
        check_stress(atoms, module)
    except ValueError:
        return False
    return True


def predict(
    module: PotentialModule, atoms: Sequence[Atoms], batch_size: int, progress: bool
) -> Predictions:
    """The model's energies, forces and (when it predicts stress) stresses of ``atoms``; an
    ``EvaluationError`` naming the first structure the model cannot evaluate (e.g. an
    unknown element)."""
    for index, structure in enumerate(atoms):
        try:
            check_atoms(structure, module)
        except ValueError as exc:
            raise EvaluationError(f"structure {index}: {exc}") from None
    stress = predicts_stress(module)
    has_stress = [stress and _has_stress(a, module) for a in atoms]
    energies: list[np.ndarray] = []
    forces: list[np.ndarray] = []
    stresses = np.full((len(atoms), 3, 3), np.nan)
    with tqdm(total=len(atoms), desc="evaluating", unit="structure", disable=not progress) as bar:
        for start in range(0, len(atoms), batch_size):
            indices = range(start, min(start + batch_size, len(atoms)))
            chunk: dict[int, Any] = {}
            for with_stress in (True, False):  # structures without a stress get none
                members = [k for k in indices if has_stress[k] == with_stress]
                if not members:
                    continue
                preds = predict_atoms(
                    module, [atoms[k] for k in members], batch_size, stress=with_stress
                )
                for j, k in enumerate(members):
                    chunk[k] = (preds["energy"][j], preds["forces"][j])
                    if with_stress:
                        stresses[k] = preds["stress"][j]
            energies += [chunk[k][0] for k in indices]
            forces += [chunk[k][1] for k in indices]
            bar.update(len(indices))
    return Predictions(
        energy=np.asarray(energies, dtype=np.float64).reshape(-1),
        forces=forces,
        stress=stresses if stress else None,
    )


def annotated(data: Labelled, preds: Predictions) -> list[Atoms]:
    """Copies of the structures holding the reference labels as their calculator's results
    (extxyz ``energy`` / ``forces`` / ``stress``) and the predictions as ``pred_energy`` /
    ``pred_stress`` (info, the stress [3, 3]) and ``pred_forces`` (arrays), and an ensemble's
    spread as ``pred_energy_std`` and ``pred_forces_std``. A reference that a structure lacks
    (NaN) is not written."""
    out = []
    for k, structure in enumerate(data.atoms):
        atoms = structure.copy()
        results: dict[str, Any] = {}
        if data.energy is not None and not np.isnan(data.energy[k]):
            results["energy"] = float(data.energy[k])
        if data.forces is not None and not np.isnan(data.forces[k]).any():
            results["forces"] = data.forces[k]
        if data.stress is not None and not np.isnan(data.stress[k]).any():
            results["stress"] = data.stress[k]
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        if data.config_type is not None and data.config_type[k]:
            atoms.info[CONFIG_TYPE] = data.config_type[k]
        atoms.info["pred_energy"] = float(preds.energy[k])
        if preds.stress is not None and not np.isnan(preds.stress[k]).any():
            atoms.info["pred_stress"] = preds.stress[k]
        atoms.arrays["pred_forces"] = np.asarray(preds.forces[k], dtype=np.float64)
        if preds.energy_std is not None and preds.forces_std is not None:  # an ensemble's
            atoms.info["pred_energy_std"] = float(preds.energy_std[k])
            atoms.arrays["pred_forces_std"] = np.asarray(preds.forces_std[k], dtype=np.float64)
        out.append(atoms)
    return out


def _mae_rmse(errors: np.ndarray) -> tuple[float | None, float | None]:
    """MAE and RMSE of the errors that are not NaN (a label some structure lacks)."""
    errors = errors[~np.isnan(errors)]
    if errors.size == 0:
        return None, None
    return float(np.abs(errors).mean()), float(np.sqrt((errors**2).mean()))


def error_row(data: Labelled, preds: Predictions, select: Sequence[int]) -> dict[str, Any]:
    """MAE and RMSE of the structures ``select``: energy (eV and meV/atom), forces (eV/Å),
    stress (eV/Å³ and GPa, over its 9 components)."""
    select = list(select)
    sizes = np.array([len(data.atoms[k]) for k in select])
    row: dict[str, Any] = {"structures": len(select), "atoms": int(sizes.sum())}
    if data.energy is not None:
        diff = preds.energy[select] - data.energy[select]
        row["energy_mae_eV"], row["energy_rmse_eV"] = _mae_rmse(diff)
        mae, rmse = _mae_rmse(1000.0 * diff / sizes)
        row["energy_mae_meV_per_atom"], row["energy_rmse_meV_per_atom"] = mae, rmse
    if data.forces is not None:
        diff = np.concatenate([preds.forces[k] - data.forces[k] for k in select]).reshape(-1)
        row["forces_mae_eV_per_A"], row["forces_rmse_eV_per_A"] = _mae_rmse(diff)
    if data.stress is not None and preds.stress is not None:
        diff = (preds.stress[select] - data.stress[select]).reshape(-1)
        mae, rmse = _mae_rmse(diff)
        row["stress_mae_eV_per_A3"], row["stress_rmse_eV_per_A3"] = mae, rmse
        row["stress_mae_GPa"] = None if mae is None else mae * GPA_PER_EV_PER_A3
        row["stress_rmse_GPa"] = None if rmse is None else rmse * GPA_PER_EV_PER_A3
    return row


def element_rows(data: Labelled, preds: Predictions) -> dict[str, dict[str, Any]]:
    """Force MAE and RMSE (eV/Å) on the atoms of each element, by chemical symbol."""
    assert data.forces is not None
    numbers = np.concatenate([a.numbers for a in data.atoms])
    diff = np.concatenate([f - r for f, r in zip(preds.forces, data.forces, strict=True)])
    rows = {}
    for z in np.unique(numbers):
        mae, rmse = _mae_rmse(diff[numbers == z].reshape(-1))
        rows[chemical_symbols[int(z)]] = {
            "atoms": int((numbers == z).sum()),
            "forces_mae_eV_per_A": mae,
            "forces_rmse_eV_per_A": rmse,
        }
    return rows


def config_type_groups(config_types: Sequence[str]) -> dict[str, list[int]]:
    """Structure indices by ``config_type``, in order of first appearance; structures without
    one are the group ``NO_CONFIG_TYPE``."""
    groups: dict[str, list[int]] = {}
    for k, value in enumerate(config_types):
        groups.setdefault(value or NO_CONFIG_TYPE, []).append(k)
    return groups


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


def error_table(data: Labelled, preds: Predictions) -> dict[str, Any]:
    """The errors overall, per element (forces), per structure size (number of atoms) and
    per ``config_type`` (empty when the data have none)."""
    everything = list(range(len(data.atoms)))
    sizes = np.array([len(a) for a in data.atoms])
    configs = {} if data.config_type is None else config_type_groups(data.config_type)
    return {
        "overall": error_row(data, preds, everything),
        "per_element": {} if data.forces is None else element_rows(data, preds),
        "per_size": {
            n: error_row(data, preds, members) for n, members in size_groups(sizes).items()
        },
        "per_config_type": {
            name: error_row(data, preds, members) for name, members in configs.items()
        },
    }


RELIABILITY_BINS = 5
"""Structures are binned by predicted spread into this many equally full bins."""


def calibration(data: Labelled, preds: Predictions) -> dict[str, Any]:
    """How well an ensemble's spread ranks and sizes its errors, per structure: the Spearman
    rank correlation between the predicted spread and the absolute error of the energy and of
    the forces (the mean over atoms and components of each), and a reliability table: the
    structures in ``RELIABILITY_BINS`` bins of force spread, each bin's mean spread (std) next
    to its RMSE (equal for a calibrated Gaussian spread). Empty without a spread."""
    from scipy.stats import spearmanr

    out: dict[str, Any] = {}
    if preds.energy_std is not None and data.energy is not None:
        error = np.abs(preds.energy - data.energy)
        known = ~np.isnan(error)
        if known.sum() > 2:
            rho = spearmanr(preds.energy_std[known], error[known]).statistic
            out["energy_spearman"] = float(rho)
    if preds.forces_std is not None and data.forces is not None:
        std = np.array([s.mean() for s in preds.forces_std])
        sq = [(p - r) ** 2 for p, r in zip(preds.forces, data.forces, strict=True)]
        error = np.array([np.sqrt(e).mean() for e in sq])
        known = ~np.isnan(error)
        if known.sum() > 2:
            out["forces_spearman"] = float(spearmanr(std[known], error[known]).statistic)
            order = np.argsort(std[known])
            rmse = np.array([np.sqrt(e.mean()) for e in sq])[known]
            out["forces_reliability"] = [
                {
                    "structures": len(members),
                    "mean_std_eV_per_A": float(std[known][members].mean()),
                    "rmse_eV_per_A": float(np.sqrt((rmse[members] ** 2).mean())),
                }
                for members in np.array_split(order, min(RELIABILITY_BINS, len(order)))
            ]
    return out


def format_calibration(table: dict[str, Any]) -> str:
    """``calibration`` as text lines."""
    lines = []
    for key, name in (("energy_spearman", "energy"), ("forces_spearman", "forces")):
        if key in table:
            lines.append(f"Spearman(spread, |error|) per structure, {name}: {table[key]:.3f}")
    for k, row in enumerate(table.get("forces_reliability", [])):
        lines.append(
            f"force spread bin {k + 1}: {row['structures']} structures, mean std "
            f"{row['mean_std_eV_per_A']:.4g} eV/Å, RMSE {row['rmse_eV_per_A']:.4g} eV/Å"
        )
    return "\n".join(lines)


def plot_reliability(table: dict[str, Any], path: Any) -> None:
    """The reliability table as a plot: RMSE against mean predicted std per bin, with the
    diagonal a calibrated spread would follow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table["forces_reliability"]
    std = [r["mean_std_eV_per_A"] for r in rows]
    rmse = [r["rmse_eV_per_A"] for r in rows]
    fig, ax = plt.subplots(figsize=(4, 4))
    top = max(max(std), max(rmse)) * 1.1
    ax.plot([0, top], [0, top], color="grey", lw=1, label="calibrated")
    ax.plot(std, rmse, "o-", label="ensemble")
    ax.set_xlabel("mean predicted force std (eV/Å)")
    ax.set_ylabel("force RMSE (eV/Å)")
    rho = table.get("forces_spearman")
    ax.set_title(f"reliability (Spearman {rho:.2f})" if rho is not None else "reliability")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


COLUMNS = {
    "structures": "structures",
    "atoms": "atoms",
    "energy_mae_eV": "E MAE eV",
    "energy_rmse_eV": "E RMSE eV",
    "energy_mae_meV_per_atom": "E MAE meV/atom",
    "energy_rmse_meV_per_atom": "E RMSE meV/atom",
    "forces_mae_eV_per_A": "F MAE eV/Å",
    "forces_rmse_eV_per_A": "F RMSE eV/Å",
    "stress_mae_eV_per_A3": "S MAE eV/Å³",
    "stress_rmse_eV_per_A3": "S RMSE eV/Å³",
    "stress_mae_GPa": "S MAE GPa",
    "stress_rmse_GPa": "S RMSE GPa",
}
"""Keys of a row and their column headers in the printed table."""


def _cell(value: float | int | None) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def format_table(table: dict[str, Any]) -> str:
    """``error_table`` as aligned text: the overall row, then per element, per size and per
    ``config_type``."""
    groups = [("overall", table["overall"])]
    groups += [(f"element {k}", row) for k, row in table["per_element"].items()]
    groups += [(f"{k} atoms", row) for k, row in table["per_size"].items()]
    groups += [(f"config_type {k}", row) for k, row in table.get("per_config_type", {}).items()]
    keys = [k for k in COLUMNS if any(k in row for _, row in groups)]
    header = ["group", *(COLUMNS[k] for k in keys)]
    lines = [header]
    for name, row in groups:
        cells = [row.get(k) for k in keys]
        lines.append([name, *(_cell(v) for v in cells)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    rows = ("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines)
    return "\n".join(row.rstrip() for row in rows)
