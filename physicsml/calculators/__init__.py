"""Calculators that drive molecular dynamics with a trained potential."""

from physicsml.calculators.ase import PhysicsMLCalculator

__all__ = ["PhysicsMLCalculator"]
