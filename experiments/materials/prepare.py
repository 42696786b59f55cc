#!/usr/bin/env python
"""Fixed, seeded train/validation split of the EMT fcc Cu data for both packages.

    python experiments/materials/prepare.py [--data ../shared/data/emt_bulk/cu_bulk.extxyz]
        [--train 60] [--val 40] [--seed 0] [--out experiments/materials/work]

Writes, for the same structures in the same order:

* ``cu_train.extxyz`` / ``cu_val.extxyz``: labels as ASE results (``energy``, ``forces``,
  ``stress``), which ``physicsml-ingest`` stores as the ``energy``, ``forces`` and ``stress``
  (3x3, eV/Å³) columns;
* ``cu_train_mace.xyz`` / ``cu_val_mace.xyz``: the same labels under mace-torch's
  ``REF_energy``, ``REF_forces`` and ``REF_stress`` keys;
* ``split.json``: the frame indices of each split and the source file.

The split is ``numpy.random.default_rng(seed).permutation(n)``: the first ``train`` indices
train, the next ``val`` validate.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator


def labelled_copy(atoms: Atoms) -> tuple[Atoms, Atoms]:
    """The frame with its EMT labels as ASE results (ours) and as ``REF_*`` keys (mace-torch)."""
    energy = float(atoms.get_potential_energy())
    forces = np.array(atoms.get_forces())
    stress = np.array(atoms.get_stress(voigt=True))
    ours = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    ours.calc = SinglePointCalculator(ours, energy=energy, forces=forces, stress=stress)
    mace = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    mace.info["REF_energy"] = energy
    mace.info["REF_stress"] = stress
    mace.arrays["REF_forces"] = forces
    return ours, mace


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and write the split files."""
    parser = argparse.ArgumentParser(prog="prepare.py", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/emt_bulk/cu_bulk.extxyz")
    parser.add_argument("--train", type=int, default=60)
    parser.add_argument("--val", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="experiments/materials/scratch")
    args = parser.parse_args(argv)

    frames: list[Atoms] = ase.io.read(args.data, ":")  # type: ignore[assignment]
    if args.train + args.val > len(frames):
        parser.error(f"--train + --val = {args.train + args.val} > {len(frames)} frames")
    order = np.random.default_rng(args.seed).permutation(len(frames))
    splits = {"train": order[: args.train], "val": order[args.train : args.train + args.val]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, indices in splits.items():
        pairs = [labelled_copy(frames[int(i)]) for i in indices]
        ase.io.write(out / f"cu_{name}.extxyz", [p[0] for p in pairs], format="extxyz")
        ase.io.write(out / f"cu_{name}_mace.xyz", [p[1] for p in pairs], format="extxyz")
    record = {"data": args.data, "seed": args.seed}
    record.update({name: [int(i) for i in idx] for name, idx in splits.items()})
    (out / "split.json").write_text(json.dumps(record) + "\n")
    print(json.dumps({k: len(v) for k, v in splits.items()}))


if __name__ == "__main__":
    main()
