"""Targets beyond energy and forces, optimizer/scheduler/callback configuration, workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping
from omegaconf import OmegaConf

from physicsml.config.errors import ConfigError
from physicsml.data.datamodule import AtomsDataModule, resolve_num_workers
from physicsml.lightning.module import _optimizer
from physicsml.train import build_callbacks, train, trainer_kwargs

TINY = [
    "module.model.c_hidden=8",
    "module.model.num_layers=1",
    "datamodule.split.train=0.15",
    "datamodule.split.validation=0.05",
    "trainer.max_epochs=1",
]


def test_charges_as_node_scalars(cfg_factory) -> None:
    cfg = cfg_factory(*TINY, "datamodule.y_node_scalars=[charges]")
    metrics = train(cfg, Path(cfg.hydra.runtime.output_dir))
    for key in ("val_charges_mae", "val_charges_rmse", "val_forces_mae", "val_energy_mae"):
        assert np.isfinite(metrics[key]), key


def test_reduce_on_plateau_and_sgd(cfg_factory) -> None:
    cfg = cfg_factory(
        *TINY,
        "trainer.max_epochs=2",
        "module.optimizer.name=SGD",
        "module.optimizer.config.lr=0.001",
        "module.scheduler.name=ReduceLROnPlateau",
        "module.scheduler.monitor=val_forces_mae",
    )
    metrics = train(cfg, Path(cfg.hydra.runtime.output_dir))
    assert metrics["epoch"] == 2


def test_fused_optimizer_unless_the_config_chooses() -> None:
    torch.manual_seed(0)
    start = [torch.randn(5, 3), torch.randn(7)]
    fused_params = [torch.nn.Parameter(t.clone()) for t in start]
    plain_params = [torch.nn.Parameter(t.clone()) for t in start]
    fused = _optimizer(torch.optim.Adam, fused_params, {"lr": 0.1})
    plain = _optimizer(torch.optim.Adam, plain_params, {"lr": 0.1, "foreach": False})
    assert fused.defaults["fused"] and not plain.defaults["fused"]
    for _ in range(5):  # the same updates
        grads = [torch.randn_like(t) for t in start]
        for params in (fused_params, plain_params):
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
        fused.step()
        plain.step()
    for a, b in zip(fused_params, plain_params, strict=True):
        torch.testing.assert_close(a, b)
        assert not torch.equal(a.detach(), start[0] if a.dim() == 2 else start[1])
    # optimizers without a fused kernel are built as configured
    assert "fused" not in _optimizer(torch.optim.RMSprop, plain_params, {"lr": 0.1}).defaults


def test_unknown_optimizer_is_named(cfg_factory) -> None:
    cfg = cfg_factory(*TINY, "module.optimizer.name=Adamm")
    with pytest.raises(ConfigError, match="module.optimizer.name.*Adamm"):
        train(cfg, Path(cfg.hydra.runtime.output_dir))


def test_spec_callback_list(cfg_factory) -> None:
    cfg = cfg_factory(
        *TINY,
        "trainer.callbacks=[{name: EarlyStopping, config: {monitor: val_loss, patience: 3}}]",
    )
    callbacks = build_callbacks(cfg.callbacks, cfg.trainer.callbacks)
    early = [cb for cb in callbacks if isinstance(cb, EarlyStopping)]
    assert len(early) == 1 and early[0].patience == 3
    with pytest.raises(ConfigError, match="NoSuchCallback"):
        build_callbacks({}, OmegaConf.create([{"name": "NoSuchCallback"}]))


def test_inference_mode_must_stay_false(cfg_factory) -> None:
    cfg = cfg_factory("trainer.inference_mode=true")
    with pytest.raises(ConfigError, match="trainer.inference_mode"):
        trainer_kwargs(cfg.trainer)


def test_num_workers_all_and_bad_values() -> None:
    assert resolve_num_workers("all") >= 1
    assert resolve_num_workers(3) == 3
    with pytest.raises(ConfigError, match="datamodule.num_workers"):
        resolve_num_workers("some")


def test_elements_and_statistics_from_training_split(cfg_factory) -> None:
    cfg = cfg_factory(*TINY)
    dm = AtomsDataModule(OmegaConf.to_object(cfg.datamodule))
    dm.setup("fit")
    assert dm.elements == [1, 6, 8] and dm.num_elements == 3
    stats = dm.statistics
    assert stats is not None and stats.num_structures == len(dm.indices["train"])
    # Ethanol's composition never changes: E0 reproduces the mean energy per structure.
    data = dm.datasets["train"]
    energies = [data[k]["y_graph_scalars"][0] for k in range(len(data))]
    e0 = dict(zip(stats.elements, stats.reference_energies, strict=True))
    assert 6 * e0[1] + 2 * e0[6] + e0[8] == pytest.approx(np.mean(energies), abs=1e-6)
    assert 0.3 < stats.energy_scale < 3.0  # RMS force, eV/Å
    assert 6 < stats.avg_num_neighbours <= 8  # ethanol within 5 Å: nearly all 8 other atoms


def test_logger_none_drops_the_learning_rate_monitor(cfg_factory) -> None:
    cfg = cfg_factory(*TINY, "logger=none")  # the default callbacks include LearningRateMonitor
    metrics = train(cfg, Path(cfg.hydra.runtime.output_dir))
    assert np.isfinite(metrics["val_forces_mae"])


def test_forces_alone_train_a_potential(cfg_factory) -> None:
    cfg = cfg_factory(*TINY, "trainer.max_epochs=2", "datamodule.y_graph_scalars=null")
    run_dir = Path(cfg.hydra.runtime.output_dir)
    metrics = train(cfg, run_dir)
    assert np.isfinite(metrics["val_forces_mae"]) and "val_energy_mae" not in metrics
    from ase.io import read

    from physicsml.inference import load_module, predict_atoms
    from tests.structures import ETHANOL

    preds = predict_atoms(load_module(run_dir), read(ETHANOL, ":2"))
    assert preds["forces"][0].shape == (9, 3) and np.isfinite(preds["energy"]).all()


def test_reference_energies_from_the_config(cfg_factory) -> None:
    given = {1: -13.6, 6: -1029.0, 8: -2041.0}
    cfg = cfg_factory(*TINY, f"module.reference_energies={given}")
    run_dir = Path(cfg.hydra.runtime.output_dir)
    train(cfg, run_dir)
    from physicsml.inference import load_module

    module = load_module(run_dir)
    torch.testing.assert_close(module.reference_energies, torch.tensor(list(given.values())))
    with pytest.raises(ConfigError, match=r"module.reference_energies: elements \[29\]"):
        train(
            cfg_factory(*TINY, "module.reference_energies={29: 0.05}", run_dir=run_dir / "b"),
            run_dir / "b",
        )


def test_energy_loss_of_total_or_per_atom_energies(cfg_factory) -> None:
    from ase.io import read

    from physicsml.data.graph import atoms_to_batch
    from physicsml.inference import load_module
    from tests.structures import ETHANOL

    cfg = cfg_factory(*TINY, "module.energy_loss_per_atom=false")
    run_dir = Path(cfg.hydra.runtime.output_dir)
    train(cfg, run_dir)
    module = load_module(run_dir).double()
    assert not module.energy_loss_per_atom
    frames = read(ETHANOL, ":2")  # 9 atoms each
    batch = atoms_to_batch(frames, module.spec.elements, module.spec.graph.cut_off)
    energies = [[a.get_potential_energy()] for a in frames]
    batch["y_graph_scalars"] = torch.tensor(energies, dtype=torch.float64)
    module.losses = {"y_graph_scalars": module.losses["y_graph_scalars"]}
    total = module._step(dict(batch), "val")
    error = module(dict(batch))["energy"] - batch["y_graph_scalars"][:, 0]
    assert total.item() == pytest.approx(10.0 * (error**2).mean().item(), rel=1e-10)
    module.energy_loss_per_atom = True
    per_atom = module._step(dict(batch), "val")
    assert per_atom.item() == pytest.approx(10.0 * ((error / 9) ** 2).mean().item(), rel=1e-10)
