"""Freezing parameters by name (``module.freeze``, ``module.stages``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from fnmatch import fnmatchcase

import torch

from physicsml.config.errors import ConfigError


def freeze(module: torch.nn.Module, patterns: Sequence[str]) -> list[str]:
    """Stop the gradients of the parameters whose names match a glob of ``patterns``
    (``fnmatch``); return their names. A pattern matching nothing is a ConfigError."""
    names = [name for name, _ in module.named_parameters()]
    for pattern in patterns:
        if not any(fnmatchcase(name, pattern) for name in names):
            raise ConfigError(
                f"module.freeze: {pattern!r} matches no parameter; the parameters are "
                f"{compact(names)}"
            )
    frozen = [name for name in names if any(fnmatchcase(name, p) for p in patterns)]
    for name, parameter in module.named_parameters():
        if name in frozen:
            parameter.requires_grad_(False)
    return frozen


def compact(names: Sequence[str]) -> str:
    """Parameter names grouped by their module: ``model.embed.{weight,bias}``."""
    groups: dict[str, list[str]] = defaultdict(list)
    for name in names:
        parent, _, leaf = name.rpartition(".")
        groups[parent].append(leaf)
    return ", ".join(
        prefix + (leaves[0] if len(leaves) == 1 else "{" + ",".join(leaves) + "}")
        for parent, leaves in groups.items()
        for prefix in [f"{parent}." if parent else ""]
    )
