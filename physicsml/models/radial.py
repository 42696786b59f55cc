"""Radial bases and smooth cut-off functions of edge lengths, shared by every architecture."""

import math

import torch
from torch import Tensor


def polynomial_cutoff(lengths: Tensor, cut_off: float, p: int = 6) -> Tensor:
    """DimeNet polynomial envelope (Klicpera et al. 2020): 1 at r = 0; it and its first two
    derivatives vanish at ``cut_off`` (zero beyond it)."""
    x = lengths / cut_off
    xp = x.pow(p)
    envelope = (
        1.0 - 0.5 * (p + 1) * (p + 2) * xp + p * (p + 2) * xp * x - 0.5 * p * (p + 1) * xp * x * x
    )
    return envelope * (x < 1.0)


def cosine_cutoff(lengths: Tensor, cut_off: float) -> Tensor:
    """Behler's ``0.5 cos(pi r / r_c) + 0.5`` inside the cut-off, 0 outside."""
    inside = 0.5 * torch.cos(lengths * (math.pi / cut_off)) + 0.5
    return torch.where(lengths < cut_off, inside, torch.zeros_like(lengths))


def gaussian_basis(lengths: Tensor, shifts: Tensor, eta: float) -> Tensor:
    """Gaussians ``exp(-eta (r - shift_k)^2)`` of ``lengths [E]`` -> ``[E, len(shifts)]``."""
    return torch.exp(-eta * (lengths[:, None] - shifts) ** 2)


class BesselBasis(torch.nn.Module):
    """Bessel functions ``prefactor * sin(w_n r / r_c) / r``, ``n = 1..num_basis``.

    ``w_n`` start at ``n * pi`` and are trainable when ``trainable`` (as in NequIP); the
    prefactor defaults to NequIP's ``2 / r_c``. With ``envelope_exponent`` p the basis is
    multiplied by :func:`polynomial_cutoff` of that exponent.
    """

    def __init__(
        self,
        cut_off: float,
        num_basis: int = 8,
        trainable: bool = True,
        envelope_exponent: int | None = None,
        prefactor: float | None = None,
    ) -> None:
        super().__init__()
        self.cut_off = cut_off
        self.envelope_exponent = envelope_exponent
        self.prefactor = 2.0 / cut_off if prefactor is None else prefactor
        weights = math.pi * torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype())
        if trainable:
            self.bessel_weights = torch.nn.Parameter(weights)
        else:
            self.register_buffer("bessel_weights", weights)

    def forward(self, lengths: Tensor) -> Tensor:
        """Embed edge lengths ``[E]`` into ``[E, num_basis]``."""
        r = lengths.unsqueeze(-1)
        basis = self.prefactor * torch.sin(self.bessel_weights * r / self.cut_off) / r
        if self.envelope_exponent is None:
            return basis
        return basis * polynomial_cutoff(r, self.cut_off, self.envelope_exponent)


class ExpNormalBasis(torch.nn.Module):
    """PhysNet's exponential normal basis ``exp(-beta (exp(-r) - mu_k)^2)``, ``mu_k`` evenly
    spaced in ``[exp(-r_c), 1]``."""

    mu: Tensor

    def __init__(self, num_basis: int, cut_off: float) -> None:
        super().__init__()
        start = math.exp(-cut_off)
        self.register_buffer("mu", torch.linspace(start, 1.0, num_basis))
        self.beta = (2.0 / num_basis * (1.0 - start)) ** -2

    def forward(self, lengths: Tensor) -> Tensor:
        """Embed edge lengths ``[E]`` into ``[E, num_basis]``."""
        return gaussian_basis(torch.exp(-lengths), self.mu, self.beta)
