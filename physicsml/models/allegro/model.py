"""Allegro: strictly local equivariant edge model (Musaelian et al. 2023, Nat. Commun. 14:579).

Every edge ij carries scalar latents and equivariant features with ``env_embed_multiplicity``
channels. Each layer takes the tensor product of the edge features with the environment
embedding of the centre atom i (a learned, latent-weighted sum of the spherical harmonics of
i's edges); its scalars feed the next latent MLP. Edge energies from the final latents are
summed onto the centre atoms. No information travels beyond one cut-off sphere.
"""

import math
from collections.abc import Sequence

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet
from torch import Tensor

from physicsml.config.errors import ConfigError
from physicsml.models.radial import BesselBasis, polynomial_cutoff
from physicsml.models.utils import edge_vectors, num_graphs, scatter_sum


def _layer_irreps(env: list[o3.Irrep], num_layers: int, parity: bool) -> list[list[o3.Irrep]]:
    """Irreps of the edge features entering each TP layer, plus the final ``[0e]``.

    Every layer may produce any l <= max_ell (both parities when ``parity``); paths that
    cannot reach the scalar output of the last layer are pruned.
    """
    candidates = [o3.Irrep(ir.l, p) for ir in env for p in (1, -1)] if parity else list(env)
    seq = [list(env)]
    for k in range(num_layers):
        wanted = [o3.Irrep("0e")] if k == num_layers - 1 else candidates
        seq.append([o for o in wanted if any(o in a * e for a in seq[-1] for e in env)])
    for k in range(num_layers - 1, -1, -1):
        seq[k] = [a for a in seq[k] if any(o in a * e for e in env for o in seq[k + 1])]
    return seq


class EdgeTensorProduct(torch.nn.Module):
    """Channel-wise ("uuu") tensor product of edge features with the centre's environment.

    Inputs are ``[E, mul, dim]`` (irreps concatenated along the last axis, one copy each);
    all paths are one matmul of the outer product with a constant Clebsch-Gordan matrix.
    ``linear`` then mixes channels and paths of equal output irrep.
    """

    cg: Tensor

    def __init__(
        self,
        irreps_in: list[o3.Irrep],
        irreps_env: list[o3.Irrep],
        irreps_out: list[o3.Irrep],
        mul: int,
        linear: bool,
    ) -> None:
        super().__init__()
        offsets_in = _offsets(irreps_in)
        offsets_env = _offsets(irreps_env)
        dim_env = sum(ir.dim for ir in irreps_env)
        blocks: list[tuple[int, int, int, Tensor]] = []  # (row_in, row_env, col, C)
        self.out_slices: list[tuple[int, int, int]] = []  # (start, num_paths, dim) per output
        col = 0
        for ir_out in irreps_out:
            start, k = col, 0
            for a, off_a in zip(irreps_in, offsets_in, strict=True):
                for e, off_e in zip(irreps_env, offsets_env, strict=True):
                    if ir_out in a * e:
                        cg = o3.wigner_3j(a.l, e.l, ir_out.l) * math.sqrt(ir_out.dim)
                        blocks.append((off_a, off_e, col, cg))
                        col += ir_out.dim
                        k += 1
            self.out_slices.append((start, k, ir_out.dim))
        cg_matrix = torch.zeros(sum(ir.dim for ir in irreps_in), dim_env, col)
        for off_a, off_e, c, cg in blocks:
            d1, d2, d3 = cg.shape
            cg_matrix[off_a : off_a + d1, off_e : off_e + d2, c : c + d3] = cg
        self.register_buffer("cg", cg_matrix.reshape(-1, col).to(torch.get_default_dtype()))
        self.num_scalar_paths = self.out_slices[0][1] if irreps_out[0] == o3.Irrep("0e") else 0
        self.mul = mul
        self.linear = linear
        self.weights = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.randn(mul, k, mul)) for _, k, _ in self.out_slices]
            if linear
            else []
        )

    def forward(self, features: Tensor, env: Tensor) -> tuple[Tensor, Tensor | None]:
        """Return the invariants ``[E, mul * num_scalar_paths]`` and the mixed features."""
        num_edges = features.shape[0]
        outer = features.unsqueeze(-1) * env.unsqueeze(-2)  # [E, mul, d_in, d_env]
        paths = outer.reshape(num_edges * self.mul, self.cg.shape[0]) @ self.cg
        paths = paths.view(num_edges, self.mul, self.cg.shape[1])
        scalars = paths[:, :, : self.num_scalar_paths].reshape(
            num_edges, self.mul * self.num_scalar_paths
        )
        if not self.linear:
            return scalars, None
        mixed: list[Tensor] = []
        for index, w in enumerate(self.weights):
            start, k, dim = self.out_slices[index]
            block = paths[:, :, start : start + k * dim].reshape(num_edges, self.mul, k, dim)
            mixed.append(torch.einsum("eukd,ukv->evd", block, w) / math.sqrt(self.mul * k))
        return scalars, torch.cat(mixed, dim=-1)


