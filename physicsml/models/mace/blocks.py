"""Building blocks of MACE on features laid out as ``[N, D, C]``.

Every equivariant feature in this package has the same number of channels ``C`` for each of
its irreps; a feature with irreps ``[(l1, p1), (l2, p2), ...]`` is a tensor ``[N, D, C]``
with ``D = sum (2 l + 1)``, the blocks in that order (e3nn's component order inside a block).
Channel mixing is then a plain matmul on the last axis of each block.
"""

import math

import torch
from e3nn import o3
from e3nn.math import normalize2mom
from e3nn.nn import FullyConnectedNet
from torch import Tensor

from physicsml.models.mace.symmetric_contraction import Irrep, SymmetricContraction
from physicsml.models.utils import Constant, scatter_sum


def block_slices(irreps: list[Irrep]) -> list[slice]:
    """Component slices of each irrep block of a ``[N, D, C]`` feature."""
    slices, start = [], 0
    for ell, _ in irreps:
        slices.append(slice(start, start + 2 * ell + 1))
        start += 2 * ell + 1
    return slices


def natural_irreps(lmax: int) -> list[Irrep]:
    """``0e + 1o + 2e + ...`` up to ``lmax`` (the parities of the spherical harmonics)."""
    return [(ell, (-1) ** ell) for ell in range(lmax + 1)]


class BlockLinear(torch.nn.Module):
    """Equivariant linear map ``[N, D_in, C_in] -> [N, D_out, C_out]``, one weight per irrep.

    With ``num_elements > 0`` the weights also depend on the species (e3nn's
    FullyConnectedTensorProduct with the one-hot node attributes, as in MACE's skip
    connections), evaluated for all species at once and picked by the one-hot.
    """

    def __init__(
        self,
        irreps_in: list[Irrep],
        irreps_out: list[Irrep],
        channels_in: int,
        channels_out: int,
        num_elements: int = 0,
    ) -> None:
        super().__init__()
        missing = [ir for ir in irreps_out if ir not in irreps_in]
        if missing:
            raise ValueError(f"no input irrep for outputs {missing}")
        slices = block_slices(irreps_in)
        # (start, stop) of the input block of each output irrep
        self.in_blocks = [
            (slices[irreps_in.index(ir)].start, slices[irreps_in.index(ir)].stop)
            for ir in irreps_out
        ]
        self.num_elements = num_elements
        self.channels_out = channels_out
        width = channels_out * max(num_elements, 1)
        self.weight = torch.nn.Parameter(torch.randn(len(irreps_out), channels_in, width))
        self.scale = channels_in**-0.5

    def forward(self, x: Tensor, node_attrs: Tensor | None = None) -> Tensor:
        """Map ``x [N, D_in, C_in]`` (and the one-hot species when element-dependent)."""
        blocks: list[Tensor] = []
        for k, (start, stop) in enumerate(self.in_blocks):
            out = x[:, start:stop, :] @ (self.weight[k] * self.scale)
            if self.num_elements > 0:
                assert node_attrs is not None
                out = out.view(out.shape[0], out.shape[1], self.num_elements, self.channels_out)
                out = (out * node_attrs[:, None, :, None]).sum(2)
            blocks.append(out)
        return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)


