"""Load trained potentials (run dirs, checkpoints, saved models) and evaluate them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase.data import chemical_symbols

from physicsml.data.graph import atoms_to_structure, collate, species_lookup
from physicsml.lightning.module import PotentialModule, target_names
from physicsml.lightning.peft import plain_weights
from physicsml.saved_model import read_model_file


def load_module(path: str | Path, map_location: str = "cpu") -> PotentialModule:
    """Rebuild a ``PotentialModule`` from a run dir, checkpoint or saved model (weights_only)."""
    # a checkpoint of a PEFT run: the plain model, its wrappers merged (physicsml.lightning.peft)
    spec, state_dict = plain_weights(*read_model_file(path, map_location))
    module = PotentialModule(spec)
    module.load_state_dict(state_dict)
    module.eval()
    return module


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _symbol(number: int) -> str:
    return chemical_symbols[number] if 0 <= number < len(chemical_symbols) else f"Z={number}"


def check_atoms(atoms: Any, module: PotentialModule) -> None:
    """Raise ``ValueError`` naming what is wrong if ``module`` cannot evaluate ``atoms``: no
    atoms, non-finite positions or cell, a singular cell in its periodic directions, or an
    element the model was not trained on. The model's ``pbc``/``cell`` overrides apply."""
    graph = module.spec.graph
    if len(atoms) == 0:
        raise ValueError("the structure has no atoms")
    positions = np.asarray(atoms.positions, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    if len(bad):
        raise ValueError(
            f"positions of atom {bad[0]} are not finite: {positions[bad[0]].tolist()}"
            + (f" ({len(bad)} atoms in all)" if len(bad) > 1 else "")
        )
    cell = np.asarray(atoms.cell.array if graph.cell is None else graph.cell, dtype=np.float64)
    pbc = np.asarray(atoms.pbc if graph.pbc is None else graph.pbc, dtype=bool).reshape(3)
    if not np.isfinite(cell).all():
        raise ValueError(f"the cell is not finite: {cell.tolist()}")
    if pbc.any():
        # the neighbour list spans each non-periodic direction with its own axis
        spanning = np.where(pbc[:, None], cell, np.eye(3))
        lengths = np.linalg.norm(spanning, axis=1).prod()
        if abs(np.linalg.det(spanning)) <= 1e-6 * lengths:
            raise ValueError(
                f"the cell {cell.tolist()} is singular in its periodic directions "
                f"(pbc {pbc.tolist()}): a periodic structure needs linearly independent "
                "cell vectors"
            )
    elements = module.spec.elements
    unknown = sorted(set(np.asarray(atoms.numbers).tolist()) - set(elements))
    if unknown:
        names = ", ".join(_symbol(z) for z in unknown)
        known = ", ".join(_symbol(z) for z in elements)
        raise ValueError(
            f"element{'s' if len(unknown) > 1 else ''} {names} not known to the model, "
            f"which was trained on {known}"
        )


def check_stress(atoms: Any, module: PotentialModule) -> None:
    """Raise ``ValueError`` saying why if the stress of ``atoms`` is not defined: it needs a
    periodic direction and a cell of non-zero volume (the model's ``pbc``/``cell`` apply)."""
    graph = module.spec.graph
    cell = np.asarray(atoms.cell.array if graph.cell is None else graph.cell, dtype=np.float64)
    pbc = np.asarray(atoms.pbc if graph.pbc is None else graph.pbc, dtype=bool).reshape(3)
    if not pbc.any():
        raise ValueError(
            "the stress is not defined for a structure with no periodic direction "
            f"(pbc {pbc.tolist()}): it is the energy's derivative by a strain of the cell"
        )
    if abs(np.linalg.det(cell)) <= 1e-9:
        raise ValueError(
            f"the stress needs a cell of non-zero volume; the cell {cell.tolist()} has none "
            "(give non-periodic directions a vacuum cell vector)"
        )


def predict_atoms(
    module: PotentialModule,
    atoms_list: Sequence[Any],
    batch_size: int = 64,
    stress: bool | None = None,
) -> dict[str, list[np.ndarray]]:
    """Predict every target of ``module`` for each ``ase.Atoms``, one array per structure.

    Keys are the data's names of the targets, plus ``energy`` (eV) and ``forces`` (eV/Å,
    -dE/dx) for every model, and ``stress`` (``[3, 3]``, eV/Å³, ASE's sign) when ``stress``
    (default: the model's ``compute_stress``). A structure the model cannot evaluate, or,
    with ``stress=True``, one without a stress (``check_stress``), is a ``ValueError``,
    prefixed with its index when there are several.
    """
    atoms_list = list(atoms_list)
    for index, atoms in enumerate(atoms_list):
        try:
            check_atoms(atoms, module)
            if stress:
                check_stress(atoms, module)
        except ValueError as exc:
            if len(atoms_list) == 1:
                raise
            raise ValueError(f"structure {index}: {exc}") from None
    graph = module.spec.graph
    lookup = species_lookup(module.spec.elements)
    dtype = next(module.parameters()).dtype
    device = next(module.parameters()).device
    out: dict[str, list[np.ndarray]] = {}
    for chunk in _chunks(atoms_list, batch_size):
        structures = [
            atoms_to_structure(a, graph.cut_off, graph.pbc, graph.cell, graph.self_interaction)
            for a in chunk
        ]
        batch = collate(structures, lookup, module.spec.num_elements, dtype)
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.enable_grad():
            preds = module(batch, forces=True, stress=stress)
        ptr = batch["ptr"].tolist()
        for name, values in split_predictions(module, preds, ptr).items():
            out.setdefault(name, []).extend(values)
    return out


def split_predictions(
    module: PotentialModule, preds: dict[str, torch.Tensor], ptr: list[int]
) -> dict[str, list[np.ndarray]]:
    """Batch predictions -> ``{property name: one array per structure}``: the data's names of
    the targets, and ``energy`` / ``forces`` / ``stress``."""
    out: dict[str, list[np.ndarray]] = {}
    graphs = len(ptr) - 1
    for kind, tensor in preds.items():
        values = tensor.detach().cpu().double().numpy()
        names = (
            [kind] if kind in ("energy", "forces", "stress") else target_names(module.targets, kind)
        )
        for k, name in enumerate(names):
            column = values[..., k] if kind.endswith("scalars") else values
            if kind == "forces" or kind.startswith("y_node"):
                out[name] = [column[ptr[g] : ptr[g + 1]] for g in range(graphs)]
            else:
                out[name] = [column[g] for g in range(graphs)]
    return out
