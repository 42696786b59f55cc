"""NequIP (Batzner et al. 2022)."""

from physicsml.models.nequip.model import NequIP

__all__ = ["NequIP"]
