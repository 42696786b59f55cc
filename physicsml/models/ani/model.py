"""ANI (Smith et al. 2017, Chem. Sci. 8:3192): AEV descriptors and one MLP per element."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor

from physicsml.config.errors import ConfigError
from physicsml.models.ani.aev import AEVComputer
from physicsml.models.mlp import mlp
from physicsml.models.utils import edge_vectors

# ANI-1x symmetry-function parameters (torchani's rHCNO-5.2R_16-3.5A_a4-8.params)
ANI1X_RADIAL_SHIFTS = (
    0.9, 1.16875, 1.4375, 1.70625, 1.975, 2.24375, 2.5125, 2.78125,
    3.05, 3.31875, 3.5875, 3.85625, 4.125, 4.39375, 4.6625, 4.93125,
)  # fmt: skip
ANI1X_ANGULAR_SHIFTS = (0.9, 1.55, 2.2, 2.85)
ANI1X_ANGLE_SECTIONS = (
    0.19634954, 0.58904862, 0.98174770, 1.3744468,
    1.7671459, 2.1598449, 2.5525440, 2.9452431,
)  # fmt: skip
# ANI-1 hidden layers of the H, C, N, O networks (physicsml's ani_1_2_net_sizes_dict["ani1"])
ANI1_HIDDEN_DIMS = ((160, 128, 96), (144, 112, 96), (128, 112, 96), (128, 112, 96))


class ANI(torch.nn.Module):
    """ANI potential: per-atom energy = MLP of its element applied to its AEV.

    Only the energy head exists. The batch ``cut_off`` must cover ``radial_cut_off``;
    ``avg_num_neighbours`` is not used. Hyperparameter defaults are ANI-1 / ANI-1x (physicsml's
    ``ani1``); each element's network has CELU(alpha=0.1) activations.
    """

    def __init__(
        self,
        *,
        num_elements: int,
        cut_off: float,
        avg_num_neighbours: float,
        num_node_scalars: int = 0,
        node_vector: bool = False,
        graph_vector: bool = False,
        num_graph_scalars: int = 0,
        num_graph_attrs: int = 0,
        radial_cut_off: float = 5.2,
        angular_cut_off: float = 3.5,
        radial_eta: float = 16.0,
        radial_shifts: Sequence[float] = ANI1X_RADIAL_SHIFTS,
        angular_eta: float = 8.0,
        angular_zeta: float = 32.0,
        angular_shifts: Sequence[float] = ANI1X_ANGULAR_SHIFTS,
        angle_sections: Sequence[float] = ANI1X_ANGLE_SECTIONS,
        # hidden layers of the network of element k (in the datamodule's element order);
        # elements beyond the list reuse its last entry
        hidden_dims: Sequence[Sequence[int]] = ANI1_HIDDEN_DIMS,
    ) -> None:
        super().__init__()
        for flag, name in [
            (num_node_scalars > 0, "y_node_scalars"),
            (node_vector, "y_node_vector"),
            (graph_vector, "y_graph_vector"),
            (num_graph_scalars > 0, "y_graph_scalars beyond the energy"),
            (num_graph_attrs > 0, "from graph_attrs"),
        ]:
            if flag:
                raise ConfigError(f"ANI cannot predict {name}")
        if cut_off < radial_cut_off:
            # The radial AEV terms are taken from the batch edges.
            raise ConfigError(
                f"datamodule.cut_off ({cut_off}) must be >= {radial_cut_off} for module=ani "
                f"(its AEV radial cut-off, module.model.radial_cut_off); "
                f"set datamodule.cut_off={radial_cut_off}"
            )
        if angular_cut_off > radial_cut_off:
            raise ConfigError(
                f"angular_cut_off ({angular_cut_off}) must not exceed radial_cut_off "
                f"({radial_cut_off})"
            )
        if len(hidden_dims) == 0:
            raise ConfigError("hidden_dims needs at least one entry")
        self.aev = AEVComputer(
            num_elements=num_elements,
            radial_cut_off=radial_cut_off,
            angular_cut_off=angular_cut_off,
            radial_eta=radial_eta,
            radial_shifts=radial_shifts,
            angular_eta=angular_eta,
            angular_zeta=angular_zeta,
            angular_shifts=angular_shifts,
            angle_sections=angle_sections,
        )
        celu = functools.partial(torch.nn.CELU, alpha=0.1)
        self.networks = torch.nn.ModuleList(
            mlp(self.aev.dim, hidden_dims[min(k, len(hidden_dims) - 1)], 1, celu)
            for k in range(num_elements)
        )

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        vectors, lengths = edge_vectors(batch)
        aev = self.aev(batch, vectors, lengths)
        species = batch["species"]
        atoms: list[Tensor] = []
        energies: list[Tensor] = []
        for k, network in enumerate(self.networks):
            idx = torch.nonzero(species == k).squeeze(1)
            atoms.append(idx)
            energies.append(network(aev[idx]).squeeze(-1))
        node_energy = aev.new_zeros(species.numel()).index_add(
            0, torch.cat(atoms), torch.cat(energies)
        )
        return {"node_energy": node_energy}
