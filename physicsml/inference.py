"""Load trained potentials (run dirs, checkpoints, saved models) and evaluate them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from physicsml.data.graph import atoms_to_structure, collate, species_lookup
from physicsml.lightning.module import PotentialModule, target_names
from physicsml.saved_model import read_model_file


def load_module(path: str | Path, map_location: str = "cpu") -> PotentialModule:
    """Rebuild a ``PotentialModule`` from a run dir, checkpoint or saved model (weights_only)."""
    spec, state_dict = read_model_file(path, map_location)
    module = PotentialModule(spec)
    module.load_state_dict(state_dict)
    module.eval()
    return module


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def predict_atoms(
    module: PotentialModule, atoms_list: Sequence[Any], batch_size: int = 64
) -> dict[str, list[np.ndarray]]:
    """Predict every target of ``module`` for each ``ase.Atoms``, one array per structure.

    Keys are the data's names of the targets, plus ``energy`` (eV) and ``forces`` (eV/Å,
    -dE/dx) for every model.
    """
    graph = module.spec.graph
    lookup = species_lookup(module.spec.elements)
    dtype = next(module.parameters()).dtype
    device = next(module.parameters()).device
    out: dict[str, list[np.ndarray]] = {}
    for chunk in _chunks(list(atoms_list), batch_size):
        structures = [
            atoms_to_structure(a, graph.cut_off, graph.pbc, graph.cell, graph.self_interaction)
            for a in chunk
        ]
        batch = collate(structures, lookup, module.spec.num_elements, dtype)
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.enable_grad():
            preds = module(batch, forces=True)
        ptr = batch["ptr"].tolist()
        for name, values in split_predictions(module, preds, ptr).items():
            out.setdefault(name, []).extend(values)
    return out


def split_predictions(
    module: PotentialModule, preds: dict[str, torch.Tensor], ptr: list[int]
) -> dict[str, list[np.ndarray]]:
    """Batch predictions -> ``{property name: one array per structure}``: the data's names of
    the targets, and ``energy`` / ``forces``."""
    out: dict[str, list[np.ndarray]] = {}
    graphs = len(ptr) - 1
    for kind, tensor in preds.items():
        values = tensor.detach().cpu().double().numpy()
        names = [kind] if kind in ("energy", "forces") else target_names(module.targets, kind)
        for k, name in enumerate(names):
            column = values[..., k] if kind.endswith("scalars") else values
            if kind == "forces" or kind.startswith("y_node"):
                out[name] = [column[ptr[g] : ptr[g + 1]] for g in range(graphs)]
            else:
                out[name] = [column[g] for g in range(graphs)]
    return out
