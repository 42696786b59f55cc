#!/usr/bin/env python
"""Equilibrium properties of fcc Cu from any ASE calculator: one JSON line.

    python experiments/materials/elastic.py emt
    python experiments/materials/elastic.py physicsml RUN_DIR [--npt-steps 500]
    .peer-mace/bin/python experiments/materials/elastic.py mace MODEL_FILE

* lattice constant: a cubic cell of ``--repeat``³ conventional cells, strained by
  ``--start-strain`` (isotropic), relaxed with ``FrechetCellFilter`` + BFGS to ``--fmax``;
* bulk modulus: Birch–Murnaghan fit (``ase.eos.EquationOfState``) of E(V) at 9 volumes,
  lattice constants within ±``--eos-range`` of the relaxed one;
* C11, C12, C44: central differences of the stress under ±``--strain`` of the relaxed cell
  (uniaxial xx for C11 and C12, shear yz for C44). Every atom of fcc is an inversion centre,
  so there is no internal relaxation. Stresses use ASE's sign (positive = tensile);
* optionally (``--val FILE``) the validation errors on labelled frames: energy per atom,
  force component and stress component MAEs (meV/atom, meV/Å, meV/Å³);
* optionally (``--npt-steps``) an NPT Berendsen MD at ``--temperature`` K and zero pressure
  in a 3x3x3 cell, reporting the mean lattice constant over the second half.

Moduli are in GPa, lengths in Å. The calculator runs in float64 where it can.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator
from ase.eos import EquationOfState
from ase.filters import FrechetCellFilter
from ase.md.nptberendsen import NPTBerendsen
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.optimize import BFGS

EMT_CU_A0 = 3.59  # a start close to EMT's minimum (the data README fits 3.5899 Å)


def make_calculator(kind: str, path: str | None) -> Calculator:
    """``emt``, ``physicsml`` (a run directory / model) or ``mace`` (a mace-torch model file)."""
    if kind == "emt":
        from ase.calculators.emt import EMT

        return EMT()
    if path is None:
        raise ValueError(f"the {kind} calculator needs a model path")
    if kind == "physicsml":
        from physicsml.calculators import PhysicsMLCalculator

        return PhysicsMLCalculator(path, double=True)
    if kind == "mace":
        from mace.calculators import MACECalculator

        return MACECalculator(model_paths=path, device="cpu", default_dtype="float64")
    raise ValueError(f"unknown calculator {kind!r}")


def cubic_cu(a: float, repeat: int) -> Atoms:
    """``repeat``³ conventional fcc Cu cells with lattice constant ``a``."""
    return bulk("Cu", "fcc", a=a, cubic=True).repeat(repeat)


def lattice_constant(atoms: Atoms) -> float:
    """Cubic lattice constant of an fcc cell from its volume per atom (4 atoms per cell)."""
    return float((4.0 * atoms.get_volume() / len(atoms)) ** (1.0 / 3.0))


def relaxed_lattice_constant(
    calc: Calculator, repeat: int, start_strain: float, fmax: float
) -> tuple[float, int]:
    """Lattice constant after relaxing cell and positions from a strained start; BFGS steps."""
    atoms = cubic_cu(EMT_CU_A0 * (1.0 + start_strain), repeat)
    atoms.calc = calc
    optimizer = BFGS(FrechetCellFilter(atoms), logfile=None)  # type: ignore[arg-type]
    optimizer.run(fmax=fmax, steps=200)
    return lattice_constant(atoms), int(optimizer.get_number_of_steps())


def bulk_modulus(calc: Calculator, a0: float, repeat: int, eos_range: float) -> dict[str, float]:
    """Birch–Murnaghan fit of E(V) at 9 volumes around ``a0``: B (GPa), V0 and a0 of the fit."""
    volumes, energies = [], []
    for a in np.linspace(a0 * (1 - eos_range), a0 * (1 + eos_range), 9):
        atoms = cubic_cu(float(a), repeat)
        atoms.calc = calc
        volumes.append(atoms.get_volume())
        energies.append(atoms.get_potential_energy())
    eos = EquationOfState(volumes, energies, eos="birchmurnaghan")
    v0, _, b = eos.fit()
    n_atoms = 4 * repeat**3
    return {"B_GPa": float(b / units.GPa), "a0_eos": float((4.0 * v0 / n_atoms) ** (1 / 3))}


def stress_under_strain(calc: Calculator, a0: float, repeat: int, strain: np.ndarray) -> np.ndarray:
    """Voigt stress (eV/Å³) of the relaxed cell deformed by ``(I + strain)``."""
    atoms = cubic_cu(a0, repeat)
    atoms.set_cell(atoms.cell[:] @ (np.eye(3) + strain), scale_atoms=True)
    atoms.calc = calc
    return np.array(atoms.get_stress(voigt=True))


def elastic_constants(calc: Calculator, a0: float, repeat: int, delta: float) -> dict[str, float]:
    """C11, C12, C44 (GPa) by central differences of the stress at strains ±``delta``."""
    uniaxial = np.zeros((3, 3))
    uniaxial[0, 0] = delta
    shear = np.zeros((3, 3))
    shear[1, 2] = shear[2, 1] = delta  # engineering shear strain 2 * delta
    d_uni = stress_under_strain(calc, a0, repeat, uniaxial) - stress_under_strain(
        calc, a0, repeat, -uniaxial
    )
    d_shear = stress_under_strain(calc, a0, repeat, shear) - stress_under_strain(
        calc, a0, repeat, -shear
    )
    c11 = d_uni[0] / (2 * delta)
    c12 = 0.5 * (d_uni[1] + d_uni[2]) / (2 * delta)
    c44 = d_shear[3] / (2 * 2 * delta)
    return {k: float(v / units.GPa) for k, v in (("C11", c11), ("C12", c12), ("C44", c44))}


def validation_errors(calc: Calculator, path: str) -> dict[str, float]:
    """MAEs of energy per atom (meV), force components (meV/Å) and the 9 stress components
    (meV/Å³) of ``calc`` against the labels of the frames in ``path``."""
    import ase.io

    de, df, ds = [], [], []
    for atoms in ase.io.read(path, ":"):
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        stress = atoms.get_stress(voigt=False)
        atoms.calc = calc
        de.append((atoms.get_potential_energy() - energy) / len(atoms))
        df.append((atoms.get_forces() - forces).ravel())
        ds.append((atoms.get_stress(voigt=False) - stress).ravel())
    return {
        "val_structures": len(de),
        "val_energy_mae_meV_per_atom": 1e3 * float(np.mean(np.abs(de))),
        "val_forces_mae_meV_per_A": 1e3 * float(np.mean(np.abs(np.concatenate(df)))),
        "val_stress_mae_meV_per_A3": 1e3 * float(np.mean(np.abs(np.concatenate(ds)))),
    }


def npt_lattice_constant(
    calc: Calculator, a0: float, temperature: float, steps: int, seed: int
) -> dict[str, Any]:
    """Mean and spread of the lattice constant over the second half of an NPT Berendsen run
    (3x3x3 cell, zero pressure, 2 fs steps)."""
    atoms = cubic_cu(a0, 3)
    atoms.calc = calc
    thermalize_momenta(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
    Stationary(atoms)
    dyn = NPTBerendsen(
        atoms,
        timestep=2.0 * units.fs,
        temperature_K=temperature,
        pressure_au=0.0,
        taut=100.0 * units.fs,
        taup=500.0 * units.fs,
        compressibility_au=1.0 / (140.0 * units.GPa),
    )
    samples: list[float] = []
    temperatures: list[float] = []

    def record() -> None:
        if dyn.nsteps > steps // 2:
            samples.append(lattice_constant(atoms))
            temperatures.append(float(atoms.get_temperature()))

    dyn.attach(record, interval=1)
    dyn.run(steps)
    return {
        "npt_steps": steps,
        "npt_T_K": temperature,
        "npt_a_mean": float(np.mean(samples)),
        "npt_a_std": float(np.std(samples)),
        "npt_T_mean": float(np.mean(temperatures)),
    }


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, compute the properties and print one JSON line."""
    parser = argparse.ArgumentParser(prog="elastic.py", description=__doc__.splitlines()[0])
    parser.add_argument("calculator", choices=["emt", "physicsml", "mace"])
    parser.add_argument("path", nargs="?", default=None, help="run directory or model file")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--start-strain", type=float, default=0.02)
    parser.add_argument("--fmax", type=float, default=1e-4)
    parser.add_argument("--eos-range", type=float, default=0.02)
    parser.add_argument("--strain", type=float, default=0.005)
    parser.add_argument("--val", default=None, help="labelled extxyz: validation MAEs")
    parser.add_argument("--npt-steps", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="append the JSON line to this file")
    args = parser.parse_args(argv)
    if args.calculator != "emt" and args.path is None:
        parser.error(f"{args.calculator} needs PATH (a run directory or model file)")
    import torch

    torch.set_num_threads(args.threads)

    calc = make_calculator(args.calculator, args.path)
    start = time.perf_counter()
    a0, relax_steps = relaxed_lattice_constant(calc, args.repeat, args.start_strain, args.fmax)
    result: dict[str, Any] = {
        "calculator": args.calculator,
        "path": args.path,
        "a0": a0,
        "relax_steps": relax_steps,
    }
    result.update(bulk_modulus(calc, a0, args.repeat, args.eos_range))
    result.update(elastic_constants(calc, a0, args.repeat, args.strain))
    result["B_from_C"] = (result["C11"] + 2 * result["C12"]) / 3
    if args.val:
        result.update(validation_errors(calc, args.val))
    if args.npt_steps:
        result.update(npt_lattice_constant(calc, a0, args.temperature, args.npt_steps, args.seed))
    result["seconds"] = time.perf_counter() - start
    line = json.dumps(result)
    print(line)
    if args.out:
        with open(args.out, "a") as handle:
            handle.write(line + "\n")


if __name__ == "__main__":
    main()
