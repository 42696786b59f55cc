"""Load trained potentials (run dirs, checkpoints, saved models) and evaluate them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from physicsml.data.graph import atoms_to_structure, collate, species_lookup
from physicsml.lightning.module import PotentialModule


def find_weights(path: str | Path) -> Path:
    """The weights file behind ``path``: a file itself, or a run / saved-model directory
    (``model.pt``, else ``checkpoints/last.ckpt``)."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    for candidate in (path / "model.pt", path / "checkpoints" / "last.ckpt"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{path}: no model.pt or checkpoints/last.ckpt found (expected a run directory, "
        "a checkpoint or a saved model)"
    )


def load_module(path: str | Path, map_location: str = "cpu") -> PotentialModule:
    """Rebuild a ``PotentialModule`` from a run dir, checkpoint or saved model (weights_only)."""
    weights = find_weights(path)
    blob = torch.load(weights, map_location=map_location, weights_only=True)
    if "hyper_parameters" not in blob or "state_dict" not in blob:
        raise ValueError(f"{weights} is not a physicsml checkpoint or model (no hyper_parameters)")
    hparams = blob["hyper_parameters"]
    module = PotentialModule(module=hparams["module"], data=hparams["data"])
    module.load_state_dict(blob["state_dict"])
    module.eval()
    return module


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def predict_atoms(
    module: PotentialModule, atoms_list: Sequence[Any], batch_size: int = 64
) -> dict[str, list[np.ndarray]]:
    """Predict every target of ``module`` for each ``ase.Atoms``, one array per structure.

    Keys are the data's names (``energy``, ``forces``, ...); energies in eV, forces in eV/Å.
    """
    data = module.hparams["data"]
    graph = data["graph"]
    lookup = species_lookup(data["elements"])
    dtype = next(module.parameters()).dtype
    device = next(module.parameters()).device
    out: dict[str, list[np.ndarray]] = {}
    for chunk in _chunks(list(atoms_list), batch_size):
        structures = [
            atoms_to_structure(
                a, graph["cut_off"], graph["pbc"], graph["cell"], graph["self_interaction"]
            )
            for a in chunk
        ]
        batch = collate(structures, lookup, int(data["num_elements"]), dtype)
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.enable_grad():
            preds = module(batch)
        ptr = batch["ptr"].tolist()
        for name, values in split_predictions(module, preds, ptr).items():
            out.setdefault(name, []).extend(values)
    return out


def split_predictions(
    module: PotentialModule, preds: dict[str, torch.Tensor], ptr: list[int]
) -> dict[str, list[np.ndarray]]:
    """Batch predictions -> ``{property name: one array per structure}``."""
    targets = module.targets
    out: dict[str, list[np.ndarray]] = {}
    graphs = len(ptr) - 1
    for kind, tensor in preds.items():
        values = tensor.detach().cpu().double().numpy()
        node = kind.startswith("y_node")
        name_or_names = targets.get(kind) or ("forces" if kind == "y_node_vector" else kind)
        names = name_or_names if isinstance(name_or_names, list) else [name_or_names]
        for k, name in enumerate(names):
            column = values[..., k] if kind.endswith("scalars") else values
            if node:
                out[name] = [column[ptr[g] : ptr[g + 1]] for g in range(graphs)]
            else:
                out[name] = [column[g] for g in range(graphs)]
    return out
