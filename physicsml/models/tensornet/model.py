"""TensorNet (Simeon & De Fabritiis 2023, arXiv:2306.06482) in plain torch.

Every atom carries ``F`` Cartesian rank-2 tensors ``X = I + A + S`` (scalar, skew and
symmetric-traceless parts). They are stored as ``[N, 9, F]`` coefficients on an orthonormal
(Frobenius) basis of 3x3 matrices ordered I (1), A (3), S (5), so the decomposition is a slice
and the paper's norm ``sum_ab X_ab^2`` is a sum of squared coefficients. Matrix products are
done on the full ``[N, 3, 3, F]`` tensors.
"""

from collections.abc import Sequence

import torch
from torch import Tensor

from physicsml.config.errors import ConfigError
from physicsml.models.mlp import mlp
from physicsml.models.radial import ExpNormalBasis, cosine_cutoff
from physicsml.models.utils import edge_vectors, num_graphs, scatter_sum


def irrep_basis() -> Tensor:
    """``[9, 9]`` orthonormal basis (rows: flattened 3x3 matrices): Id/sqrt(3), the three
    skew matrices e_k x . / sqrt(2), five symmetric traceless matrices."""
    e = torch.eye(3, dtype=torch.float64)
    skew = [torch.linalg.cross(e[k].expand(3, 3), e, dim=-1).T for k in range(3)]
    sym = [
        e[0, :, None] * e[1] + e[1, :, None] * e[0],
        e[0, :, None] * e[2] + e[2, :, None] * e[0],
        e[1, :, None] * e[2] + e[2, :, None] * e[1],
        torch.diag(torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)),
        torch.diag(torch.tensor([1.0, 1.0, -2.0], dtype=torch.float64)),
    ]
    rows = torch.stack([e, *skew, *sym]).reshape(9, 9)
    return (rows / rows.norm(dim=1, keepdim=True)).float()


def squared_norms(c: Tensor) -> Tensor:
    """``[N, 3, F]`` squared Frobenius norms of the I, A and S parts of ``c [N, 9, F]``."""
    c2 = c * c
    return torch.stack([c2[:, 0:1].sum(1), c2[:, 1:4].sum(1), c2[:, 4:9].sum(1)], dim=1)


def matmul3(a: Tensor, b: Tensor) -> Tensor:
    """Per-feature 3x3 matrix product of ``a, b [N, 3, 3, F]``."""
    return (a.unsqueeze(3) * b.unsqueeze(1)).sum(2)


class IrrepLinear(torch.nn.Module):
    """Separate bias-free feature mixing of the I, A and S parts of ``[N, 9, F]``."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.linears = torch.nn.ModuleList(
            torch.nn.Linear(num_features, num_features, bias=False) for _ in range(3)
        )

    def forward(self, c: Tensor) -> Tensor:
        parts = [self.linears[0](c[:, 0:1]), self.linears[1](c[:, 1:4]), self.linears[2](c[:, 4:9])]
        return torch.cat(parts, 1)


def scale_parts(f: Tensor, c: Tensor) -> Tensor:
    """Multiply the I, A, S parts of ``c [M, 9, F]`` by ``f [M, 3, F]``."""
    part = torch.tensor([0, 1, 1, 1, 2, 2, 2, 2, 2], device=f.device)
    return f.index_select(1, part) * c


class Embedding(torch.nn.Module):
    """Initial tensors: sum over neighbours of pair-embedding-weighted I, A, S of r_ij."""

    basis: Tensor

    def __init__(
        self, num_elements: int, num_features: int, num_radial: int, hidden: Sequence[int]
    ) -> None:
        super().__init__()
        f = num_features
        self.num_features = f
        self.element_embedding = torch.nn.Linear(num_elements, f, bias=False)
        self.pair_embedding = torch.nn.Linear(2 * f, f)
        self.radial = torch.nn.Linear(num_radial, 3 * f)  # the paper's three linears, fused
        self.layer_norm = torch.nn.LayerNorm(f)
        self.mlp = mlp(f, hidden, 3 * f)
        self.after = IrrepLinear(f)
        self.register_buffer("basis", irrep_basis(), persistent=False)

    def forward(self, batch: dict[str, Tensor], unit: Tensor, rbf: Tensor, phi: Tensor) -> Tensor:
        i, j = batch["edge_index"][0], batch["edge_index"][1]
        n, f = batch["coordinates"].shape[0], self.num_features
        h = self.element_embedding(batch["node_attrs"])
        weight = self.pair_embedding.weight
        h_i = torch.nn.functional.linear(h, weight[:, :f], self.pair_embedding.bias)
        h_j = torch.nn.functional.linear(h, weight[:, f:])
        z = h_i.index_select(0, i) + h_j.index_select(0, j)  # Linear(cat[h_i, h_j])
        w = self.radial(rbf * phi[:, None]).unflatten(1, (3, f))
        w = w * (z * phi[:, None]).unsqueeze(1)  # [E, 3, F]
        eye = torch.eye(3, dtype=unit.dtype, device=unit.device)
        outer = unit[:, :, None] * unit[:, None, :]
        edge_tensor = (eye + (outer - eye / 3.0)).flatten(1) + _skew_flat(unit)  # I + S + A
        coeff = (edge_tensor @ self.basis.T).unsqueeze(-1)  # [E, 9, 1]
        x = scatter_sum(scale_parts(w, coeff), i, n)  # [N, 9, F]
        norm = squared_norms(x).sum(1)
        fs = torch.nn.functional.silu(self.mlp(self.layer_norm(norm))).unflatten(1, (3, f))
        return scale_parts(fs, self.after(x))


def _skew_flat(v: Tensor) -> Tensor:
    """Flattened skew matrices ``[E, 9]`` with ``skew(v) u = v x u``."""
    zero = torch.zeros_like(v[:, 0])
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    return torch.stack((zero, -z, y, z, zero, -x, -y, x, zero), dim=-1)


class Interaction(torch.nn.Module):
    """One TensorNet interaction: neighbour messages, O(3) products and a residual update."""

    basis: Tensor

    def __init__(self, num_features: int, num_radial: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.before = IrrepLinear(num_features)
        self.mlp = mlp(num_radial, hidden, 3 * num_features)
        self.after = IrrepLinear(num_features)
        self.register_buffer("basis", irrep_basis(), persistent=False)

    def full(self, c: Tensor) -> Tensor:
        """``[N, 3, 3, F]`` matrices from ``[N, 9, F]`` coefficients."""
        return torch.matmul(self.basis.T, c).unflatten(1, (3, 3))

    def forward(self, x: Tensor, edge_index: Tensor, rbf: Tensor, phi: Tensor) -> Tensor:
        i, j = edge_index[0], edge_index[1]
        x = x / (squared_norms(x).sum(1, keepdim=True) + 1.0)
        y = self.before(x)
        f = phi[:, None] * torch.nn.functional.silu(self.mlp(rbf * phi[:, None]))
        f = f.unflatten(1, (3, -1))  # [E, 3, F]
        m = scatter_sum(scale_parts(f, y.index_select(0, j)), i, x.shape[0])
        m_full, y_full = self.full(m), self.full(y)
        p = matmul3(m_full, y_full) + matmul3(y_full, m_full)
        p = torch.matmul(self.basis, p.flatten(1, 2))
        p = p / (squared_norms(p).sum(1, keepdim=True) + 1.0)
        dy = self.after(p)
        dy_full = self.full(dy)
        return x + dy + torch.matmul(self.basis, matmul3(dy_full, dy_full).flatten(1, 2))


class ScalarOutput(torch.nn.Module):
    """Per-atom scalars from the LayerNorm'd norms of the I, A and S parts."""

    def __init__(self, num_features: int, hidden: Sequence[int], num_out: int) -> None:
        super().__init__()
        self.layer_norm = torch.nn.LayerNorm(3 * num_features)
        self.mlp = mlp(3 * num_features, hidden, num_out)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.mlp(self.layer_norm(squared_norms(x).flatten(1)))
        return out


