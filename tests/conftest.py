"""Shared fixtures: small real stores and composed configs (Hydra compose API)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from physicsml.api import compose_config
from physicsml.data.ingest import ingest
from tests.structures import ETHANOL

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def ethanol_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 400 frames of the GFN2-xTB ethanol trajectory as a store."""
    path = tmp_path_factory.mktemp("stores") / "ethanol.zarr"
    ingest(ETHANOL, path, index=":400")
    return path


@pytest.fixture
def cfg_factory(tmp_path: Path, ethanol_store: Path):
    """Compose ``physicsml-train``'s config with overrides, writing into ``tmp_path``."""

    def make(*overrides: str, run_dir: Path | None = None) -> DictConfig:
        base = [
            f"datamodule.dataset={ethanol_store}",
            f"datamodule.cache_dir={tmp_path / 'cache'}",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
        ]
        return compose_config([*base, *overrides], run_dir=run_dir or tmp_path / "run")

    yield make
    GlobalHydra.instance().clear()
