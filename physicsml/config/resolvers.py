"""OmegaConf resolvers used by the shipped configs."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

DATA_FILES = Path(__file__).resolve().parents[1] / "data_files"


def shipped_data(name: str) -> str:
    """Path of a data file shipped with physicsml (``${physicsml_data:ethanol.extxyz}``)."""
    path = DATA_FILES / name
    if not path.exists():
        raise FileNotFoundError(f"physicsml ships no data file {name!r} (looked in {DATA_FILES})")
    return str(path)


def register_resolvers() -> None:
    """Register the resolvers (idempotent)."""
    if not OmegaConf.has_resolver("physicsml_data"):
        OmegaConf.register_new_resolver("physicsml_data", shipped_data)
