"""Test data: the molecules shipped with the package and labelled structures made on the spot.

The periodic structures are small EMT metals (ASE's effective-medium calculator, exact for
itself), strained and rattled so that every frame has its own cell and non-zero forces. The
ANI-style HDF5 file holds EMT-labelled molecules in Hartree, laid out like ANI-1x.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path

import ase.io
import h5py
import numpy as np
from ase import Atoms, units
from ase.build import bulk, fcc111, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

DATA_FILES = Path(str(resources.files("physicsml") / "data_files"))
ETHANOL = DATA_FILES / "ethanol.extxyz"
ASPIRIN = DATA_FILES / "aspirin.extxyz"
"""GFN2-xTB MD frames (energy, forces, dipole, charges), shipped with the package."""


def labelled(atoms: Atoms, config_type: str, stress: bool = True) -> Atoms:
    """``atoms`` with EMT energy, forces (and stress) frozen on a single-point calculator."""
    atoms.calc = EMT()
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if stress:
        results["stress"] = atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, **results)
    atoms.info["config_type"] = config_type
    return atoms


def strained(atoms: Atoms, rng: np.random.Generator, shear: bool, in_plane: bool = False) -> Atoms:
    """Rattle ``atoms``, then strain its cell by up to 3 % (with shear: every component)."""
    atoms.rattle(0.08, rng=rng)
    if shear:
        eps = rng.uniform(-0.03, 0.03, size=(3, 3))
        eps = (eps + eps.T) / 2
    else:
        eps = np.eye(3) * rng.uniform(-0.03, 0.03)
    if in_plane:
        eps[2, :] = eps[:, 2] = 0.0
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    atoms.info["applied_strain"] = eps[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
    return atoms


def frames(
    make: Callable[[], Atoms],
    config_type: str,
    num_frames: int,
    seed: int,
    in_plane: bool = False,
    stress: bool = True,
) -> list[Atoms]:
    """``num_frames`` labelled copies of ``make()``: even frames isotropically strained, odd
    frames sheared (triclinic cells)."""
    rng = np.random.default_rng(seed)
    return [
        labelled(strained(make(), rng, k % 2 == 1, in_plane), config_type, stress)
        for k in range(num_frames)
    ]


def cu_bulk(num_frames: int = 6) -> list[Atoms]:
    """fcc Cu, 3x3x3 cubic cells (108 atoms)."""
    return frames(lambda: bulk("Cu", "fcc", a=3.59, cubic=True).repeat(3), "cu_bulk", num_frames, 0)


def cu_vacancy(num_frames: int = 4) -> list[Atoms]:
    """fcc Cu with one vacancy (107 atoms)."""

    def make() -> Atoms:
        atoms = bulk("Cu", "fcc", a=3.589, cubic=True).repeat(3)
        del atoms[13]
        return atoms

    return frames(make, "cu_vacancy", num_frames, 1)


def cupt_alloy(num_frames: int = 4) -> list[Atoms]:
    """A random fcc Cu54Pt54 alloy (108 atoms), the same ordering in every frame."""
    order = np.random.default_rng(11).permutation(108)

    def make() -> Atoms:
        atoms = bulk("Cu", "fcc", a=3.783, cubic=True).repeat(3)
        atoms.numbers[order[:54]] = 78
        return atoms

    return frames(make, "cupt_alloy", num_frames, 2)


def cu111_slab(num_frames: int = 4) -> list[Atoms]:
    """A Cu(111) 3x3x4 slab with 8 Å of vacuum per side: periodic in-plane only, layer tags,
    strained in-plane, no stress (its cell volume includes the vacuum)."""

    def make() -> Atoms:
        atoms = fcc111("Cu", size=(3, 3, 4), a=3.59, vacuum=8.0)
        del atoms.info["adsorbate_info"]  # a dict: not an extxyz value
        return atoms

    return frames(make, "cu111_slab", num_frames, 3, in_plane=True, stress=False)


def cu_triclinic(num_frames: int = 2) -> list[Atoms]:
    """fcc Cu, a 4x4x4 supercell of the primitive (rhombohedral, 60°) cell: 64 atoms."""
    return frames(lambda: bulk("Cu", "fcc", a=3.59).repeat(4), "cu_triclinic", num_frames, 4)


PERIODIC: dict[str, Callable[[], list[Atoms]]] = {
    "cu_bulk": cu_bulk,
    "cu_vacancy": cu_vacancy,
    "cupt_alloy": cupt_alloy,
    "cu111_slab": cu111_slab,
    "cu_triclinic": cu_triclinic,
}
"""The periodic structure sets by name."""


def write_extxyz(directory: Path, name: str) -> Path:
    """Write the structures ``PERIODIC[name]`` to ``directory / f"{name}.extxyz"``."""
    path = directory / f"{name}.extxyz"
    ase.io.write(path, PERIODIC[name](), format="extxyz")
    return path


ANI_MOLECULES = {"C2H5NO": "CH3CONH2", "C2H6O": "CH3CH2OH", "C6H6": "C6H6"}
"""ANI-style group name (the formula) -> ``ase.build.molecule`` name: H, C, N and O."""


def write_ani_h5(path: Path, conformers: int = 3, seed: int = 5) -> Path:
    """An ANI-1x-style HDF5 file: a group per formula with ``atomic_numbers`` (uint8),
    ``coordinates`` (float32, Å) and ``wb97x_dz``/``wb97x_tz`` energies (float64, Hartree) and
    forces (float32, Hartree/Å); the ``wb97x_tz`` energies are NaN for every other conformer."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as handle:
        for formula, name in ANI_MOLECULES.items():
            atoms = [molecule(name) for _ in range(conformers)]
            for a in atoms:
                a.rattle(0.05, rng=rng)
                a.calc = EMT()
            energy = np.array([a.get_potential_energy() for a in atoms]) / units.Hartree
            forces = np.array([a.get_forces() for a in atoms]) / units.Hartree
            group = handle.create_group(formula)
            group["atomic_numbers"] = atoms[0].numbers.astype(np.uint8)
            group["coordinates"] = np.array([a.positions for a in atoms], dtype=np.float32)
            group["wb97x_dz.energy"] = energy
            group["wb97x_dz.forces"] = forces.astype(np.float32)
            group["wb97x_tz.energy"] = np.where(
                np.arange(conformers) % 2 == 1, np.nan, energy * 1.001
            )
            group["wb97x_tz.forces"] = (forces * 1.001).astype(np.float32)
    return path
