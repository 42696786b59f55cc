"""Allegro (Musaelian et al. 2023)."""

from physicsml.models.allegro.model import Allegro

__all__ = ["Allegro"]
