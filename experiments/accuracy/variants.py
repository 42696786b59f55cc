"""Patches of a built MACE (attributes and parametrisations only, the package is untouched)
that make one of its normalisations or parametrisations mace-torch's, to measure each alone:

- ``embedding``: the species embedding times ``1/sqrt(num_elements)`` in the forward pass (e3nn's
  Linear on the one-hot species, mace-torch's node embedding);
- ``skip``: the species-dependent linear maps (first-layer mixing, residual skips) scaled by
  ``1/sqrt(channels x num_elements)`` (e3nn's FullyConnectedTensorProduct with the one-hot);
- ``radial``: the Bessel prefactor ``sqrt(2/r_c)`` (mace-torch's) instead of ``2/r_c``;
- ``embedding_init``, ``skip_init``: the same initial outputs as ``embedding``/``skip`` by
  dividing the initial weights instead (Adam's steps are then larger relative to the weights);
- ``unit_scale``: the symmetric contraction as before its per-degree weight scale (the state
  until 2026-12-01): the same initial function, the weights stored unscaled, so that Adam's
  steps are ``num_weights(nu)`` times smaller relative to them;
- ``unit_scale_small_init``: unscaled weights that start ``num_weights(nu)`` times smaller
  (mace-torch's weight magnitudes without its parametrisation; initially a smaller contraction);
- ``amsgrad``: AMSGrad (mace-torch's default), read by the training script.
"""

from __future__ import annotations

import math

import torch
from torch.nn.utils import parametrize

from physicsml.models.mace import MACE

PATCHES = (
    "embedding",
    "skip",
    "radial",
    "embedding_init",
    "skip_init",
    "unit_scale",
    "unit_scale_small_init",
    "amsgrad",
)


class Scaled(torch.nn.Module):
    """Parametrisation ``w -> factor * w`` (``factor`` a number or a broadcastable tensor)."""

    def __init__(self, factor: float | torch.Tensor) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.factor * w


def parse_variant(variant: str) -> set[str]:
    """The patches of a variant name such as ``embedding+skip`` (``baseline``: none)."""
    patches = set(variant.split("+")) - {"baseline"}
    unknown = patches - set(PATCHES)
    if unknown:
        raise SystemExit(f"error: unknown variant parts {sorted(unknown)}; known: {PATCHES}")
    return patches


def patch(model: MACE, patches: set[str], cut_off: float) -> None:
    """Apply ``patches`` (see the module docstring) to ``model`` in place."""
    num_elements = model.embedding.shape[0]
    with torch.no_grad():
        if "embedding_init" in patches:
            model.embedding /= math.sqrt(num_elements)
        if "skip_init" in patches:
            for interaction in model.interactions:
                interaction.skip.weight /= math.sqrt(num_elements)
    if "embedding" in patches:
        parametrize.register_parametrization(model, "embedding", Scaled(num_elements**-0.5))
    if "skip" in patches:
        for interaction in model.interactions:
            interaction.skip.scale /= math.sqrt(num_elements)
    if "radial" in patches:
        model.radial.prefactor = math.sqrt(2.0 / cut_off)
    if {"unit_scale", "unit_scale_small_init"} & patches:
        for product in model.products:
            contraction = product.contraction
            with torch.no_grad():
                if "unit_scale" in patches:
                    contraction.weight *= contraction.weight_scale[:, None]
                contraction.weight_scale.fill_(1.0)
