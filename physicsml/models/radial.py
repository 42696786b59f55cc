"""Radial basis and smooth cut-off shared by NequIP and Allegro."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def polynomial_cutoff(lengths: Tensor, cut_off: float, p: int) -> Tensor:
    """DimeNet polynomial envelope: 1 at r = 0; it and its first two derivatives vanish at
    ``cut_off`` (zero beyond it)."""
    x = lengths / cut_off
    envelope = (
        1.0
        - 0.5 * (p + 1.0) * (p + 2.0) * x.pow(p)
        + p * (p + 2.0) * x.pow(p + 1)
        - 0.5 * p * (p + 1.0) * x.pow(p + 2)
    )
    return envelope * (x < 1.0)


class BesselRadialEmbedding(torch.nn.Module):
    """Bessel functions ``2/r_c sin(w_n r / r_c) / r`` times the polynomial envelope.

    ``w_n`` start at ``n * pi`` and are trainable when ``trainable`` (as in NequIP).
    """

    def __init__(
        self,
        cut_off: float,
        num_bessel: int = 8,
        num_polynomial_cutoff: int = 6,
        trainable: bool = True,
    ) -> None:
        super().__init__()
        self.cut_off = cut_off
        self.p = num_polynomial_cutoff
        weights = math.pi * torch.arange(1, num_bessel + 1, dtype=torch.get_default_dtype())
        if trainable:
            self.bessel_weights = torch.nn.Parameter(weights)
        else:
            self.register_buffer("bessel_weights", weights)

    def forward(self, lengths: Tensor) -> Tensor:
        """Embed edge lengths ``[E]`` into ``[E, num_bessel]``."""
        r = lengths.unsqueeze(-1)
        bessel = (2.0 / self.cut_off) * torch.sin(self.bessel_weights * r / self.cut_off) / r
        return bessel * polynomial_cutoff(r, self.cut_off, self.p)
