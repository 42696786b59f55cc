"""OmegaConf resolvers used by the shipped configs."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

DATA_FILES = Path(__file__).resolve().parents[1] / "data_files"


def shipped_data(name: str) -> str:
    """Path of a data file shipped with physicsml (``${physicsml_data:ethanol.extxyz}``)."""
    path = DATA_FILES / name
    if not path.exists():
        raise FileNotFoundError(f"physicsml ships no data file {name!r} (looked in {DATA_FILES})")
    return str(path)


def stdout_is_terminal() -> bool:
    """True when a person watches the output (progress bars), False in logs and batch jobs."""
    return sys.stdout.isatty()


def register_resolvers() -> None:
    """Register the resolvers (idempotent)."""
    if not OmegaConf.has_resolver("physicsml_data"):
        OmegaConf.register_new_resolver("physicsml_data", shipped_data)
    if not OmegaConf.has_resolver("physicsml_isatty"):
        OmegaConf.register_new_resolver("physicsml_isatty", stdout_is_terminal)
