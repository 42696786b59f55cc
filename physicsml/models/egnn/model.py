"""E(n)-equivariant graph neural network (Satorras, Hoogeboom & Welling 2021, arXiv:2102.09844).

Messages ``m_ij = phi_e(h_i, h_j, (r_ij/r_c)^2, rbf(r_ij))`` are gated by a learned attention
``sigmoid(phi_att(m_ij))`` and by a smooth polynomial envelope of ``r_ij/r_c`` (so energies and
forces are continuous at the cut-off), summed over neighbours and divided by
``avg_num_neighbours``; nodes update as ``h_i + phi_h(h_i, m_i)``. With ``modify_coords`` the
positions also move, ``x_i += sum_j (x_j - x_i) phi_x(m_ij) u(r_ij) / avg_num_neighbours``,
which keeps the model E(3)-equivariant; the energy is always read from the node features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

from physicsml.models.utils import edge_vectors, num_graphs, scatter_mean, scatter_sum

ENVELOPE_EXPONENT = 6
"""``p`` of the polynomial envelope (Klicpera et al. 2020): value, slope and curvature vanish
at the cut-off."""


@dataclass
class EGNNConfig:
    """Hyperparameters of :class:`EGNN` (defaults follow physicsml's ``EGNNModelConfig``)."""

    _target_: str = "physicsml.models.egnn.EGNN"
    c_hidden: int = 128
    num_layers: int = 4  # message-passing layers in total (physicsml adds one more, see EGNN)
    num_layers_phi: int = 2  # Linear layers in every MLP (>= 2)
    num_rbf: int = 0  # 0: only the squared distance, as in the paper; > 0: add Bessel RBFs
    modify_coords: bool = False
    pool_type: str = "sum"  # "sum" | "mean": pooling of the extra graph-scalar head
    dropout: float | None = None
    mlp_activation: str = "SiLU"


def _activation(name: str) -> type[nn.Module]:
    act = getattr(nn, name, None)
    if not (isinstance(act, type) and issubclass(act, nn.Module)):
        raise ValueError(f"unknown mlp_activation {name!r}: expected a torch.nn class name")
    return act


def _mlp(
    c_in: int,
    c_hidden: int,
    c_out: int,
    num_layers: int,
    act: type[nn.Module],
    dropout: float | None,
) -> nn.Sequential:
    """``num_layers`` Linear layers, each but the last followed by ``act`` (and dropout)."""
    modules: list[nn.Module] = []
    width = c_in
    for _ in range(num_layers - 1):
        modules += [nn.Linear(width, c_hidden), act()]
        if dropout:
            modules.append(nn.Dropout(dropout))
        width = c_hidden
    modules.append(nn.Linear(width, c_out))
    return nn.Sequential(*modules)


def polynomial_envelope(x: Tensor, p: int = ENVELOPE_EXPONENT) -> Tensor:
    """Smooth cut-off ``u(x)``: 1 at x = 0, 0 with zero first and second derivatives at x >= 1."""
    x = x.clamp(max=1.0)
    xp = x.pow(p)
    return (
        1.0 - 0.5 * (p + 1) * (p + 2) * xp + p * (p + 2) * xp * x - 0.5 * p * (p + 1) * xp * x * x
    )


class RadialFeatures(nn.Module):
    """``[(r/r_c)^2, sqrt(2/r_c) sin(k_n r/r_c)/r]`` with trainable ``k_n`` (init ``n*pi``)."""

    def __init__(self, cut_off: float, num_rbf: int) -> None:
        super().__init__()
        self.cut_off = cut_off
        self.frequencies = (
            nn.Parameter(torch.pi * torch.arange(1, num_rbf + 1, dtype=torch.get_default_dtype()))
            if num_rbf > 0
            else None
        )

    @property
    def dim(self) -> int:
        return 1 + (0 if self.frequencies is None else self.frequencies.numel())

    def forward(self, lengths: Tensor) -> Tensor:
        x = (lengths / self.cut_off).unsqueeze(-1)
        if self.frequencies is None:
            return x * x
        bessel = (2.0 / self.cut_off) ** 0.5 * torch.sin(self.frequencies * x) / lengths[:, None]
        return torch.cat([x * x, bessel], dim=-1)


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
        self.phi_e = nn.Sequential(
            *first_act, *_mlp(c_hidden, c_hidden, c_hidden, num_layers_phi - 1, act, dropout)
        )
        # Attention as in the paper (a linear layer and a sigmoid); physicsml uses a deeper MLP,
        # which costs one more [E, c] x [c, c] product and activation on the edges.
        self.phi_att = nn.Linear(c_hidden, 1)
        self.phi_h = _mlp(2 * c_hidden, c_hidden, c_hidden, num_layers_phi, act, dropout)
        self.phi_x = (
            _mlp(c_hidden, c_hidden, 1, num_layers_phi, act, dropout) if update_coords else None
        )
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
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Return updated node features, the messages ``[E, c]`` and position shifts (or None).

        ``weight`` ``[E, 1]`` is the envelope divided by ``avg_num_neighbours``.
        """
        i, j = edge_index
        a, b = self.node_proj(h).chunk(2, dim=-1)
        m = self.phi_e(a.index_select(0, i) + b.index_select(0, j) + self.edge_proj(radial))
        gate = torch.sigmoid(self.phi_att(m)) * weight
        h = h + self.phi_h(torch.cat([h, scatter_sum(m * gate, i, h.shape[0])], dim=-1))
        if self.phi_x is None:
            return h, m, None
        shift = scatter_sum(vectors * (self.phi_x(m) * weight), i, h.shape[0])
        return h, m, shift


class EGNN(nn.Module):
    """E(n)-equivariant GNN potential with energy, node, edge and graph scalar heads.

    ``num_layers`` counts all message-passing layers; physicsml's EGNN runs one extra
    "embedding" block, so its ``num_layers=4`` matches ``num_layers=5`` here.
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
        num_edge_scalars: int = 0,
        num_graph_scalars: int = 0,
        num_graph_attrs: int = 0,
        c_hidden: int = 128,
        num_layers: int = 4,
        num_layers_phi: int = 2,
        num_rbf: int = 0,
        modify_coords: bool = False,
        pool_type: str = "sum",
        dropout: float | None = None,
        mlp_activation: str = "SiLU",
    ) -> None:
        super().__init__()
        if node_vector:
            raise ValueError("EGNN cannot predict y_node_vector")
        if graph_vector:
            raise ValueError("EGNN cannot predict y_graph_vector")
        if pool_type not in ("sum", "mean"):
            raise ValueError(f"pool_type must be 'sum' or 'mean', got {pool_type!r}")
        if num_layers < 1 or num_layers_phi < 2:
            raise ValueError("EGNN needs num_layers >= 1 and num_layers_phi >= 2")
        act = _activation(mlp_activation)
        self.cut_off = cut_off
        self.inv_avg_num_neighbours = 1.0 / avg_num_neighbours
        self.pool_type = pool_type
        self.num_graph_attrs = num_graph_attrs

        self.embed = _mlp(num_elements, c_hidden, c_hidden, 2, act, dropout)
        self.radial = RadialFeatures(cut_off, num_rbf)
        # The last layer's positions would be unused, so it gets no phi_x.
        self.layers = nn.ModuleList(
            EGNNLayer(
                c_hidden,
                self.radial.dim,
                num_layers_phi,
                act,
                dropout,
                modify_coords and k < num_layers - 1,
            )
            for k in range(num_layers)
        )
        c_read = c_hidden + num_graph_attrs
        self.energy_head = _mlp(c_read, c_hidden, 1, num_layers_phi, act, dropout)
        self.node_head = (
            _mlp(c_hidden, c_hidden, num_node_scalars, num_layers_phi, act, dropout)
            if num_node_scalars > 0
            else None
        )
        self.edge_head = (
            _mlp(c_hidden, c_hidden, num_edge_scalars, num_layers_phi, act, dropout)
            if num_edge_scalars > 0
            else None
        )
        if num_graph_scalars > 0:
            self.graph_pre: nn.Module | None = _mlp(
                c_hidden, c_hidden, c_hidden, num_layers_phi, act, dropout
            )
            self.graph_post: nn.Module | None = _mlp(
                c_read, c_hidden, num_graph_scalars, num_layers_phi, act, dropout
            )
        else:
            self.graph_pre = self.graph_post = None

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per-atom energies ``node_energy`` [N] plus the heads the model was built with."""
        vectors, lengths = edge_vectors(batch)
        edge_index = batch["edge_index"]
        i, j = edge_index
        # The envelope of the input distances gates every layer, so an edge always enters
        # and leaves smoothly, even when modify_coords moves the atoms.
        envelope = polynomial_envelope(lengths / self.cut_off)
        weight = (envelope * self.inv_avg_num_neighbours).unsqueeze(-1)
        radial = self.radial(lengths)
        h = self.embed(batch["node_attrs"])
        m = h.new_zeros(0)
        for layer in self.layers:
            h, m, shift = layer(h, radial, weight, vectors, edge_index)
            if shift is not None:
                vectors = vectors + shift[j] - shift[i]
                radial = self.radial(torch.sqrt((vectors * vectors).sum(-1).clamp(min=1e-16)))

        graph_attrs = batch["graph_attrs"] if self.num_graph_attrs > 0 else None
        read = h if graph_attrs is None else torch.cat([h, graph_attrs[batch["batch"]]], dim=-1)
        out = {"node_energy": self.energy_head(read).squeeze(-1)}
        if self.node_head is not None:
            out["y_node_scalars"] = self.node_head(h)
        if self.edge_head is not None:
            out["y_edge_scalars"] = self.edge_head(m)
        if self.graph_pre is not None and self.graph_post is not None:
            pool = scatter_sum if self.pool_type == "sum" else scatter_mean
            pooled = pool(self.graph_pre(h), batch["batch"], num_graphs(batch))
            if graph_attrs is not None:
                pooled = torch.cat([pooled, graph_attrs], dim=-1)
            out["graph_scalars"] = self.graph_post(pooled)
        return out