def _offsets(irreps: list[o3.Irrep]) -> list[int]:
    offsets, total = [], 0
    for ir in irreps:
        offsets.append(total)
        total += ir.dim
    return offsets


class Allegro(torch.nn.Module):
    """Allegro potential: energy, node-scalar and graph-scalar heads (see models/README.md).

    Hyperparameter defaults are physicsml's; its ``mlp_irreps`` (ignored by its readout) and
    ``sparse_mode`` (a kernel choice) have no counterpart here.
    """

    env_index: Tensor

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
        num_layers: int = 2,
        max_ell: int = 2,
        parity: bool = True,
        mlp_latent_dimensions: Sequence[int] = (128,),
        latent_mlp_latent_dimensions: Sequence[int] = (1024, 1024, 1024),
        env_embed_multiplicity: int = 32,
        two_body_latent_mlp_latent_dimensions: Sequence[int] = (128, 256, 512, 1024),
        env_embed_mlp_latent_dimensions: Sequence[int] = (),
        num_bessel: int = 8,
        bessel_basis_trainable: bool = True,
        num_polynomial_cutoff: int = 6,
        embed_initial_edge: bool = True,
        per_layer_cutoffs: Sequence[float] | None = None,
        latent_resnet: bool = True,
        latent_resnet_update_ratios: Sequence[float] | None = None,
        latent_resnet_update_ratios_learnable: bool = False,
    ) -> None:
        super().__init__()
        for flag, name in [(node_vector, "y_node_vector"), (graph_vector, "y_graph_vector")]:
            if flag:
                raise ConfigError(f"Allegro cannot predict {name}")
        if num_graph_attrs > 0:
            raise ConfigError("Allegro cannot use graph_attrs")
        if num_layers < 1:
            raise ConfigError("Allegro needs num_layers >= 1")
        latent_dims = list(latent_mlp_latent_dimensions)
        two_body = list(two_body_latent_mlp_latent_dimensions)
        if latent_resnet and latent_dims[-1] != two_body[-1]:
            raise ConfigError("latent_resnet needs equal last latent and two-body latent sizes")
        cutoffs = [cut_off] * (num_layers + 1) if per_layer_cutoffs is None else per_layer_cutoffs
        if len(cutoffs) != num_layers + 1:
            raise ConfigError(f"per_layer_cutoffs needs num_layers + 1 = {num_layers + 1} values")
        if (
            any(b > a for a, b in zip(cutoffs[:-1], cutoffs[1:], strict=True))
            or cutoffs[0] > cut_off
            or min(cutoffs) <= 0
        ):
            raise ConfigError("per_layer_cutoffs must be positive, non-increasing and <= cut_off")
        self.cutoffs = [float(c) for c in cutoffs]
        self.p = num_polynomial_cutoff
        self.mul = env_embed_multiplicity
        self.embed_initial_edge = embed_initial_edge
        self.latent_resnet = latent_resnet
        self.inv_sqrt_neighbours = avg_num_neighbours**-0.5

        irreps_sh = o3.Irreps.spherical_harmonics(max_ell, p=-1 if parity else 1)
        self.spherical_harmonics = o3.SphericalHarmonics(
            irreps_sh, normalize=True, normalization="component"
        )
        self.radial = BesselBasis(
            cut_off, num_bessel, bessel_basis_trainable, envelope_exponent=num_polynomial_cutoff
        )
        env = [ir for _, ir in irreps_sh]
        self.num_env_irreps = len(env)
        # which spherical-harmonic irrep each of the (max_ell + 1)^2 components belongs to
        self.register_buffer(
            "env_index", torch.tensor([i for i, ir in enumerate(env) for _ in range(ir.dim)])
        )
        seq = _layer_irreps(env, num_layers, parity)
        # The first layer's features are the spherical harmonics themselves (all of them).
        seq[0] = env
        silu = torch.nn.functional.silu
        env_weights = self.mul * self.num_env_irreps

        self.latents = torch.nn.ModuleList()
        self.env_mlps = torch.nn.ModuleList()
        self.tps = torch.nn.ModuleList()
        latent_in = 2 * num_elements + num_bessel
        for k in range(num_layers):
            dims = two_body if k == 0 else latent_dims
            self.latents.append(FullyConnectedNet([latent_in, *dims], silu))
            extra = env_weights if k == 0 and embed_initial_edge else 0
            self.env_mlps.append(
                FullyConnectedNet([dims[-1], *env_embed_mlp_latent_dimensions, env_weights + extra])
            )
            tp = EdgeTensorProduct(seq[k], env, seq[k + 1], self.mul, k < num_layers - 1)
            self.tps.append(tp)
            latent_in = dims[-1] + self.mul * tp.num_scalar_paths
        self.final_latent = FullyConnectedNet([latent_in, *latent_dims], silu)

        if latent_resnet_update_ratios is None:
            update = torch.zeros(num_layers)
        else:
            update = torch.logit(torch.as_tensor(list(latent_resnet_update_ratios))).clamp(
                -6.0, 6.0
            )
            if update.shape != (num_layers,):
                raise ConfigError(f"latent_resnet_update_ratios needs {num_layers} values")
        if latent_resnet_update_ratios_learnable:
            self.update_params = torch.nn.Parameter(update)
        else:
            self.register_buffer("update_params", update)

        # Edge readouts are linear MLPs (as in Allegro and physicsml), so they vanish with
        # the latents at the cut-off.
        out_dim = latent_dims[-1]
        mlp_latent = list(mlp_latent_dimensions)
        self.energy_head = FullyConnectedNet([out_dim, *mlp_latent, 1])
        self.node_scalars_head = (
            FullyConnectedNet([out_dim, *mlp_latent, num_node_scalars])
            if num_node_scalars
            else None
        )
        self.graph_scalars_head = (
            FullyConnectedNet([out_dim, *mlp_latent, num_graph_scalars])
            if num_graph_scalars
            else None
        )

    def _weighted_sh(self, sh: Tensor, weights: Tensor) -> Tensor:
        """Weight each irrep of ``sh`` [E, dim] per channel with [E, mul * n_irreps]."""
        w = weights.view(-1, self.mul, self.num_env_irreps)[:, :, self.env_index]
        return w * sh.unsqueeze(1)

    def _resnet(self, latents: Tensor, new: Tensor, k: int) -> Tensor:
        """Mix old and new latents with the k-th update ratio (or replace without resnet)."""
        if not self.latent_resnet:
            return new
        ratio = torch.sigmoid(self.update_params[k])
        old_coefficient = torch.rsqrt(ratio.square() + 1.0)
        return old_coefficient * latents + ratio * old_coefficient * new

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per-atom energies and the requested scalar heads for a collated batch."""
        vectors, lengths = edge_vectors(batch)
        centre, neighbour = batch["edge_index"][0], batch["edge_index"][1]
        num_atoms = batch["species"].shape[0]
        sh = self.spherical_harmonics(vectors)
        attrs = batch["node_attrs"]
        envelopes = [polynomial_cutoff(lengths, rc, self.p).unsqueeze(-1) for rc in self.cutoffs]

        inputs = torch.cat([attrs[centre], attrs[neighbour], self.radial(lengths)], dim=-1)
        latents: Tensor | None = None
        features = sh.unsqueeze(1).expand(-1, self.mul, -1)
        for k, (latent_mlp, env_mlp, tp) in enumerate(
            zip(self.latents, self.env_mlps, self.tps, strict=True)
        ):
            new = latent_mlp(inputs) * envelopes[k]
            latents = new if latents is None else self._resnet(latents, new, k - 1)
            weights = env_mlp(latents)
            if k == 0 and self.embed_initial_edge:
                edge_w, weights = weights.split([weights.shape[-1] // 2] * 2, dim=-1)
                features = self._weighted_sh(sh, edge_w)
            # Edges beyond this layer's cut-off fade out of the environment smoothly.
            env_edge = self._weighted_sh(sh, weights) * envelopes[k].unsqueeze(-1)
            env = scatter_sum(env_edge, centre, num_atoms) * self.inv_sqrt_neighbours
            scalars, mixed = tp(features, env[centre])
            if mixed is not None:
                features = mixed
            inputs = torch.cat([latents, scalars], dim=-1)
        new = self.final_latent(inputs) * envelopes[-1]
        assert latents is not None
        latents = self._resnet(latents, new, len(self.tps) - 1)

        out = {
            "node_energy": self._to_atoms(self.energy_head(latents), centre, num_atoms).squeeze(-1)
        }
        if self.node_scalars_head is not None:
            out["y_node_scalars"] = self._to_atoms(
                self.node_scalars_head(latents), centre, num_atoms
            )
        if self.graph_scalars_head is not None:
            out["graph_scalars"] = scatter_sum(
                self._to_atoms(self.graph_scalars_head(latents), centre, num_atoms),
                batch["batch"],
                num_graphs(batch),
            )
        return out

    def _to_atoms(self, edge_values: Tensor, centre: Tensor, num_atoms: int) -> Tensor:
        """Sum edge values onto their centre atoms, normalised by the neighbour count."""
        return scatter_sum(edge_values, centre, num_atoms) * self.inv_sqrt_neighbours
