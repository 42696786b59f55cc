"""MACE (Batatia et al. 2022, arXiv:2206.07697)."""

from physicsml.models.mace.model import MACE

__all__ = ["MACE"]
