"""NVE molecular dynamics from validation frames with a trained potential: energy drift and
whether the molecule stays physical.

Each trajectory starts from a validation frame of the run (its ``split.json``), with
Maxwell-Boltzmann velocities at ``--temperature`` (seeded, no net momentum), and runs
velocity Verlet (``--dt`` fs) for ``--ps`` picoseconds with ``PhysicsMLCalculator``. Every
``--every`` steps it records the total energy and checks the structure; it stops at the first
unphysical one: a bond of the starting frame (ASE's natural cut-offs) longer than 2 Å, an atom
more than 2 Å from every other atom (left the molecule), or two atoms closer than 0.5 Å.
One JSON line per trajectory goes to ``--out`` (drift: slope of a straight-line fit of the
total energy, meV/atom/ps, over the part that stayed physical). Summarise with ``summarise.py``.

    python experiments/md_stability/run.py --model RUN_DIR --trajectories 4 --ps 2 --out FILE
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.io import read
from ase.md.verlet import VelocityVerlet
from ase.neighborlist import natural_cutoffs, neighbor_list

if TYPE_CHECKING:
    from physicsml.calculators import PhysicsMLCalculator

BOND_LIMIT = 2.0
"""Å: a starting bond longer than this is broken; an atom this far from all others has left."""
CLASH_LIMIT = 0.5
"""Å: two atoms closer than this have collapsed onto each other."""


def validation_frames(run_dir: Path) -> list[Atoms]:
    """The run's validation structures, from the source file named in its ``split.json``."""
    split = json.loads((run_dir / "split.json").read_text())["validation"]
    frames = read(split["source"], index=":")
    return [frames[k] for k in split["indices"]]


def starting_bonds(atoms: Atoms) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``i < j`` bonded in ``atoms`` by ASE's natural (covalent-radius) cut-offs."""
    i, j = neighbor_list("ij", atoms, natural_cutoffs(atoms))
    keep = i < j
    return i[keep], j[keep]


def problem(positions: np.ndarray, bonds: tuple[np.ndarray, np.ndarray]) -> str | None:
    """Why ``positions`` are unphysical, or None."""
    bond_lengths = np.linalg.norm(positions[bonds[1]] - positions[bonds[0]], axis=1)
    if bond_lengths.size and bond_lengths.max() > BOND_LIMIT:
        return f"bond stretched to {bond_lengths.max():.2f} Å"
    distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    nearest = distances.min(axis=1)
    if nearest.max() > BOND_LIMIT:
        return f"atom {int(nearest.argmax())} left ({nearest.max():.2f} Å from all others)"
    if nearest.min() < CLASH_LIMIT:
        return f"atoms {nearest.min():.2f} Å apart"
    return None


def our_calculator(run_dir: Path) -> PhysicsMLCalculator:
    """``PhysicsMLCalculator`` of a run directory (imported here: peers' venvs lack physicsml)."""
    from physicsml.calculators import PhysicsMLCalculator

    return PhysicsMLCalculator(run_dir)


def run_trajectory(
    calculator: Calculator,
    start: Atoms,
    seed: int,
    temperature: float,
    dt_fs: float,
    steps: int,
    every: int,
) -> dict:
    """One NVE trajectory from ``start``; its drift, length and the first problem."""
    atoms = start.copy()
    atoms.calc = calculator
    rng = np.random.default_rng(seed)
    masses = atoms.get_masses()[:, None]
    momenta = rng.normal(size=(len(atoms), 3)) * np.sqrt(masses * units.kB * temperature)
    atoms.set_momenta(momenta - momenta.sum(axis=0) * masses / masses.sum())
    bonds = starting_bonds(atoms)
    dynamics = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
    times, energies = [0.0], [atoms.get_total_energy()]
    failure = None
    begin = time.perf_counter()
    done = 0
    while done < steps:
        dynamics.run(every)
        done += every
        failure = problem(atoms.positions, bonds)
        if failure is not None or not np.isfinite(atoms.get_total_energy()):
            failure = failure or "non-finite energy"
            break
        times.append(done * dt_fs / 1000.0)
        energies.append(atoms.get_total_energy())
    seconds = time.perf_counter() - begin
    t, e = np.array(times), np.array(energies) / len(atoms)
    drift = float(np.polyfit(t, e, 1)[0] * 1000.0) if len(t) > 2 else float("nan")
    return {
        "steps": done,
        "ps": done * dt_fs / 1000.0,
        "physical": failure is None,
        "problem": failure,
        "drift_meV_per_atom_per_ps": drift,
        "max_energy_change_meV_per_atom": float(np.abs(e - e[0]).max() * 1000.0),
        "seconds_per_step": seconds / max(done, 1),
    }


def run_trajectories(
    calculator: Calculator,
    frames: list[Atoms],
    args: argparse.Namespace,
    labels: dict[str, str],
    list_builds: Callable[[], int] | None = None,
) -> None:
    """``args.trajectories`` trajectories from evenly spaced ``frames`` (seeds ``args.seed + k``),
    one JSON line each appended to ``args.out``: ``labels``, the settings and the result;
    ``list_builds`` (a running count of neighbour-list builds) adds the builds per trajectory."""
    steps = int(round(args.ps * 1000.0 / args.dt / args.every)) * args.every
    picks = np.linspace(0, len(frames) - 1, args.trajectories).round().astype(int)
    for k, frame in enumerate(picks):
        builds = list_builds() if list_builds else 0
        result = run_trajectory(
            calculator, frames[frame], args.seed + k, args.temperature, args.dt, steps, args.every
        )
        record = {
            **labels,
            "molecule": frames[frame].get_chemical_formula(),
            "validation_frame": int(frame),
            "temperature_K": args.temperature,
            "dt_fs": args.dt,
            "asked_ps": steps * args.dt / 1000.0,
            **({"list_builds": list_builds() - builds} if list_builds else {}),
            **result,
        }
        with args.out.open("a") as out:
            out.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="run.py", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a run directory")
    parser.add_argument("--trajectories", type=int, default=4)
    parser.add_argument("--ps", type=float, default=10.0, help="length of each trajectory")
    parser.add_argument("--dt", type=float, default=0.5, help="time step in fs")
    parser.add_argument("--temperature", type=float, default=500.0, help="K")
    parser.add_argument("--every", type=int, default=10, help="steps between checks")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="JSON lines are appended here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frames = validation_frames(args.model)
    calculator = our_calculator(args.model)
    spec = calculator.module.spec
    run_trajectories(
        calculator,
        frames,
        args,
        {"model": args.model.name, "architecture": spec.architecture},
        lambda: calculator.neighbours.builds,
    )


if __name__ == "__main__":
    main()
