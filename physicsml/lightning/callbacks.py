"""Callbacks shipped with physicsml."""

from __future__ import annotations

import time

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

UNITS = {"energy": "eV", "forces": "eV/Å"}
GPA_PER_EV_PER_A3 = 160.21766208
"""1 eV/Å³ in GPa: stresses are stored and logged in eV/Å³ and printed in GPa."""


class EpochSummary(L.Callback):
    """Prints one line per epoch: losses, validation MAEs (with units) and the epoch time.

    An epoch's training metrics are logged by the module after the callbacks' epoch-end
    hooks, so each line is printed when the next epoch starts, and the last one at the end.
    """

    def __init__(self) -> None:
        self._start = 0.0
        self._pending = False
        self._stress = ""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stress = str(getattr(pl_module, "targets", {}).get("y_graph_tensor") or "")

    def _print(self, trainer: L.Trainer) -> None:
        if not self._pending:
            return
        self._pending = False
        metrics = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch}/{trainer.max_epochs}"]
        for key in ("train_loss", "val_loss"):
            if key in metrics:
                parts.append(f"{key} {float(metrics[key]):.4g}")
        for key, value in sorted(metrics.items()):
            if key.startswith("val_") and key.endswith("_mae"):
                name = key[len("val_") : -len("_mae")]
                if name == self._stress:
                    parts.append(f"{key} {float(value) * GPA_PER_EV_PER_A3:.4g} GPa")
                    continue
                unit = UNITS.get(name.removesuffix("_per_atom"), "")
                parts.append(f"{key} {float(value):.4g} {unit}".rstrip())
        parts.append(f"({time.perf_counter() - self._start:.1f} s)")
        rank_zero_info("  ".join(parts))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._print(trainer)
        self._start = time.perf_counter()
        self._pending = True

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._print(trainer)
