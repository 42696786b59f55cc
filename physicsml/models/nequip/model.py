"""NequIP: E(3)-equivariant message passing (Batzner et al. 2022, Nat. Commun. 13:2453)."""

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch import Tensor

from physicsml.config.errors import ConfigError
from physicsml.models.radial import BesselBasis
from physicsml.models.utils import edge_vectors, num_graphs, scatter_sum


def _path_exists(irreps_in: o3.Irreps, irreps_edge: o3.Irreps, ir_out: o3.Irrep) -> bool:
    return any(ir_out in ir1 * ir2 for _, ir1 in irreps_in for _, ir2 in irreps_edge)


def _reachable(
    irreps_in: o3.Irreps, irreps_sh: o3.Irreps, target: o3.Irreps
) -> tuple[o3.Irreps, o3.Irreps]:
    """Scalars and non-scalars of ``target`` that the convolution can produce."""
    keep = [(m, ir) for m, ir in target if _path_exists(irreps_in, irreps_sh, ir)]
    return (
        o3.Irreps([(m, ir) for m, ir in keep if ir.l == 0]),
        o3.Irreps([(m, ir) for m, ir in keep if ir.l > 0]),
    )


class ConvLayer(torch.nn.Module):
    """One NequIP interaction: self-connection + radially weighted TP convolution + gate.

    With ``resnet`` the input is added to the output (its blocks of the output's irreps).
    """

    resnet_index: Tensor

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_sh: o3.Irreps,
        target_irreps: o3.Irreps,
        num_elements: int,
        num_bessel: int,
        radial_hidden: list[int],
        avg_num_neighbours: float,
        self_connection: bool,
        resnet: bool,
    ) -> None:
        super().__init__()
        scalars, gated = _reachable(irreps_in, irreps_sh, target_irreps)
        gate_ir = "0e" if _path_exists(irreps_in, irreps_sh, o3.Irrep("0e")) else "0o"
        gates = o3.Irreps([(m, gate_ir) for m, _ in gated])
        silu = torch.nn.functional.silu
        self.gate = Gate(
            scalars,
            [silu if ir.p == 1 else torch.tanh for _, ir in scalars],
            gates,
            [silu if ir.p == 1 else torch.tanh for _, ir in gates],
            gated,
        )
        irreps_pre = self.gate.irreps_in
        self.irreps_out: o3.Irreps = self.gate.irreps_out
        self.resnet = resnet
        if resnet:
            blocks = dict(zip(irreps_in, irreps_in.slices(), strict=True))
            index = [torch.arange(blocks[b].start, blocks[b].stop) for b in self.irreps_out]
            self.register_buffer("resnet_index", torch.cat(index))
        self.inv_sqrt_neighbours = avg_num_neighbours**-0.5

        self.linear_1 = o3.Linear(irreps_in, irreps_in)
        mid: list[tuple[int, o3.Irrep]] = []
        instructions = []
        for i, (mul, ir_in) in enumerate(irreps_in):
            for j, (_, ir_edge) in enumerate(irreps_sh):
                for ir_out in ir_in * ir_edge:
                    if ir_out in irreps_pre:
                        instructions.append((i, j, len(mid), "uvu", True))
                        mid.append((mul, ir_out))
        irreps_mid, perm, _ = o3.Irreps(mid).sort()
        instructions = [(i, j, perm[k], mode, w) for i, j, k, mode, w in instructions]
        self.tp = o3.TensorProduct(
            irreps_in,
            irreps_sh,
            irreps_mid,
            instructions,
            shared_weights=False,
            internal_weights=False,
        )
        self.radial_mlp = FullyConnectedNet(
            [num_bessel, *radial_hidden, self.tp.weight_numel], torch.nn.functional.silu
        )
        self.linear_2 = o3.Linear(irreps_mid.simplify(), irreps_pre)
        # Species-dependent linear map: equals e3nn's FullyConnectedTensorProduct with the
        # one-hot node attributes (physicsml's self-connection) at a fraction of the cost.
        self.self_connection: o3.Linear | None = None
        if self_connection:
            self.self_connection = o3.Linear(
                irreps_in, irreps_pre, shared_weights=False, internal_weights=False
            )
            self.sc_weight = torch.nn.Parameter(
                torch.randn(num_elements, self.self_connection.weight_numel)
            )

    def forward(
        self, x: Tensor, species: Tensor, radial: Tensor, sh: Tensor, edge_index: Tensor
    ) -> Tensor:
        """Update node features ``x`` [N, irreps_in.dim] -> [N, irreps_out.dim]."""
        centre, neighbour = edge_index[0], edge_index[1]
        h = self.linear_1(x)
        messages = self.tp(h[neighbour], sh, self.radial_mlp(radial))
        h = scatter_sum(messages, centre, x.shape[0]) * self.inv_sqrt_neighbours
        h = self.linear_2(h)
        if self.self_connection is not None:
            h = h + self.self_connection(x, self.sc_weight[species])
        h = self.gate(h)
        if hasattr(self, "resnet_index"):  # a static test: TorchScript compiles one branch
            return x[:, self.resnet_index] + h
        return h


