"""Small tensor helpers shared by the architectures."""

from __future__ import annotations

import torch
from torch import Tensor


def edge_vectors(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Return edge vectors r_ij = x_j - x_i + shift ([E, 3]) and their lengths ([E])."""
    pos = batch["coordinates"]
    i, j = batch["edge_index"]
    vectors = pos[j] - pos[i] + batch["cell_shift"]
    lengths = torch.sqrt(torch.clamp((vectors * vectors).sum(-1), min=1e-16))
    return vectors, lengths


def scatter_sum(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Sum rows of ``src`` into ``dim_size`` buckets given by ``index`` (along dim 0)."""
    out = src.new_zeros((dim_size, *src.shape[1:]))
    return out.index_add_(0, index, src)


def scatter_mean(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Mean of rows of ``src`` per bucket (empty buckets give 0)."""
    total = scatter_sum(src, index, dim_size)
    count = torch.bincount(index, minlength=dim_size).clamp(min=1).to(src.dtype)
    return total / count.view(-1, *([1] * (src.dim() - 1)))


def num_graphs(batch: dict[str, Tensor]) -> int:
    """Number of graphs in the batch as a Python int."""
    return int(batch["ptr"].numel() - 1)
