"""physicsml: Hydra-composed training of 3D atomistic machine-learning potentials."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from physicsml.api import Model


def __getattr__(name: str) -> Any:
    # Lazy, so that `import physicsml` stays cheap for the CLI and data tools.
    if name == "Model":
        from physicsml.api import Model

        return Model
    raise AttributeError(f"module 'physicsml' has no attribute {name!r}")


__all__ = ["Model"]
