"""What both sides of the initialisation comparison share: frames, data statistics, the loss,
the summaries and the per-group measurements. Needs numpy, ASE and torch only, so that it
runs in our venv and in mace-torch's (their e3nn versions differ)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase.io import read
from ase.neighborlist import neighbor_list

HERE = Path(__file__).resolve().parent
ASPIRIN = HERE.parents[1] / "physicsml" / "data_files" / "aspirin.extxyz"
ELEMENTS = [1, 6, 8]
CUT_OFF = 5.0
NUM_STATS_FRAMES = 200
BATCH_SIZE = 8
ENERGY_WEIGHT, FORCES_WEIGHT = 1.0, 10.0  # the peers' protocol: 1 MSE(E) + 10 MSE(F)
LR = 1e-3

Predict = Callable[[], tuple[torch.Tensor, torch.Tensor]]


def frames(path: str | Path = ASPIRIN) -> list[Any]:
    """The first ``NUM_STATS_FRAMES`` frames of ``path`` (default: the shipped aspirin)."""
    loaded = read(path, f":{NUM_STATS_FRAMES}")
    assert isinstance(loaded, list)
    return loaded


def references(atoms_list: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Reference energies ``[S]`` and forces ``[S, N, 3]`` (eV, eV/Å) of the frames."""
    energies = np.array([a.get_potential_energy() for a in atoms_list])
    forces = np.stack([a.get_forces() for a in atoms_list])
    return energies, forces


def statistics(atoms_list: list[Any]) -> dict[str, Any]:
    """E0 per element (minimum-norm least squares, as ours), RMS force component (the energy
    scale of both: mace-torch's ``rms_forces_scaling``), mean neighbours per atom."""
    energies, forces = references(atoms_list)
    counts = np.array([[np.sum(a.numbers == z) for z in ELEMENTS] for a in atoms_list], float)
    e0 = np.linalg.lstsq(counts, energies, rcond=None)[0]
    edges = sum(len(neighbor_list("i", a, CUT_OFF)) for a in atoms_list)
    atoms = sum(len(a) for a in atoms_list)
    return {
        "e0": {z: float(e) for z, e in zip(ELEMENTS, e0, strict=True)},
        "energy_scale": float(np.sqrt(np.mean(forces**2))),
        "avg_num_neighbours": edges / atoms,
    }


def loss(energy: torch.Tensor, forces: torch.Tensor, ref_e: torch.Tensor, ref_f: torch.Tensor):
    """``1 MSE(E) + 10 MSE(F)`` (equal to mace-torch's weighted loss with energy weight 441)."""
    return ENERGY_WEIGHT * torch.mean((energy - ref_e) ** 2) + FORCES_WEIGHT * torch.mean(
        (forces - ref_f) ** 2
    )


def summary(x: torch.Tensor) -> dict[str, float]:
    """Mean, standard deviation and RMS of every entry of ``x``."""
    x = x.detach().double()
    return {"mean": float(x.mean()), "std": float(x.std()), "rms": float(x.pow(2).mean().sqrt())}


def group_norms(
    named: Iterable[tuple[str, torch.nn.Parameter]], group_of: Callable[[str], str]
) -> dict[str, dict[str, float]]:
    """Per parameter group: gradient L2 norm, parameter RMS and count."""
    acc: dict[str, dict[str, float]] = {}
    for name, p in named:
        g = acc.setdefault(group_of(name), {"grad_sq": 0.0, "param_sq": 0.0, "count": 0})
        g["grad_sq"] += 0.0 if p.grad is None else float(p.grad.double().pow(2).sum())
        g["param_sq"] += float(p.detach().double().pow(2).sum())
        g["count"] += p.numel()
    return {
        k: {
            "grad_norm": math.sqrt(v["grad_sq"]),
            "param_rms": math.sqrt(v["param_sq"] / v["count"]),
            "count": int(v["count"]),
        }
        for k, v in sorted(acc.items())
    }


