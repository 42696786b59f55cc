"""Allegro (Musaelian et al. 2023)."""

from physicsml.models.allegro.model import Allegro, AllegroConfig

__all__ = ["Allegro", "AllegroConfig"]
