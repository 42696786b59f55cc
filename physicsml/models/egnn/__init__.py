"""EGNN (Satorras et al. 2021, arXiv:2102.09844)."""

from physicsml.models.egnn.model import EGNN

__all__ = ["EGNN"]