def first_adam_step_effect(
    named: list[tuple[str, torch.nn.Parameter]],
    group_of: Callable[[str], str],
    predict: Predict,
    ref_e: torch.Tensor,
    ref_f: torch.Tensor,
    num_atoms: int,
) -> dict[str, dict[str, float]]:
    """How much one first Adam step (``lr * sign(grad)``) of each group alone changes the
    predictions and the loss: the group's learning rate in function space, independent of how
    each implementation parametrises its weights. Needs the gradients in ``.grad``."""
    energy0, forces0 = predict()
    loss0 = float(loss(energy0, forces0, ref_e, ref_f))
    out: dict[str, dict[str, float]] = {}
    for group in sorted({group_of(n) for n, _ in named}):
        members = [p for n, p in named if group_of(n) == group and p.grad is not None]
        saved = [p.detach().clone() for p in members]
        with torch.no_grad():
            for p in members:
                p -= LR * torch.sign(p.grad)  # type: ignore[arg-type]
        energy, forces = predict()
        out[group] = {
            "d_energy_meV_per_atom": 1e3
            * float(((energy - energy0) / num_atoms).detach().pow(2).mean().sqrt()),
            "d_forces_meV_per_A": 1e3 * float((forces - forces0).detach().pow(2).mean().sqrt()),
            "d_loss_rel": (float(loss(energy, forces, ref_e, ref_f)) - loss0) / loss0,
        }
        with torch.no_grad():
            for p, s in zip(members, saved, strict=True):
                p.copy_(s)
    return out


def write(path: str | Path, result: dict[str, Any]) -> None:
    """Write ``result`` as indented JSON."""
    Path(path).write_text(json.dumps(result, indent=1) + "\n")


NUM_TRAIN = 160  # of the NUM_STATS_FRAMES frames; the rest validate

# (batch, reference energies [B], reference forces [N, 3]) of one batch
Batch = tuple[Any, torch.Tensor, torch.Tensor]


def split(seed: int, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation indices of the frames for ``seed``."""
    order = np.random.default_rng(seed).permutation(num_frames)
    return order[:NUM_TRAIN], order[NUM_TRAIN:]


def batches(
    atoms_list: list[Any], order: np.ndarray, make_batch: Callable[[list[Any]], Any]
) -> list[Batch]:
    """Batches of ``BATCH_SIZE`` frames in ``order`` with their reference energies and forces."""
    out = []
    for start in range(0, len(order) - BATCH_SIZE + 1, BATCH_SIZE):
        chunk = [atoms_list[i] for i in order[start : start + BATCH_SIZE]]
        energy, forces = references(chunk)
        out.append(
            (
                make_batch(chunk),
                torch.tensor(energy, dtype=torch.float32),
                torch.tensor(forces.reshape(-1, 3), dtype=torch.float32),
            )
        )
    return out


def train_epochs(
    optimizer: torch.optim.Optimizer,
    predict: Callable[[Any, bool], tuple[torch.Tensor, torch.Tensor]],
    make_batch: Callable[[list[Any]], Any],
    atoms_list: list[Any],
    seed: int,
    epochs: int,
    label: dict[str, Any],
) -> list[dict[str, Any]]:
    """Train for ``epochs`` (batches shuffled by ``seed``) with the peers' loss; per epoch the
    mean training loss and the validation energy and force MAEs. ``predict(batch, training)``
    returns energies and forces (with a graph for the backward when ``training``)."""
    rng = np.random.default_rng(seed)  # the split (as ``split``), then the shuffles
    order = rng.permutation(len(atoms_list))
    train_idx, val_idx = order[:NUM_TRAIN], order[NUM_TRAIN:]
    val_batches = batches(atoms_list, val_idx, make_batch)
    num_atoms = len(atoms_list[0])
    records = []
    for epoch in range(1, epochs + 1):
        start, losses = time.perf_counter(), []
        for batch, ref_e, ref_f in batches(atoms_list, rng.permutation(train_idx), make_batch):
            energy, forces = predict(batch, True)
            value = loss(energy, forces, ref_e, ref_f)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            losses.append(float(value.detach()))
        e_err, f_err = [], []
        for batch, ref_e, ref_f in val_batches:
            energy, forces = predict(batch, False)
            e_err.append(((energy.detach() - ref_e) / num_atoms).abs())
            f_err.append((forces.detach() - ref_f).abs().flatten())
        records.append(
            {
                **label,
                "seed": seed,
                "epoch": epoch,
                "train_loss": float(np.mean(losses)),
                "val_energy_mae_meV_per_atom": 1e3 * float(torch.cat(e_err).mean()),
                "val_forces_mae_meV_per_A": 1e3 * float(torch.cat(f_err).mean()),
                "seconds": time.perf_counter() - start,
            }
        )
        print(json.dumps(records[-1]), flush=True)
    return records
