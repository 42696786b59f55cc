"""Python API: compose a run from overrides, train, predict, save and load."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from physicsml.config.registry import config_dir, register_configs
from physicsml.config.resolvers import register_resolvers
from physicsml.data.files import remove
from physicsml.data.frames import atoms_to_frame
from physicsml.data.sources import default_cache_dir, open_source
from physicsml.data.store_writer import write_store
from physicsml.inference import load_module, predict_atoms
from physicsml.lightning.module import PotentialModule
from physicsml.train import save_model, train
from physicsml.transfer import source_overrides

Data = str | Path | Sequence[Any]
"""A store path, a file physicsml-ingest reads, or a list of ``ase.Atoms`` with labels."""


def compose_config(overrides: Sequence[str] = (), run_dir: str | Path | None = None) -> DictConfig:
    """The ``physicsml-train`` config for ``overrides``, with Hydra's run dir set to ``run_dir``."""
    register_configs()
    register_resolvers()
    run_dir = Path(
        run_dir or Path("outputs") / "api" / dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    )
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose(
            "train", overrides=[*overrides, f"hydra.run.dir={run_dir}"], return_hydra_config=True
        )
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir.resolve())
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


class Model:
    """A potential built from a composed config (``Model.from_overrides(["module=mace"])``)."""

    def __init__(self, cfg: DictConfig, module: PotentialModule | None = None) -> None:
        self.cfg = cfg
        self.module = module
        self.metrics: dict[str, Any] = {}

    @classmethod
    def from_overrides(
        cls, overrides: Sequence[str] = (), run_dir: str | Path | None = None
    ) -> Model:
        """Compose ``physicsml-train``'s config with command-line style ``overrides``."""
        return cls(compose_config(overrides, run_dir))

    @property
    def run_dir(self) -> Path:
        """Where training writes checkpoints, logs and metrics."""
        return Path(self.cfg.hydra.runtime.output_dir)

    def _as_source(self, data: Data, name: str) -> str:
        """A path as is; ``ase.Atoms`` written to a store in the cache named by its content
        (``<cache_dir>/atoms/<name>-<hash>.zarr``), so nothing in the run directory is
        written before ``train`` has checked that it may train there."""
        if isinstance(data, (str, Path)):
            return str(data)
        cache = Path(OmegaConf.select(self.cfg, "datamodule.cache_dir") or default_cache_dir())
        folder = cache.expanduser() / "atoms"
        folder.mkdir(parents=True, exist_ok=True)
        staging = folder / f".{name}.tmp-{os.getpid()}.zarr"
        store = write_store(
            staging,
            (atoms_to_frame(a) for a in data),
            source={"path": "<ase.Atoms list>", "reader": "physicsml.api"},
            units={"energy": "eV", "forces": "eV/Å", "positions": "Å"},
            overwrite=True,
        )
        target = folder / f"{name}-{store.content_hash()[:16]}.zarr"
        try:
            staging.rename(target)
        except OSError:  # the same data are there already
            remove(staging)
        return str(target)

    def train(
        self,
        train_data: Data | None = None,
        validation_data: Data | None = None,
        ckpt_path: str | Path | None = None,
    ) -> dict[str, Any]:
        """Fit (or resume from ``ckpt_path``); data given here replace the config's data."""
        HydraConfig.instance().set_config(self.cfg)
        with open_dict(self.cfg):
            if train_data is not None:
                self.cfg.datamodule.dataset = None
                self.cfg.datamodule.train_data = self._as_source(train_data, "train")
            if validation_data is not None:
                self.cfg.datamodule.validation_data = self._as_source(validation_data, "validation")
            if ckpt_path is not None:
                self.cfg.ckpt_path = str(ckpt_path)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = train(self.cfg, self.run_dir)
        self.module = load_module(self.run_dir / "model.pt")
        return self.metrics

    def _trained(self) -> PotentialModule:
        if self.module is None:
            raise RuntimeError("the model is not trained: call train() or Model.load(path) first")
        return self.module

    def predict(
        self, data: Data, batch_size: int = 64, stress: bool | None = None
    ) -> dict[str, list[np.ndarray]]:
        """Predictions per structure (``{"energy": [...], "forces": [...]}``, eV and eV/Å, and
        ``"stress"`` (3x3, eV/Å³) when ``stress``; default: the model's ``compute_stress``)."""
        module = self._trained()
        if isinstance(data, (str, Path)):
            cache = OmegaConf.select(self.cfg, "datamodule.cache_dir") or default_cache_dir()
            data = store_atoms(open_source(data, cache))
        return predict_atoms(module, data, batch_size=batch_size, stress=stress)

    def save(self, directory: str | Path) -> Path:
        """Write ``model.pt`` (hyperparameters + weights) and ``config.yaml`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_model(self._trained(), directory / "model.pt")
        (directory / "config.yaml").write_text(OmegaConf.to_yaml(self.cfg.get("module", {})))
        return directory

    @classmethod
    def load(
        cls, path: str | Path, overrides: Sequence[str] = (), run_dir: str | Path | None = None
    ) -> Model:
        """A model from a saved directory, a run directory or a checkpoint. Its ``train``
        fine-tunes it: the config is the default one with the model's architecture,
        hyperparameters and cut-off, ``module.init_from`` the model, and ``overrides``."""
        module = load_module(path)
        source = [*source_overrides(module.spec), f"module.init_from='{Path(path).resolve()}'"]
        return cls(compose_config([*source, *overrides], run_dir), module)


def store_atoms(store: Any) -> list[Any]:
    """All structures of a store as ``ase.Atoms`` (positions, numbers, cell, pbc)."""
    from ase import Atoms

    data = store.load()
    return [
        Atoms(
            numbers=data.numbers[data.offsets[k] : data.offsets[k + 1]],
            positions=data.positions[data.offsets[k] : data.offsets[k + 1]],
            cell=data.cell[k],
            pbc=data.pbc[k],
        )
        for k in range(len(data.offsets) - 1)
    ]


__all__ = ["Model", "compose_config"]
