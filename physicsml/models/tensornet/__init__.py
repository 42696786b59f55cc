"""TensorNet (Simeon & De Fabritiis 2023, arXiv:2306.06482)."""

from physicsml.models.tensornet.model import TensorNet

__all__ = ["TensorNet"]