class TensorNet(torch.nn.Module):
    """TensorNet: O(3)-equivariant Cartesian tensor message passing with an invariant readout.

    Heads: ``node_energy`` (plus ``graph_scalars`` from the same readout) and ``y_node_scalars``
    from a second readout. ``avg_num_neighbours`` is not used: the interaction normalises the
    tensors by ``||X|| + 1``. Hyperparameter defaults are physicsml's.
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
        num_features: int = 256,
        num_radial: int = 64,
        num_interaction_layers: int = 3,
        embedding_mlp_hidden_dims: Sequence[int] = (512,),
        interaction_mlp_hidden_dims: Sequence[int] = (256, 512),
        scalar_output_mlp_hidden_dims: Sequence[int] = (256, 128),
    ) -> None:
        super().__init__()
        for flag, name in [
            (node_vector, "y_node_vector"),
            (graph_vector, "y_graph_vector"),
            (num_graph_attrs > 0, "from graph_attrs"),
        ]:
            if flag:
                raise ConfigError(f"TensorNet cannot predict {name}")
        out_dims = list(scalar_output_mlp_hidden_dims)
        self.cut_off = cut_off
        self.num_graph_scalars = num_graph_scalars
        self.rbf = ExpNormalBasis(num_radial, cut_off)
        self.embedding = Embedding(
            num_elements, num_features, num_radial, list(embedding_mlp_hidden_dims)
        )
        self.interactions = torch.nn.ModuleList(
            Interaction(num_features, num_radial, list(interaction_mlp_hidden_dims))
            for _ in range(num_interaction_layers)
        )
        self.output = ScalarOutput(num_features, out_dims, 1 + num_graph_scalars)
        self.node_scalar_output = (
            ScalarOutput(num_features, out_dims, num_node_scalars) if num_node_scalars > 0 else None
        )

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        vectors, lengths = edge_vectors(batch)
        unit = vectors / lengths[:, None]
        phi = cosine_cutoff(lengths, self.cut_off)
        rbf = self.rbf(lengths)
        x = self.embedding(batch, unit, rbf, phi)
        for interaction in self.interactions:
            x = interaction(x, batch["edge_index"], rbf, phi)
        node_out = self.output(x)
        result = {"node_energy": node_out[:, 0]}
        if self.num_graph_scalars > 0:
            result["graph_scalars"] = scatter_sum(
                node_out[:, 1:], batch["batch"], num_graphs(batch)
            )
        if self.node_scalar_output is not None:
            result["y_node_scalars"] = self.node_scalar_output(x)
        return result