class Interaction(torch.nn.Module):
    """MACE interaction: the atomic basis ``A_i = sum_j R(r_ij) Y(r_ij) (x) W h_j`` (eq. 8-9).

    ``h [N, D_in, C]`` -> ``A [N, (lmax+1)^2, C]`` on ``0e + 1o + ... + lmax``. The
    tensor product is e3nn's "uvu" (channel-wise) with one radial weight per path and
    channel; per output irrep it is one batched matmul over edges, with the Clebsch-Gordan
    coefficients pre-contracted with the spherical harmonics. With ``residual`` it also returns the
    species-dependent skip connection of ``h`` onto ``irreps_out``; without, the species
    mixing is applied to ``A`` (mace-torch's RealAgnostic[Residual]InteractionBlock).
    """

    def __init__(
        self,
        irreps_in: list[Irrep],
        irreps_out: list[Irrep],
        lmax: int,
        channels: int,
        num_elements: int,
        num_bessel: int,
        radial_mlp: list[int],
        avg_num_neighbours: float,
        residual: bool,
    ) -> None:
        super().__init__()
        target = natural_irreps(lmax)
        in_slices = block_slices(irreps_in)
        self.dim_in, self.channels = in_slices[-1].stop, channels
        # Paths (input block, sh degree) grouped by output irrep. Inside an output block the
        # component index is (m, path), so the paths of one irrep reshape into channels.
        per_target: list[list[tuple[int, int]]] = [[] for _ in target]
        for a, (l_in, p_in) in enumerate(irreps_in):
            for l_sh in range(lmax + 1):
                for ell in range(abs(l_in - l_sh), l_in + l_sh + 1):
                    if (ell, p_in * (-1) ** l_sh) in target:
                        per_target[target.index((ell, p_in * (-1) ** l_sh))].append((a, l_sh))
        self.paths_per_target = [len(p) for p in per_target]
        self.cg = torch.nn.ModuleList()  # per target irrep: [(lmax+1)^2, D_in * dim * paths]
        assert all(self.paths_per_target), "every target irrep is reached from 0e"
        for paths, (ell, _) in zip(per_target, target, strict=True):
            cg = torch.zeros(
                (lmax + 1) ** 2, self.dim_in, 2 * ell + 1, len(paths), dtype=torch.float64
            )
            for k, (a, l_sh) in enumerate(paths):
                c = o3.wigner_3j(irreps_in[a][0], l_sh, ell, dtype=torch.float64)
                block = (c * math.sqrt(2 * ell + 1)).permute(1, 0, 2)  # [sh, in, out]
                cg[l_sh * l_sh : (l_sh + 1) ** 2, in_slices[a], :, k] = block
            # float64 constants, cast on use (exact float64 models).
            self.cg.append(Constant(cg.reshape(cg.shape[0], -1)))

        self.linear_up = BlockLinear(irreps_in, irreps_in, channels, channels)
        self.radial_mlp = FullyConnectedNet(
            [num_bessel, *radial_mlp, sum(self.paths_per_target) * channels],
            torch.nn.functional.silu,
        )
        self.mix_weight = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.randn(n * channels, channels)) for n in self.paths_per_target]
        )
        self.target_dims = [2 * ell + 1 for ell, _ in target]
        self.inv_neighbours = 1.0 / avg_num_neighbours
        self.residual = residual
        if residual:
            self.skip = BlockLinear(irreps_in, irreps_out, channels, channels, num_elements)
        else:
            self.skip = BlockLinear(target, target, channels, channels, num_elements)

    def forward(
        self,
        h: Tensor,
        node_attrs: Tensor,
        radial: Tensor,
        sh: Tensor,
        edge_index: Tensor,
    ) -> tuple[Tensor, Tensor | None]:
        """Return the atomic basis ``[N, (lmax+1)^2, C]`` and the skip connection (or None)."""
        skip = self.skip(h, node_attrs) if self.residual else None
        centre, neighbour = edge_index[0], edge_index[1]
        num_edges, num_nodes, channels = sh.shape[0], h.shape[0], self.channels
        h_neighbour = self.linear_up(h)[neighbour]  # [E, D_in, C]
        weights = self.radial_mlp(radial).view(num_edges, sum(self.paths_per_target), channels)
        blocks: list[Tensor] = []
        radial_weights = torch.split(weights, self.paths_per_target, dim=1)
        for t, (cg, w) in enumerate(zip(self.cg, self.mix_weight, strict=True)):
            r = radial_weights[t]
            dim, n = self.target_dims[t], self.paths_per_target[t]
            # Clebsch-Gordan coefficients contracted with Y(r_ij): [E, D_in, dim * n].
            coupling = (sh @ cg().to(sh.dtype)).view(num_edges, self.dim_in, dim * n)
            if self.dim_in == 1:
                messages = coupling.transpose(1, 2) * h_neighbour
            else:
                messages = torch.bmm(coupling.transpose(1, 2), h_neighbour)
            messages = messages.view(num_edges, dim, n, channels) * r.unsqueeze(1)
            summed = scatter_sum(messages.view(num_edges, dim, n * channels), centre, num_nodes)
            blocks.append(summed @ (w * (self.inv_neighbours / math.sqrt(w.shape[0]))))
        basis = torch.cat(blocks, dim=1)
        if not self.residual:
            basis = self.skip(basis, node_attrs)
        return basis, skip


class ProductBasis(torch.nn.Module):
    """Symmetric contraction of the atomic basis, a linear map and the skip connection."""

    def __init__(
        self,
        lmax: int,
        irreps_out: list[Irrep],
        correlation: int,
        channels: int,
        num_elements: int,
    ) -> None:
        super().__init__()
        self.contraction = SymmetricContraction(
            lmax, irreps_out, correlation, channels, num_elements
        )
        self.linear = BlockLinear(irreps_out, irreps_out, channels, channels)

    def forward(self, basis: Tensor, species: Tensor, skip: Tensor | None) -> Tensor:
        """New node features ``[N, D_out, C]``."""
        h = self.linear(self.contraction(basis, species))
        return h if skip is None else h + skip


class ScalarReadout(torch.nn.Module):
    """Scalars ``[N, k]`` from the ``0e`` block: linear, or a one-hidden-layer SiLU MLP."""

    def __init__(self, channels: int, num_out: int, hidden: int = 0) -> None:
        super().__init__()
        sizes = [channels, hidden, num_out] if hidden else [channels, num_out]
        self.weights = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.randn(a, b)) for a, b in zip(sizes, sizes[1:], strict=False)]
        )
        self.act = normalize2mom(torch.nn.functional.silu)

    def forward(self, h: Tensor) -> Tensor:
        """``h [N, D, C]`` with the ``0e`` block first -> ``[N, k]``."""
        x = h[:, 0, :]
        for k, w in enumerate(self.weights):
            if k > 0:
                x = self.act(x)
            x = x @ (w / math.sqrt(w.shape[0]))
        return x


class VectorReadout(torch.nn.Module):
    """One Cartesian vector ``[N, 3]`` per node from the ``1o`` block (linear in channels)."""

    to_xyz: Tensor

    def __init__(self, channels: int, vector_slice: slice) -> None:
        super().__init__()
        self.vector_start, self.vector_stop = vector_slice.start, vector_slice.stop
        self.weight = torch.nn.Parameter(torch.randn(channels))
        # Rows: the l=1 spherical harmonics of the unit x, y, z axes (e3nn's component order
        # changed between releases), so ``v_sh @ to_xyz.T`` is the Cartesian vector.
        unit = o3.spherical_harmonics(
            1, torch.eye(3, dtype=torch.float64), normalize=True, normalization="norm"
        )
        self.register_buffer("to_xyz", unit, persistent=False)

    def forward(self, h: Tensor) -> Tensor:
        """``h [N, D, C]`` -> ``[N, 3]``."""
        v = h[:, self.vector_start : self.vector_stop, :] @ (
            self.weight / math.sqrt(self.weight.shape[0])
        )
        return v @ self.to_xyz.T.to(v.dtype)
