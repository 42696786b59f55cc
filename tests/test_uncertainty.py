"""Mean-variance heads: a Gaussian NLL loss gives the energy (and forces) a predicted variance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ase.io import read

from physicsml.config.errors import ConfigError
from physicsml.data.graph import atoms_to_batch
from physicsml.inference import load_module
from physicsml.train import train
from tests.models.physics import random_rotation
from tests.structures import ETHANOL
from tests.test_module import TINY

NLL = [
    "module.y_graph_scalars_loss.name=GaussianNLLLoss",
    "module.y_graph_scalars_loss.weight=1.0",
    "module.y_node_vector_loss.name=GaussianNLLLoss",
    "trainer.max_epochs=2",
]


@pytest.mark.parametrize("architecture", ["egnn", "mace"])
def test_nll_heads_train_and_their_variances_are_invariant(cfg_factory, architecture: str) -> None:
    small = {"egnn": TINY[:2], "mace": ["module.model.hidden_irreps=8x0e+8x1o"]}[architecture]
    cfg = cfg_factory(f"module={architecture}", *small, *TINY[2:], *NLL)
    run_dir = Path(cfg.hydra.runtime.output_dir)
    metrics = train(cfg, run_dir)
    assert np.isfinite(metrics["val_loss"]) and np.isfinite(metrics["val_forces_mae"])
    module = load_module(run_dir).double()
    atoms = read(ETHANOL, "3")
    elements, cut_off = module.spec.elements, module.spec.graph.cut_off
    preds = module(atoms_to_batch([atoms], elements, cut_off))
    assert preds["energy_var"].shape == (1,) and preds["forces_var"].shape == (9,)
    assert (preds["energy_var"] > 0).all() and (preds["forces_var"] > 0).all()
    assert preds["forces_var"].std() > 0  # per atom, not one number
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ random_rotation(np.random.default_rng(7)).T + 3.0
    perm = np.random.default_rng(8).permutation(len(atoms))
    moved = module(atoms_to_batch([rotated[perm]], elements, cut_off))
    torch.testing.assert_close(moved["energy_var"], preds["energy_var"], rtol=1e-9, atol=0.0)
    torch.testing.assert_close(moved["forces_var"], preds["forces_var"][perm], rtol=1e-8, atol=0.0)


def test_nll_needs_what_it_is_the_variance_of(cfg_factory) -> None:
    cfg = cfg_factory(*TINY, NLL[2], "module.compute_forces=false")
    with pytest.raises(ConfigError, match="needs module.compute_forces=true"):
        train(cfg, Path(cfg.hydra.runtime.output_dir))
    cfg = cfg_factory(*TINY, NLL[0], "datamodule.y_graph_scalars=[energy,energy]")
    with pytest.raises(ConfigError, match="must be the energy alone"):
        train(cfg, Path(cfg.hydra.runtime.output_dir))
