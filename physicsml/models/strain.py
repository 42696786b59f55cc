"""Stress as the strain derivative of the energy.

A symmetric strain ``eps`` per structure deforms positions and periodic-image shifts,
``x -> x (I + eps)``; the stress is ``sigma = (1/V) dE/d(eps)`` at ``eps = 0`` (eV/Å³, ASE's sign:
negative under compression). Everything here is TorchScript-compatible: the exported models use it.
"""

from __future__ import annotations

import torch
from torch import Tensor


def apply_strain(
    positions: Tensor, cell_shift: Tensor, node_graph: Tensor, edge_graph: Tensor, num_graphs: int
) -> tuple[Tensor, Tensor, Tensor]:
    """A zero strain ``[G, 3, 3]`` to differentiate by, and the positions and edge shifts
    (``[N, 3]``, ``[E, 3]``) deformed by its symmetric part; ``node_graph``/``edge_graph`` give
    each atom's and each edge's structure."""
    strain = torch.zeros((num_graphs, 3, 3), dtype=positions.dtype, device=positions.device)
    strain.requires_grad_(True)
    symmetric = 0.5 * (strain + strain.transpose(1, 2))
    positions = positions + torch.bmm(positions.unsqueeze(1), symmetric[node_graph]).squeeze(1)
    cell_shift = cell_shift + torch.bmm(cell_shift.unsqueeze(1), symmetric[edge_graph]).squeeze(1)
    return strain, positions, cell_shift


def cell_volumes(cell: Tensor, pbc: Tensor) -> Tensor:
    """Volume ``|det(cell)|`` of each structure (``[G, 3, 3]`` cells, ``[G, 3]`` pbc); 0 for a
    structure that is periodic in no direction or has a degenerate cell (it has no stress)."""
    volume = torch.linalg.det(cell).abs()
    periodic = pbc.any(dim=-1)
    return torch.where(periodic & (volume > 1e-9), volume, torch.zeros_like(volume))


def stress_from_gradient(gradient: Tensor, volume: Tensor) -> Tensor:
    """``sigma = (1/V) dE/d(eps)`` per structure; zero where ``volume`` is 0 (no stress)."""
    safe = torch.where(volume > 0, volume, torch.ones_like(volume))
    stress = gradient / safe[:, None, None]
    return torch.where((volume > 0)[:, None, None], stress, torch.zeros_like(stress))
