"""Errors of a training run (no imports: the CLI names them before loading Lightning)."""

from __future__ import annotations


class TrainingDivergedError(RuntimeError):
    """The training loss or the weights became non-finite: training stopped, and no
    checkpoint, ``model.pt`` or ``metrics.json`` holding them was written."""
