"""Small tensor helpers shared by the architectures."""

import torch
from torch import Tensor


def edge_vectors(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Return edge vectors r_ij = x_j - x_i + shift ([E, 3]) and their lengths ([E])."""
    pos = batch["coordinates"]
    i, j = batch["edge_index"][0], batch["edge_index"][1]
    vectors = pos[j] - pos[i] + batch["cell_shift"]
    lengths = torch.sqrt(torch.clamp((vectors * vectors).sum(-1), min=1e-16))
    return vectors, lengths


def scatter_sum(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Sum rows of ``src`` into ``dim_size`` buckets given by ``index`` (along dim 0)."""
    shape = list(src.shape)
    shape[0] = dim_size
    out = src.new_zeros(shape)
    return out.index_add_(0, index, src)


def scatter_mean(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Mean of rows of ``src`` per bucket (empty buckets give 0)."""
    total = scatter_sum(src, index, dim_size)
    count = torch.bincount(index, minlength=dim_size).clamp(min=1).to(src.dtype)
    return total / count.view([-1] + [1] * (src.dim() - 1))


def num_graphs(batch: dict[str, Tensor]) -> int:
    """Number of graphs in the batch as a Python int."""
    return int(batch["ptr"].numel() - 1)


class Constant(torch.nn.Module):
    """A tensor that moves with the module (a non-persistent buffer, not in the state dict),
    so that lists of constants are ``ModuleList``s that TorchScript can iterate."""

    value: Tensor

    def __init__(self, value: Tensor) -> None:
        super().__init__()
        self.register_buffer("value", value, persistent=False)

    def forward(self) -> Tensor:
        return self.value
