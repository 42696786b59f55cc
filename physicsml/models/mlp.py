"""The multilayer perceptron builder shared by the architectures."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from physicsml.config.errors import ConfigError


def activation(name: str) -> type[nn.Module]:
    """The ``torch.nn`` activation class called ``name`` (e.g. ``"SiLU"``)."""
    act = getattr(nn, name, None)
    if not (isinstance(act, type) and issubclass(act, nn.Module)):
        raise ConfigError(f"unknown activation {name!r}: expected a torch.nn class name")
    return act


def mlp(
    c_in: int,
    hidden: Sequence[int],
    c_out: int,
    act: Callable[[], nn.Module] = nn.SiLU,
    dropout: float | None = None,
) -> nn.Sequential:
    """Linear layers ``c_in -> *hidden -> c_out``, each but the last followed by ``act()``
    (and by dropout when ``dropout``)."""
    layers: list[nn.Module] = []
    width = c_in
    for size in hidden:
        layers += [nn.Linear(width, size), act()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, c_out))
    return nn.Sequential(*layers)
