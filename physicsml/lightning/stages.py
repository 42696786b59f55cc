"""Training stages (``module.stages``): from a given epoch on, another learning rate, other loss
weights and other frozen parameters, e.g. mace-torch's second (SWA) stage with a larger energy
weight, or staged transfer learning that first trains the readout and then everything."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import lightning as L

from physicsml.config.errors import ConfigError
from physicsml.lightning.freezing import compact, freeze

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """One stage: from ``epoch`` (0-based) on. ``lr`` null keeps the optimizer's learning rate,
    ``loss_weights`` ({target kind: weight}) changes the named weights only, ``freeze`` null
    keeps what is frozen, a list of globs freezes exactly the parameters it matches."""

    epoch: int
    lr: float | None = None
    loss_weights: dict[str, float] | None = None
    freeze: tuple[str, ...] | None = None


def parse_stages(
    configs: Sequence[dict[str, Any]], loss_kinds: Collection[str], parameters: Collection[str]
) -> list[Stage]:
    """Stages from ``module.stages`` (plain dicts), checked: epochs >= 1 and increasing, loss
    weights of the run's target kinds ``loss_kinds``, freeze globs that match some of the
    ``parameters`` names."""
    stages: list[Stage] = []
    for k, config in enumerate(configs):
        key = f"module.stages[{k}]"
        unknown = set(config) - {"epoch", "lr", "loss_weights", "freeze"}
        if unknown:
            raise ConfigError(f"{key}: unknown keys {sorted(unknown)} (epoch, lr, ...)")
        epoch = config.get("epoch")
        if not isinstance(epoch, int) or epoch < 1:
            raise ConfigError(f"{key}.epoch: expected the 0-based epoch >= 1, got {epoch!r}")
        if stages and epoch <= stages[-1].epoch:
            raise ConfigError(f"{key}.epoch: {epoch} must be later than {stages[-1].epoch}")
        lr = config.get("lr")
        if lr is not None and not lr > 0:
            raise ConfigError(f"{key}.lr: expected a positive learning rate, got {lr!r}")
        weights = dict(config.get("loss_weights") or {})
        strangers = sorted(set(weights) - set(loss_kinds))
        if strangers:
            raise ConfigError(
                f"{key}.loss_weights: {strangers[0]!r} is not a target kind of this run; they "
                f"are {sorted(loss_kinds)}"
            )
        patterns = config.get("freeze")
        for pattern in patterns or []:
            if not any(fnmatchcase(name, pattern) for name in parameters):
                raise ConfigError(
                    f"{key}.freeze: {pattern!r} matches no parameter; they are "
                    f"{compact(list(parameters))}"
                )
        stages.append(
            Stage(
                epoch=epoch,
                lr=None if lr is None else float(lr),
                loss_weights=weights or None,
                freeze=None if patterns is None else tuple(patterns),
            )
        )
    return stages


def active_stage(stages: Sequence[Stage], epoch: int) -> int:
    """Index of the stage in force at ``epoch``: -1 before the first one."""
    return max((k for k, stage in enumerate(stages) if stage.epoch <= epoch), default=-1)


def apply_stage(
    module: L.LightningModule,
    stages: Sequence[Stage],
    index: int,
    losses: dict[str, tuple[Any, float]],
    set_lr: bool,
) -> None:
    """Put stages ``0..index`` in force: their loss weights and freezing (each stage on top of
    the ones before), and, when ``set_lr``, the newest learning rate given (a resume keeps the
    optimizer's own, which a scheduler may have changed since)."""
    for stage in stages[: index + 1]:
        for kind, weight in (stage.loss_weights or {}).items():
            losses[kind] = (losses[kind][0], float(weight))
    patterns = next((s.freeze for s in reversed(stages[: index + 1]) if s.freeze is not None), None)
    if patterns is not None:
        for parameter in module.parameters():
            parameter.requires_grad_(True)
        frozen = freeze(module, list(patterns))
        log.info("stage %d: frozen %s", index + 1, compact(frozen) if frozen else "nothing")
    lr = next((s.lr for s in reversed(stages[: index + 1]) if s.lr is not None), None)
    if set_lr and lr is not None:
        for optimizer in module.trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
    log.info("stage %d from epoch %d: %s", index + 1, stages[index].epoch + 1, stages[index])
