"""Exponential moving average (EMA) of a module's weights (``module.ema_decay``).

After optimizer step ``n`` (counted from 0) every trainable parameter's average becomes
``d * average + (1 - d) * weight`` with ``d = min(decay, (1 + n) / (10 + n))``: the warm-up
keeps the first, random weights from dominating the average for ~1/(1 - decay) steps.

``PotentialModule`` validates with the average swapped in, saves it as a checkpoint's
``state_dict`` (what ``model.pt``, ``best.ckpt`` and ``last.ckpt`` serve as the model) with
the raw weights and the EMA state under the ``ema`` key (what a resume continues from), and
keeps the average as its weights when training ends.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

CHECKPOINT_KEY = "ema"


class WeightAverage:
    """The EMA of ``module``'s parameters, by parameter name (as in its ``state_dict``).

    Plain tensors, not buffers: they stay out of ``state_dict`` (and of DDP's buffer
    broadcasts); every rank updates its own copy from the same weights."""

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.num_updates = 0
        self.average: dict[str, Tensor] | None = None  # made by ``start`` or ``load``
        self._raw: dict[str, Tensor] | None = None  # the raw weights while the average is in

    def start(self, module: nn.Module) -> None:
        """At the start of fitting: begin at the current weights, unless a checkpoint's
        average was loaded, which moves to the weights' device and dtype."""
        params = dict(module.named_parameters())
        if self.average is None:
            self.average = {name: p.detach().clone() for name, p in params.items()}
        else:
            self.average = {
                name: value.to(params[name].device, params[name].dtype)
                for name, value in self.average.items()
            }

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Fold the weights after an optimizer step into the average."""
        assert self.average is not None, "start() first"
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for name, p in module.named_parameters():
            if p.requires_grad:
                self.average[name].mul_(decay).add_(p.detach(), alpha=1 - decay)
        self.num_updates += 1

    @torch.no_grad()
    def swap_in(self, module: nn.Module) -> None:
        """Give ``module`` the averaged weights, keeping the raw ones for ``swap_out``."""
        if self.average is None:  # not fitting (trainer.validate)
            return
        params = dict(module.named_parameters())
        self._raw = {name: params[name].detach().clone() for name in self.average}
        for name, value in self.average.items():
            params[name].copy_(value)

    @torch.no_grad()
    def swap_out(self, module: nn.Module) -> None:
        """Give ``module`` back its raw weights."""
        if self._raw is None:
            return
        params = dict(module.named_parameters())
        for name, value in self._raw.items():
            params[name].copy_(value)
        self._raw = None

    @torch.no_grad()
    def keep_average(self, module: nn.Module) -> None:
        """Make the average ``module``'s weights for good (at the end of training)."""
        assert self.average is not None
        self.swap_out(module)
        params = dict(module.named_parameters())
        for name, value in self.average.items():
            params[name].copy_(value)

    def save(self, checkpoint: dict[str, Any]) -> None:
        """Put the average into ``checkpoint["state_dict"]``, and the raw weights and the
        update count under ``checkpoint["ema"]`` (also when saved while swapped in)."""
        assert self.average is not None
        state = checkpoint["state_dict"]
        raw = self._raw if self._raw is not None else {name: state[name] for name in self.average}
        checkpoint["state_dict"] = {**state, **self.average}
        checkpoint[CHECKPOINT_KEY] = {"num_updates": self.num_updates, "raw_weights": dict(raw)}

    def load(self, checkpoint: dict[str, Any], module: nn.Module) -> None:
        """Continue from a checkpoint written by ``save`` (its ``state_dict`` is the average);
        one without an average starts it at its weights (``start``)."""
        saved = checkpoint.get(CHECKPOINT_KEY)
        if saved is None:
            return
        params = dict(module.named_parameters())
        state = checkpoint["state_dict"]
        self.num_updates = int(saved["num_updates"])
        self.average = {
            name: state[name].to(p.device, p.dtype, copy=True) for name, p in params.items()
        }


def resume_weights(checkpoint: dict[str, Any]) -> None:
    """Make a checkpoint written with an EMA hold the raw weights in its ``state_dict``, so
    that training resumes from them (with or without an EMA)."""
    saved = checkpoint.get(CHECKPOINT_KEY)
    if saved is not None:
        checkpoint["state_dict"] = {**checkpoint["state_dict"], **saved["raw_weights"]}
