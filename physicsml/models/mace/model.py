"""MACE: higher-order equivariant message passing (Batatia et al. 2022, arXiv:2206.07697)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from e3nn import o3
from torch import Tensor

from physicsml.config.errors import ConfigError
from physicsml.models.mace.blocks import (
    Interaction,
    ProductBasis,
    ScalarReadout,
    VectorReadout,
    block_slices,
)
from physicsml.models.radial import BesselBasis
from physicsml.models.utils import edge_vectors, num_graphs, scatter_sum


class MACE(torch.nn.Module):
    """MACE interatomic potential with optional scalar/vector heads (see models/README.md).

    Per layer: atomic basis (interaction), symmetric product basis of order ``correlation``
    with per-element weights, linear update (plus a species-dependent residual from the
    second layer on). The energy is the sum of a linear scalar readout of every layer but the
    last and an MLP readout (``mlp_irreps``) of the last, which keeps only scalars unless a
    vector head needs its ``1o`` channels. Hyperparameter defaults are physicsml's.
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
        num_bessel: int = 8,
        num_polynomial_cutoff: int = 5,
        max_ell: int = 3,
        num_interactions: int = 2,
        hidden_irreps: str = "128x0e + 128x1o",
        mlp_irreps: str = "16x0e",
        correlation: int = 3,
        # physicsml (and mace-torch) hard-code the radial MLP as three hidden layers of 64.
        radial_mlp: Sequence[int] = (64, 64, 64),
    ) -> None:
        super().__init__()
        if num_graph_attrs > 0:
            raise ConfigError("MACE cannot use graph_attrs")
        hidden = o3.Irreps(hidden_irreps).simplify()
        channels = hidden[0].mul
        irreps = [(ir.l, ir.p) for _, ir in hidden.sort().irreps]
        if irreps[0] != (0, 1) or any(mul != channels for mul, _ in hidden):
            raise ConfigError(
                f"hidden_irreps must hold 0e and the same multiplicity for every irrep, "
                f"got {hidden_irreps!r}"
            )
        mlp = o3.Irreps(mlp_irreps)
        if any(ir != o3.Irrep("0e") for _, ir in mlp):
            raise ConfigError(f"mlp_irreps must be even scalars, got {mlp_irreps!r}")
        want_vector = node_vector or graph_vector
        if want_vector and (1, -1) not in irreps:
            raise ConfigError("MACE needs 1o in hidden_irreps to predict vectors")
        if max_ell < max(ell for ell, _ in irreps):
            raise ConfigError("max_ell must be at least the largest l in hidden_irreps")

        self.spherical_harmonics = o3.SphericalHarmonics(
            o3.Irreps.spherical_harmonics(max_ell), normalize=True, normalization="component"
        )
        self.radial = BesselBasis(
            cut_off, num_bessel, trainable=False, envelope_exponent=num_polynomial_cutoff
        )
        self.embedding = torch.nn.Parameter(torch.randn(num_elements, channels))

        last_irreps = [ir for ir in irreps if ir == (0, 1) or (want_vector and ir == (1, -1))]
        self.interactions = torch.nn.ModuleList()
        self.products = torch.nn.ModuleList()
        layer_irreps: list[list[tuple[int, int]]] = []
        irreps_in = [(0, 1)]
        for k in range(num_interactions):
            irreps_out = last_irreps if k == num_interactions - 1 else irreps
            self.interactions.append(
                Interaction(
                    irreps_in,
                    irreps_out,
                    max_ell,
                    channels,
                    num_elements,
                    num_bessel,
                    list(radial_mlp),
                    avg_num_neighbours,
                    residual=k > 0,
                )
            )
            self.products.append(
                ProductBasis(max_ell, irreps_out, correlation, channels, num_elements)
            )
            layer_irreps.append(irreps_out)
            irreps_in = irreps_out

        def scalar_head(num_out: int) -> torch.nn.ModuleList:
            return torch.nn.ModuleList(
                ScalarReadout(channels, num_out, mlp.dim if k == num_interactions - 1 else 0)
                for k in range(num_interactions)
            )

        def vector_head() -> torch.nn.ModuleList:
            return torch.nn.ModuleList(
                VectorReadout(channels, block_slices(ir)[ir.index((1, -1))])
                for ir in layer_irreps
                if (1, -1) in ir
            )

        self.vector_layers = [k for k, ir in enumerate(layer_irreps) if (1, -1) in ir]
        self.energy_head = scalar_head(1)
        self.node_scalars_head = scalar_head(num_node_scalars) if num_node_scalars else None
        self.graph_scalars_head = scalar_head(num_graph_scalars) if num_graph_scalars else None
        self.node_vector_head = vector_head() if node_vector else None
        self.graph_vector_head = vector_head() if graph_vector else None

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per-atom energies and the requested heads for a collated batch."""
        vectors, lengths = edge_vectors(batch)
        node_attrs = batch["node_attrs"]
        edge_index = batch["edge_index"]
        sh = self.spherical_harmonics(vectors)
        radial = self.radial(lengths)
        h = self.embedding[batch["species"]].unsqueeze(1)  # [N, 1 (0e), C]
        features: list[Tensor] = []
        for interaction, product in zip(self.interactions, self.products, strict=True):
            basis, skip = interaction(h, node_attrs, radial, sh, edge_index)
            h = product(basis, batch["species"], skip)
            features.append(h)

        # Each head sums a readout of every layer (scalars) or of the layers with 1o (vectors).
        # The loops are written out per head: TorchScript cannot pass a ModuleList around.
        readouts = [readout(features[k]) for k, readout in enumerate(self.energy_head)]
        out = {"node_energy": torch.stack(readouts).sum(0).squeeze(-1)}
        if self.node_scalars_head is not None:
            readouts = [readout(features[k]) for k, readout in enumerate(self.node_scalars_head)]
            out["y_node_scalars"] = torch.stack(readouts).sum(0)
        if self.graph_scalars_head is not None:
            readouts = [readout(features[k]) for k, readout in enumerate(self.graph_scalars_head)]
            out["graph_scalars"] = scatter_sum(
                torch.stack(readouts).sum(0), batch["batch"], num_graphs(batch)
            )
        if self.node_vector_head is not None:
            readouts = [
                readout(features[self.vector_layers[k]])
                for k, readout in enumerate(self.node_vector_head)
            ]
            out["y_node_vector"] = torch.stack(readouts).sum(0)
        if self.graph_vector_head is not None:
            readouts = [
                readout(features[self.vector_layers[k]])
                for k, readout in enumerate(self.graph_vector_head)
            ]
            out["y_graph_vector"] = scatter_sum(
                torch.stack(readouts).sum(0), batch["batch"], num_graphs(batch)
            )
        return out