class NequIP(torch.nn.Module):
    """NequIP interatomic potential with optional scalar/vector heads (see models/README.md).

    Hyperparameter defaults are physicsml's.
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
        num_layers: int = 4,
        max_ell: int = 2,
        parity: bool = True,
        num_features: int = 32,
        mlp_irreps: str = "16x0e",
        num_bessel: int = 8,
        bessel_basis_trainable: bool = True,
        num_polynomial_cutoff: int = 6,
        self_connection: bool = True,
        resnet: bool = True,
        # physicsml hard-codes the radial MLP as two hidden layers of 64; exposed here.
        radial_mlp_width: int = 64,
        radial_mlp_depth: int = 2,
    ) -> None:
        super().__init__()
        if num_graph_attrs > 0:
            raise ConfigError("NequIP cannot use graph_attrs")
        hidden_mlp = o3.Irreps(mlp_irreps)
        if any(ir != o3.Irrep("0e") for _, ir in hidden_mlp):
            raise ConfigError(f"mlp_irreps must be even scalars, got {mlp_irreps!r}")

        self.irreps_sh = o3.Irreps.spherical_harmonics(max_ell, p=-1 if parity else 1)
        self.spherical_harmonics = o3.SphericalHarmonics(
            self.irreps_sh, normalize=True, normalization="component"
        )
        self.radial = BesselBasis(
            cut_off, num_bessel, bessel_basis_trainable, envelope_exponent=num_polynomial_cutoff
        )
        self.embedding = torch.nn.Embedding(num_elements, num_features)

        parities = (1, -1) if parity else (1,)
        hidden = (
            o3.Irreps([(num_features, (ell, p)) for ell in range(max_ell + 1) for p in parities])
            .sort()
            .irreps
        )
        vector_ir = self.irreps_sh[1].ir if max_ell > 0 else None
        want_vector = node_vector or graph_vector
        if want_vector and vector_ir is None:
            raise ConfigError("NequIP needs max_ell >= 1 to predict vectors")
        # The last layer only keeps what the heads read: even scalars (and the vector irrep).
        last = o3.Irreps(
            [(num_features, "0e")] + ([(num_features, vector_ir)] if want_vector else [])
        )

        irreps = o3.Irreps(f"{num_features}x0e")
        self.layers = torch.nn.ModuleList()
        for k in range(num_layers):
            # physicsml's rule: a residual where the (unpruned) output irreps equal the input's.
            scalars, gated = _reachable(irreps, self.irreps_sh, hidden)
            layer = ConvLayer(
                irreps,
                self.irreps_sh,
                last if k == num_layers - 1 else hidden,
                num_elements,
                num_bessel,
                [radial_mlp_width] * radial_mlp_depth,
                avg_num_neighbours,
                self_connection,
                resnet and scalars + gated == irreps,
            )
            self.layers.append(layer)
            irreps = layer.irreps_out

        def readout(out: str) -> torch.nn.Sequential:
            return torch.nn.Sequential(o3.Linear(irreps, hidden_mlp), o3.Linear(hidden_mlp, out))

        self.energy_head = readout("1x0e")
        self.node_scalars_head = readout(f"{num_node_scalars}x0e") if num_node_scalars else None
        self.graph_scalars_head = readout(f"{num_graph_scalars}x0e") if num_graph_scalars else None
        self.node_vector_head = (
            o3.Linear(irreps, o3.Irreps([(1, vector_ir)])) if node_vector else None
        )
        self.graph_vector_head = (
            o3.Linear(irreps, o3.Irreps([(1, vector_ir)])) if graph_vector else None
        )

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per-atom energies and the requested heads for a collated batch."""
        vectors, lengths = edge_vectors(batch)
        species = batch["species"]
        edge_index = batch["edge_index"]
        sh = self.spherical_harmonics(vectors)
        radial = self.radial(lengths)
        x = self.embedding(species)
        for layer in self.layers:
            x = layer(x, species, radial, sh, edge_index)

        out = {"node_energy": self.energy_head(x).squeeze(-1)}
        if self.node_scalars_head is not None:
            out["y_node_scalars"] = self.node_scalars_head(x)
        if self.graph_scalars_head is not None:
            out["graph_scalars"] = scatter_sum(
                self.graph_scalars_head(x), batch["batch"], num_graphs(batch)
            )
        if self.node_vector_head is not None:
            out["y_node_vector"] = self.node_vector_head(x)
        if self.graph_vector_head is not None:
            out["y_graph_vector"] = scatter_sum(
                self.graph_vector_head(x), batch["batch"], num_graphs(batch)
            )
        return out
