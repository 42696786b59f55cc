"""Physics and head tests of TensorNet."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pytest
import torch
from ase import Atoms

from physicsml.data.graph import atoms_to_batch
from physicsml.models.tensornet import TensorNet
from physicsml.models.tensornet.model import Embedding, Interaction
from physicsml.models.utils import edge_vectors
from tests.models.physics import ModelPhysicsTests, random_rotation
from tests.structures import ASPIRIN, ETHANOL


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def small(**kwargs: Any) -> TensorNet:
    return TensorNet(
        num_elements=4,
        cut_off=4.0,
        avg_num_neighbours=10.0,
        num_features=8,
        num_radial=8,
        num_interaction_layers=2,
        embedding_mlp_hidden_dims=[16],
        interaction_mlp_hidden_dims=[8, 16],
        scalar_output_mlp_hidden_dims=[8, 4],
        **kwargs,
    )


class TestTensorNetPhysics(ModelPhysicsTests):
    def make_model(self) -> torch.nn.Module:
        return small()


def test_heads_shapes_and_invariance(molecules: list[Atoms]) -> None:
    torch.manual_seed(0)
    model = small(num_node_scalars=2, num_graph_scalars=3).double()
    elements = (1, 6, 8, 29)
    rot = torch.from_numpy(random_rotation(np.random.default_rng(0)))
    batch = atoms_to_batch(molecules, elements, 4.0)
    out = model(batch)
    n, g = batch["coordinates"].shape[0], len(molecules)
    assert out["node_energy"].shape == (n,)
    assert out["y_node_scalars"].shape == (n, 2)
    assert out["graph_scalars"].shape == (g, 3)
    batch["coordinates"] = batch["coordinates"] @ rot.T
    rotated = model(batch)
    for key in ("node_energy", "y_node_scalars", "graph_scalars"):
        torch.testing.assert_close(rotated[key], out[key])
        assert out[key].abs().max() > 0


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"node_vector": True}, "y_node_vector"),
        ({"graph_vector": True}, "y_graph_vector"),
    ],
)
def test_unsupported_heads(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        small(**kwargs)


def test_parameter_count_matches_physicsml_layout() -> None:
    """Same layers as physicsml's TensorNet: 194,753 parameters for these settings."""
    model = TensorNet(
        num_elements=4,
        cut_off=5.0,
        avg_num_neighbours=10.0,
        num_features=64,
        num_radial=32,
        num_interaction_layers=2,
        embedding_mlp_hidden_dims=[128],
        interaction_mlp_hidden_dims=[64, 128],
        scalar_output_mlp_hidden_dims=[64, 32],
    )
    assert count_parameters(model) == 194_753


@pytest.fixture
def molecules() -> list[Atoms]:
    from ase.io import read

    ethanol = cast(list[Atoms], read(ETHANOL, "0:2"))
    aspirin = cast(Atoms, read(ASPIRIN, 0))
    return [*ethanol, aspirin]


def _decompose(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    eye = torch.eye(3, dtype=x.dtype)
    iso = x.diagonal(dim1=-2, dim2=-1).mean(-1)[..., None, None] * eye
    return iso, 0.5 * (x - x.transpose(-2, -1)), 0.5 * (x + x.transpose(-2, -1)) - iso


def _mix(lin: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("gf,nfab->ngab", lin.weight, x)


def test_layers_match_full_matrix_formulas(molecules: list[Atoms]) -> None:
    """The 9-coefficient implementation equals the paper's formulas on [N, F, 3, 3] tensors."""
    torch.manual_seed(0)
    model = small().double()
    batch = atoms_to_batch(molecules, (1, 6, 8, 29), 4.0)
    i, j = batch["edge_index"]
    n = len(batch["species"])
    vec, r = edge_vectors(batch)
    unit = vec / r[:, None]
    phi = 0.5 * (torch.cos(r * torch.pi / 4.0) + 1.0)
    rbf = model.rbf(r)
    basis = model.embedding.basis.reshape(9, 3, 3)
    eye = torch.eye(3, dtype=r.dtype)

    def full(c: torch.Tensor) -> torch.Tensor:  # [N, 9, F] -> [N, F, 3, 3]
        return torch.einsum("nkf,kab->nfab", c, basis)

    # embedding
    emb = cast(Embedding, model.embedding)
    h = emb.element_embedding(batch["node_attrs"])
    z = emb.pair_embedding(torch.cat([h[i], h[j]], -1))
    f = emb.radial(rbf * phi[:, None]).unflatten(1, (3, -1)) * (z * phi[:, None])[:, None]
    skew = torch.linalg.cross(unit[:, None, :].expand(-1, 3, -1), eye.expand(len(r), 3, 3)).mT
    edge = (
        f[:, 0, :, None, None] * eye
        + f[:, 1, :, None, None] * skew[:, None]
        + f[:, 2, :, None, None]
        * (unit[:, None, :, None] * unit[:, None, None, :] - eye / 3)[:, :1]
    )
    x = torch.zeros(n, *edge.shape[1:], dtype=r.dtype).index_add(0, i, edge)
    fs = torch.nn.functional.silu(emb.mlp(emb.layer_norm((x**2).sum((-2, -1)))))
    fs = fs.unflatten(1, (3, -1))
    parts = _decompose(x)
    x = torch.stack(
        [fs[:, k, :, None, None] * _mix(emb.after.linears[k], parts[k]) for k in range(3)]
    ).sum(0)
    coeff = emb(batch, unit, rbf, phi)
    torch.testing.assert_close(full(coeff), x)

    # one interaction
    inter = cast(Interaction, model.interactions[0])
    x = x / ((x**2).sum((-2, -1)) + 1)[..., None, None]
    y_parts = [_mix(inter.before.linears[k], p) for k, p in enumerate(_decompose(x))]
    y = torch.stack(y_parts).sum(0)
    f = phi[:, None] * torch.nn.functional.silu(inter.mlp(rbf * phi[:, None]))
    f = f.unflatten(1, (3, -1))
    msg = torch.stack([f[:, k, :, None, None] * y_parts[k][j] for k in range(3)]).sum(0)
    m = torch.zeros_like(x).index_add(0, i, msg)
    p = m @ y + y @ m
    p = p / ((p**2).sum((-2, -1)) + 1)[..., None, None]
    dy = torch.stack([_mix(inter.after.linears[k], q) for k, q in enumerate(_decompose(p))]).sum(0)
    expected = x + dy + dy @ dy
    torch.testing.assert_close(full(inter(coeff, batch["edge_index"], rbf, phi)), expected)
