"""E(n)-equivariant graph neural network (Satorras, Hoogeboom & Welling 2021, arXiv:2102.09844).

Messages ``m_ij = phi_e(h_i, h_j, (r_ij/r_c)^2, rbf(r_ij))`` are gated by a learned attention
``sigmoid(phi_att(m_ij))`` and by a smooth polynomial envelope of ``r_ij/r_c`` (so energies and
forces are continuous at the cut-off), summed over neighbours and divided by
``avg_num_neighbours``; nodes update as ``h_i + phi_h(h_i, m_i)``. With ``modify_coords`` the
positions also move, ``x_i += sum_j (x_j - x_i) phi_x(m_ij) u(r_ij) / avg_num_neighbours``,
which keeps the model E(3)-equivariant; the energy is always read from the node features.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from physicsml.config.errors import ConfigError
from physicsml.models.mlp import activation, mlp
from physicsml.models.radial import BesselBasis, polynomial_cutoff
from physicsml.models.utils import edge_vectors, num_graphs, scatter_mean, scatter_sum

ENVELOPE_EXPONENT = 6
"""``p`` of the polynomial envelope (Klicpera et al. 2020): value, slope and curvature vanish
at the cut-off."""


class EGNNLayer(nn.Module):
    """One EGNN message-passing layer (equations 3-6 of the paper, with attention gating)."""

    def __init__(
        self,
        c_hidden: int,
        num_radial: int,
        num_layers_phi: int,
        act: type[nn.Module],
        dropout: float | None,
        update_coords: bool,
    ) -> None:
        super().__init__()
        # First layer of phi_e, split so that the node parts run on nodes, not on edges:
        # W [h_i, h_j, radial] + b == (W_i h)_i + (W_j h)_j + (W_r radial + b).
        self.node_proj = nn.Linear(c_hidden, 2 * c_hidden, bias=False)
        self.edge_proj = nn.Linear(num_radial, c_hidden)
        first_act: list[nn.Module] = [act(), nn.Dropout(dropout)] if dropout else [act()]
        hidden = [c_hidden] * (num_layers_phi - 1)
        self.phi_e = nn.Sequential(*first_act, *mlp(c_hidden, hidden[1:], c_hidden, act, dropout))
        # Attention as in the paper (a linear layer and a sigmoid); physicsml uses a deeper MLP,
        # which costs one more [E, c] x [c, c] product and activation on the edges.
        self.phi_att = nn.Linear(c_hidden, 1)
        self.phi_h = mlp(2 * c_hidden, hidden, c_hidden, act, dropout)
        self.phi_x = mlp(c_hidden, hidden, 1, act, dropout) if update_coords else None
        if self.phi_x is not None:  # start close to the identity map on positions (as the paper)
            out_layer = cast(nn.Linear, self.phi_x[-1])
            nn.init.xavier_uniform_(out_layer.weight, gain=1e-3)
            nn.init.zeros_(out_layer.bias)

    def forward(
        self,
        h: Tensor,
        radial: Tensor,
        weight: Tensor,
        vectors: Tensor,
        edge_index: Tensor,
    ) -> tuple[Tensor, Tensor | None]:
        """Return updated node features and position shifts (or None).

        ``weight`` ``[E, 1]`` is the envelope divided by ``avg_num_neighbours``.
        """
        i, j = edge_index[0], edge_index[1]
        a, b = self.node_proj(h).chunk(2, dim=-1)
        m = self.phi_e(a.index_select(0, i) + b.index_select(0, j) + self.edge_proj(radial))
        gate = torch.sigmoid(self.phi_att(m)) * weight
        h = h + self.phi_h(torch.cat([h, scatter_sum(m * gate, i, h.shape[0])], dim=-1))
        if self.phi_x is None:
            return h, None
        return h, scatter_sum(vectors * (self.phi_x(m) * weight), i, h.shape[0])


class EGNN(nn.Module):
    """E(n)-equivariant GNN potential with energy, node and graph scalar heads.

    ``num_layers`` counts all message-passing layers; physicsml's EGNN runs one extra
    "embedding" block, so its ``num_layers=4`` matches ``num_layers=5`` here. Other
    hyperparameter defaults follow physicsml's ``EGNNModelConfig``.
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
        c_hidden: int = 128,
        num_layers: int = 4,  # message-passing layers in total (physicsml adds one more)
        num_layers_phi: int = 2,  # Linear layers in every MLP (>= 2)
        num_rbf: int = 0,  # 0: only the squared distance, as in the paper; > 0: add Bessel RBFs
        modify_coords: bool = False,
        pool_type: str = "sum",  # "sum" | "mean": pooling of the extra graph-scalar head
        dropout: float | None = None,
        mlp_activation: str = "SiLU",
    ) -> None:
        super().__init__()
        if node_vector:
            raise ConfigError("EGNN cannot predict y_node_vector")
        if graph_vector:
            raise ConfigError("EGNN cannot predict y_graph_vector")
        if pool_type not in ("sum", "mean"):
            raise ConfigError(f"pool_type must be 'sum' or 'mean', got {pool_type!r}")
        if num_layers < 1 or num_layers_phi < 2:
            raise ConfigError("EGNN needs num_layers >= 1 and num_layers_phi >= 2")
        act = activation(mlp_activation)
        self.cut_off = cut_off
        self.envelope_exponent = ENVELOPE_EXPONENT
        self.inv_avg_num_neighbours = 1.0 / avg_num_neighbours
        self.pool_type = pool_type
        self.num_graph_attrs = num_graph_attrs

        self.embed = mlp(num_elements, [c_hidden], c_hidden, act, dropout)
        # Bessel functions of r_ij beside (r_ij/r_c)^2 (sqrt(2/r_c) normalised, not enveloped).
        self.radial = (
            BesselBasis(cut_off, num_rbf, prefactor=(2.0 / cut_off) ** 0.5) if num_rbf > 0 else None
        )
        # The last layer's positions would be unused, so it gets no phi_x.
        self.layers = nn.ModuleList(
            EGNNLayer(
                c_hidden,
                1 + num_rbf,
                num_layers_phi,
                act,
                dropout,
                modify_coords and k < num_layers - 1,
            )
            for k in range(num_layers)
        )
        c_read = c_hidden + num_graph_attrs
        hidden = [c_hidden] * (num_layers_phi - 1)
        self.energy_head = mlp(c_read, hidden, 1, act, dropout)
        self.node_head = (
            mlp(c_hidden, hidden, num_node_scalars, act, dropout) if num_node_scalars > 0 else None
        )
        if num_graph_scalars > 0:
            self.graph_pre: nn.Module | None = mlp(c_hidden, hidden, c_hidden, act, dropout)
            self.graph_post: nn.Module | None = mlp(c_read, hidden, num_graph_scalars, act, dropout)
        else:
            self.graph_pre = self.graph_post = None

    def _radial_features(self, lengths: Tensor) -> Tensor:
        """``[(r/r_c)^2, Bessel functions of r]`` of edge lengths ``[E]``."""
        x = (lengths / self.cut_off).unsqueeze(-1)
        if self.radial is None:
            return x * x
        return torch.cat([x * x, self.radial(lengths)], dim=-1)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per-atom energies ``node_energy`` [N] plus the heads the model was built with."""
        vectors, lengths = edge_vectors(batch)
        edge_index = batch["edge_index"]
        i, j = edge_index[0], edge_index[1]
        # The envelope of the input distances gates every layer, so an edge always enters
        # and leaves smoothly, even when modify_coords moves the atoms.
        envelope = polynomial_cutoff(lengths, self.cut_off, self.envelope_exponent)
        weight = (envelope * self.inv_avg_num_neighbours).unsqueeze(-1)
        radial = self._radial_features(lengths)
        h = self.embed(batch["node_attrs"])
        for layer in self.layers:
            h, shift = layer(h, radial, weight, vectors, edge_index)
            if shift is not None:
                vectors = vectors + shift[j] - shift[i]
                lengths = torch.sqrt((vectors * vectors).sum(-1).clamp(min=1e-16))
                radial = self._radial_features(lengths)

        graph_attrs = batch["graph_attrs"] if self.num_graph_attrs > 0 else None
        read = h if graph_attrs is None else torch.cat([h, graph_attrs[batch["batch"]]], dim=-1)
        out = {"node_energy": self.energy_head(read).squeeze(-1)}
        if self.node_head is not None:
            out["y_node_scalars"] = self.node_head(h)
        if self.graph_pre is not None and self.graph_post is not None:
            pool = scatter_sum if self.pool_type == "sum" else scatter_mean
            pooled = pool(self.graph_pre(h), batch["batch"], num_graphs(batch))
            if graph_attrs is not None:
                pooled = torch.cat([pooled, graph_attrs], dim=-1)
            out["graph_scalars"] = self.graph_post(pooled)
        return out
