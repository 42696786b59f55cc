"""OmegaConf resolvers used by the shipped configs."""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra
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


def user_options(group: str) -> list[str]:
    """The options of a config group in the initialized Hydra's search path, without the
    internal ``*_schema`` configs (the dataclasses that the YAML options extend)."""
    loader = GlobalHydra.instance().config_loader()
    return sorted(o for o in loader.get_group_options(group) if not o.endswith("_schema"))


def config_groups() -> str:
    """``group: option, ...`` for every config group but Hydra's, as ``--help`` lists them
    (``${physicsml_config_groups:}`` in ``conf/hydra/help/physicsml.yaml``): those of the
    initialized Hydra's search path, else of the packaged ``conf/``."""
    if not GlobalHydra.instance().is_initialized():  # e.g. a composed config saved resolved
        from hydra import initialize_config_dir

        from physicsml.config.registry import config_dir

        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            return config_groups()
    groups = sorted(GlobalHydra.instance().config_loader().list_groups(""))
    return "\n".join(f"{g}: {', '.join(user_options(g))}" for g in groups if g != "hydra")


def register_resolvers() -> None:
    """Register the resolvers (idempotent)."""
    if not OmegaConf.has_resolver("physicsml_data"):
        OmegaConf.register_new_resolver("physicsml_data", shipped_data)
    if not OmegaConf.has_resolver("physicsml_isatty"):
        OmegaConf.register_new_resolver("physicsml_isatty", stdout_is_terminal)
    if not OmegaConf.has_resolver("physicsml_config_groups"):
        OmegaConf.register_new_resolver("physicsml_config_groups", config_groups)
