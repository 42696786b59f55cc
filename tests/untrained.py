"""Small untrained potentials, saved as training saves them: random weights give smooth,
non-trivial energies, enough for tests that compare two ways of evaluating the same model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from physicsml.lightning.module import PotentialModule
from physicsml.saved_model import GraphSettings, ModelSpec, write_model_file

ELEMENTS = [1, 6, 8, 29]
HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "egnn": {"c_hidden": 8, "num_layers": 2, "num_rbf": 8},
    "mace": {
        "hidden_irreps": "8x0e + 8x1o",
        "max_ell": 2,
        "num_bessel": 4,
        "radial_mlp": [16],
        "mlp_irreps": "4x0e",
    },
    "nequip": {
        "num_layers": 2,
        "num_features": 6,
        "max_ell": 2,
        "mlp_irreps": "4x0e",
        "radial_mlp_width": 8,
    },
    "allegro": {
        "num_layers": 2,
        "max_ell": 2,
        "env_embed_multiplicity": 4,
        "two_body_latent_mlp_latent_dimensions": [8, 16],
        "latent_mlp_latent_dimensions": [16],
        "mlp_latent_dimensions": [8],
    },
    "tensornet": {
        "num_features": 8,
        "num_radial": 8,
        "num_interaction_layers": 2,
        "embedding_mlp_hidden_dims": [16],
        "interaction_mlp_hidden_dims": [8, 16],
        "scalar_output_mlp_hidden_dims": [8, 4],
    },
    "ani": {"hidden_dims": [[16, 8]]},
}
"""Small hyperparameters of each architecture."""
EGNN_4_RBF = {"c_hidden": 8, "num_layers": 2, "num_rbf": 4}
"""A smaller EGNN radial basis: smoother forces (finite differences)."""


def untrained_spec(
    architecture: str,
    elements: Sequence[int] = ELEMENTS,
    energy_scale: float = 0.5,
    avg_num_neighbours: float = 20.0,
    compute_stress: bool = False,
    hyperparameters: dict[str, Any] | None = None,
) -> ModelSpec:
    """The spec of a small potential of ``architecture`` for ``elements`` (cut-off 4 Å; ANI
    needs its 5.2 Å AEV cut-off), trained on energies and forces; ``hyperparameters``
    replace ``HYPERPARAMETERS[architecture]``."""
    elements = list(elements)
    return ModelSpec(
        architecture=architecture,
        hyperparameters=hyperparameters or HYPERPARAMETERS[architecture],
        training={
            "compute_forces": True,
            "compute_stress": compute_stress,
            "y_graph_scalars_loss": {"name": "MSELoss", "weight": 1.0},
            "y_node_vector_loss": {"name": "MSELoss", "weight": 1.0},
        },
        elements=elements,
        num_elements=len(elements),
        statistics={
            "elements": elements,
            "reference_energies": [-1.0 * (k + 1) for k in range(len(elements))],
            "energy_scale": energy_scale,
            "avg_num_neighbours": avg_num_neighbours,
            "num_structures": 10,
        },
        targets={"y_graph_scalars": ["energy"], "y_node_vector": "forces"},
        graph=GraphSettings(cut_off=5.2 if architecture == "ani" else 4.0),
    )


def save_untrained(spec: ModelSpec, path: Path, seed: int = 0) -> Path:
    """Write a model of ``spec`` with the random weights of ``seed`` to ``path``."""
    torch.manual_seed(seed)
    write_model_file(spec, PotentialModule(spec).state_dict(), path)
    return path
