"""Fine-tuning: ``module.init_from`` (weights only, kept normalisation, new elements),
``module.freeze``, ``ckpt_path`` on other data and ``Model.load(...).train(...)``."""

from __future__ import annotations

import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

import physicsml
from physicsml.api import compose_config
from physicsml.config.errors import ConfigError
from physicsml.data.ingest import ingest
from physicsml.inference import load_module, predict_atoms
from physicsml.train import train
from tests.structures import ETHANOL
from tests.test_configs import run_train_cli
from tests.test_sweeps import TINY


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 2-epoch EGNN trained on the first 400 ethanol frames: (its run dir, the store)."""
    tmp = tmp_path_factory.mktemp("transfer")
    store = tmp / "ethanol.zarr"
    ingest(ETHANOL, store, index=":400")
    cfg = compose_config(
        [f"datamodule.dataset={store}", f"datamodule.cache_dir={tmp / 'cache'}", *TINY]
        + ["trainer.max_epochs=2"],
        run_dir=tmp / "source",
    )
    train(cfg, tmp / "source")
    yield tmp / "source", store
    GlobalHydra.instance().clear()


def fine_tune(source_dir: Path, run_dir: Path, *overrides: str, data: Path | None = None) -> dict:
    """Train in ``run_dir`` from ``source_dir``'s model (on the source's store by default)."""
    cfg = config(source_dir, run_dir, f"module.init_from={source_dir}", *overrides, data=data)
    return train(cfg, run_dir)


def config(
    source_dir: Path, run_dir: Path, *overrides: str, data: Path | None = None
) -> DictConfig:
    store = data or source_dir.parent / "ethanol.zarr"
    cache = source_dir.parent / "cache"
    base = [f"datamodule.dataset={store}", f"datamodule.cache_dir={cache}", *TINY]
    return compose_config([*base, *overrides], run_dir=run_dir)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]


def test_init_from_predicts_as_the_source_then_trains_afresh(source, tmp_path: Path) -> None:
    source_dir, _ = source
    fine_tune(
        source_dir, tmp_path / "zero", "trainer.max_epochs=0", "module.init_reference_energies=keep"
    )
    frames = read(ETHANOL, "400:410")
    before = predict_atoms(load_module(source_dir), frames)
    after = predict_atoms(load_module(tmp_path / "zero"), frames)
    for key in ("energy", "forces"):
        np.testing.assert_allclose(
            np.concatenate([np.ravel(x) for x in after[key]]),
            np.concatenate([np.ravel(x) for x in before[key]]),
            rtol=0,
            atol=1e-6,
        )
    stats = json.loads((tmp_path / "zero" / "statistics.json").read_text())
    assert stats == json.loads((source_dir / "statistics.json").read_text())  # same split

    metrics = fine_tune(source_dir, tmp_path / "one", "trainer.max_epochs=1")
    assert json.loads((tmp_path / "one" / "metrics.json").read_text())["epoch"] == 1
    ckpt = torch.load(tmp_path / "one" / "checkpoints" / "last.ckpt", weights_only=True)
    steps = {float(s["step"]) for s in ckpt["optimizer_states"][0]["state"].values()}
    assert steps == {float(metrics["global_step"])} and ckpt["epoch"] == 0  # a new optimizer


def test_refit_changes_only_reference_energies(source, tmp_path: Path) -> None:
    source_dir, _ = source
    fine_tune(source_dir, tmp_path / "refit", "trainer.max_epochs=0", "datamodule.split.seed=1")
    old, new = weights(source_dir), weights(tmp_path / "refit")
    assert not torch.equal(old["reference_energies"], new["reference_energies"])
    for name in old.keys() - {"reference_energies"}:
        assert torch.equal(old[name], new[name]), name
    stats = json.loads((tmp_path / "refit" / "statistics.json").read_text())
    source_stats = json.loads((source_dir / "statistics.json").read_text())
    assert stats["avg_num_neighbours"] == source_stats["avg_num_neighbours"]
    assert stats["reference_energies"] != source_stats["reference_energies"]


def test_new_element_gets_fresh_rows(source, tmp_path: Path) -> None:
    source_dir, _ = source
    rng = np.random.default_rng(0)
    frames = []
    for atoms in [*read(ETHANOL, ":40"), *(molecule("CH3CN") for _ in range(40))]:
        plain = Atoms(atoms.numbers, atoms.positions + rng.normal(0, 0.05, atoms.positions.shape))
        plain.calc = EMT()
        energy, forces = plain.get_potential_energy(), plain.get_forces()
        plain.calc = SinglePointCalculator(plain, energy=energy, forces=forces)
        frames.append(plain)
    ase.io.write(tmp_path / "with_n.extxyz", frames)
    data = tmp_path / "with_n.extxyz"
    fine_tune(source_dir, tmp_path / "zero", "trainer.max_epochs=0", data=data)
    old, new = weights(source_dir)["model.embed.0.weight"], weights(tmp_path / "zero")
    embed = new["model.embed.0.weight"]
    assert embed.shape == (8, 4)  # H C N O
    for old_col, new_col in ((0, 0), (1, 1), (2, 3)):
        assert torch.equal(embed[:, new_col], old[:, old_col])
    assert not torch.equal(embed[:, 2], torch.zeros(8))
    metrics = fine_tune(source_dir, tmp_path / "one", "trainer.max_epochs=1", data=data)
    assert np.isfinite(metrics["val_forces_mae"])


def test_frozen_parameters_stay(source, tmp_path: Path) -> None:
    source_dir, _ = source
    fine_tune(source_dir, tmp_path / "run", "trainer.max_epochs=1", "module.freeze=[model.embed.*]")
    old, new = weights(source_dir), weights(tmp_path / "run")
    for name in old.keys() - {"reference_energies", "energy_scale"}:
        changed = not torch.equal(old[name], new[name])
        assert changed != name.startswith("model.embed."), name


def test_freeze_pattern_matching_nothing_is_one_line(source, tmp_path: Path) -> None:
    _, store = source
    result = run_train_cli(
        f"datamodule.dataset={store}", *TINY, "module.freeze=[model.nothing*]", run_dir=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr  # only Lightning's warnings before the error line
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("physicsml-train: error: module.freeze: 'model.nothing*' matches no parameter")
    )


def test_init_from_other_hyperparameters_names_them(source, tmp_path: Path) -> None:
    source_dir, _ = source
    cfg = config(source_dir, tmp_path, f"module.init_from={source_dir}", "module.model.c_hidden=16")
    with pytest.raises(ConfigError, match=r"module.model.c_hidden: 16 -> 8.*c_hidden=8"):
        train(cfg, tmp_path)


def test_ckpt_path_on_other_data_points_at_init_from(source, tmp_path: Path) -> None:
    source_dir, _ = source
    other = tmp_path / "other.zarr"
    ingest(ETHANOL, other, index="400:600")
    ckpt = source_dir / "checkpoints" / "last.ckpt"
    cfg = config(source_dir, tmp_path / "run", f"ckpt_path={ckpt}", data=other)
    with pytest.raises(ConfigError, match=f"other data.*module.init_from={ckpt}"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "run.json").exists()


def test_loaded_model_fine_tunes(source, tmp_path: Path) -> None:
    source_dir, _ = source
    cache = source_dir.parent / "cache"
    overrides = ["trainer.max_epochs=1", f"datamodule.cache_dir={cache}", *TINY[-2:]]
    model = physicsml.Model.load(source_dir, overrides, run_dir=tmp_path / "run")
    frames = read(ETHANOL, "400:460")
    metrics = model.train(train_data=frames[:40], validation_data=frames[40:])
    assert metrics["epoch"] == 1 and np.isfinite(metrics["val_forces_mae"])
    assert len(model.predict(frames[:2])["energy"]) == 2


def test_init_from_a_mace_file_saved_before_the_contraction_weight_scale(
    source, tmp_path: Path
) -> None:
    """A MACE model.pt without ``weight_scale`` buffers (saved before they existed) loads with
    unit scales, as it computed, also as the source of ``init_from``."""
    _, store = source

    def run(run_dir: Path, *overrides: str) -> None:
        base = [f"datamodule.dataset={store}", f"datamodule.cache_dir={tmp_path / 'cache'}"]
        mace = ["module=mace", "module.model.hidden_irreps=8x0e+8x1o", "module.model.max_ell=2"]
        cfg = compose_config([*base, *TINY[2:], *mace, *overrides], run_dir=run_dir)
        train(cfg, run_dir)

    run(tmp_path / "mace", "trainer.max_epochs=1")
    blob = torch.load(tmp_path / "mace" / "model.pt", weights_only=True)
    scales = [k for k in blob["state_dict"] if k.endswith("weight_scale")]
    assert scales
    for key in scales:
        del blob["state_dict"][key]
    old = tmp_path / "old.pt"
    torch.save(blob, old)
    run(tmp_path / "zero", f"module.init_from={old}", "trainer.max_epochs=0")
    frames = read(ETHANOL, "400:405")
    before = predict_atoms(load_module(old), frames)
    after = predict_atoms(load_module(tmp_path / "zero"), frames)
    np.testing.assert_allclose(np.stack(after["forces"]), np.stack(before["forces"]), atol=1e-6)
