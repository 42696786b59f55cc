"""ANI atomic environment vectors (Smith et al. 2017, Chem. Sci. 8:3192) from the batch edges.

Radial terms use the batch edges shorter than the radial cut-off; angular terms use every
unordered pair of edges of the same centre shorter than the angular cut-off. Both include
periodic images through ``cell_shift``, so no coordinate wrapping is needed.
"""

from collections.abc import Sequence

import torch
from torch import Tensor

from physicsml.models.radial import cosine_cutoff, gaussian_basis
from physicsml.models.utils import scatter_sum


def edge_pairs(centre: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    """Positions ``(a, b)``, ``a < b``, of every unordered pair of entries of ``centre`` with
    the same value. ``centre`` must be sorted."""
    count = torch.bincount(centre, minlength=num_nodes)
    start = torch.cumsum(count, 0) - count
    position = torch.arange(centre.numel(), device=centre.device)
    later = count[centre] - 1 - (position - start[centre])  # later entries of the same centre
    first = torch.repeat_interleave(position, later)
    block_start = torch.repeat_interleave(torch.cumsum(later, 0) - later, later)
    second = first + 1 + torch.arange(first.numel(), device=centre.device) - block_start
    return first, second


class AEVComputer(torch.nn.Module):
    """ANI-style radial and angular symmetry functions per atom, ``[N, dim]``.

    Radial block of neighbour species ``s``: ``sum_j 0.25 exp(-eta_R (r_ij - R_s)^2) fc(r_ij)``.
    Angular block of the unordered species pair ``(s, t)``:
    ``sum_{j<k} 2 ((1 + cos(theta'_ijk - theta_z)) / 2)^zeta
    exp(-eta_A ((r_ij + r_ik) / 2 - R_a)^2) fc(r_ij) fc(r_ik)``
    with ``theta' = acos(0.95 cos theta)`` (torchani's trick that keeps gradients finite).
    """

    radial_shifts: Tensor
    angular_shifts: Tensor
    cos_sections: Tensor
    sin_sections: Tensor
    pair_index: Tensor

    def __init__(
        self,
        *,
        num_elements: int,
        radial_cut_off: float,
        angular_cut_off: float,
        radial_eta: float,
        radial_shifts: Sequence[float],
        angular_eta: float,
        angular_zeta: float,
        angular_shifts: Sequence[float],
        angle_sections: Sequence[float],
    ) -> None:
        super().__init__()
        self.num_elements = num_elements
        self.radial_cut_off = radial_cut_off
        self.angular_cut_off = angular_cut_off
        self.radial_eta = radial_eta
        self.angular_eta = angular_eta
        self.angular_zeta = angular_zeta
        sections = torch.tensor(list(angle_sections))
        self.register_buffer("radial_shifts", torch.tensor(list(radial_shifts)))
        self.register_buffer("angular_shifts", torch.tensor(list(angular_shifts)))
        self.register_buffer("cos_sections", torch.cos(sections))
        self.register_buffer("sin_sections", torch.sin(sections))
        rows, cols = torch.triu_indices(num_elements, num_elements)
        pair_index = torch.zeros(num_elements, num_elements, dtype=torch.long)
        pair_index[rows, cols] = torch.arange(rows.numel())
        pair_index[cols, rows] = torch.arange(rows.numel())
        self.register_buffer("pair_index", pair_index, persistent=False)
        self.num_pairs = rows.numel()
        self.radial_dim = num_elements * len(radial_shifts)
        self.dim = self.radial_dim + self.num_pairs * len(angular_shifts) * len(angle_sections)

    def forward(self, batch: dict[str, Tensor], vectors: Tensor, lengths: Tensor) -> Tensor:
        """AEVs ``[N, dim]`` given the edge vectors and lengths of ``batch``."""
        centre, neighbour = batch["edge_index"][0], batch["edge_index"][1]
        species = batch["species"]
        n = species.numel()

        # radial
        edges = torch.nonzero(lengths < self.radial_cut_off).squeeze(1)
        r = lengths[edges]
        gauss = gaussian_basis(r, self.radial_shifts, self.radial_eta)
        terms = 0.25 * gauss * cosine_cutoff(r, self.radial_cut_off)[:, None]
        slot = centre[edges] * self.num_elements + species[neighbour[edges]]
        radial = scatter_sum(terms, slot, n * self.num_elements).view(n, -1)

        # angular: pairs of short edges sharing their centre
        short = torch.nonzero(lengths < self.angular_cut_off).squeeze(1)
        short = short[torch.argsort(centre[short], stable=True)]
        first, second = edge_pairs(centre[short], n)
        e1, e2 = short[first], short[second]
        r1, r2 = lengths[e1], lengths[e2]
        cos = 0.95 * (vectors[e1] * vectors[e2]).sum(-1) / (r1 * r2)
        sin = torch.sqrt(1.0 - cos * cos)
        cos_shifted = cos[:, None] * self.cos_sections + sin[:, None] * self.sin_sections
        angle = (0.5 * (1.0 + cos_shifted)) ** self.angular_zeta  # [T, Z]
        mean_r = 0.5 * (r1 + r2)
        distance = gaussian_basis(mean_r, self.angular_shifts, self.angular_eta)
        cut = cosine_cutoff(r1, self.angular_cut_off) * cosine_cutoff(r2, self.angular_cut_off)
        terms = 2.0 * (distance[:, :, None] * angle[:, None, :]).flatten(1) * cut[:, None]
        pair = self.pair_index[species[neighbour[e1]], species[neighbour[e2]]]
        slot = centre[e1] * self.num_pairs + pair
        angular = scatter_sum(terms, slot, n * self.num_pairs).view(n, -1)
        return torch.cat([radial, angular], dim=-1)
