"""OpenMM forces from a TorchScript-exported physicsml potential (``physicsml-export``).

The exported model works in Å and eV; OpenMM in nm and kJ/mol. ``physicsml_force`` wraps the
model in an ``openmm.PythonForce`` that converts both ways, for molecules (no box) and periodic
systems (OpenMM's box vectors are the cell). With openmm-ml installed, the ``physicsml``
potential (``PhysicsMLPotentialImplFactory``, the ``openmmml.potentials`` entry point) makes
``MLPotential("physicsml", model_file=...)`` build systems and mixed ML/MM systems.

openmm-torch's ``TorchForce`` is not used: its PyPI wheel links the CUDA build of libtorch
(``libtorch_cuda.so``, ``libnvrtc.so.12``) and does not import next to a CPU-only torch.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import ase
import numpy as np
import openmm
import torch
from openmm import app, unit
from openmmml.mlpotential import MLPotentialImpl, MLPotentialImplFactory

KJ_PER_MOL_PER_EV: float = (
    unit.elementary_charge * unit.volt * unit.AVOGADRO_CONSTANT_NA
).value_in_unit(unit.kilojoule_per_mole)
"""One eV per particle in kJ/mol."""

ANGSTROM_PER_NM = 10.0

METADATA_FILE = "metadata.json"
"""The export's description of itself (elements, cut-off, units), stored inside the file."""


def _load_exported(model_bytes: bytes, source: str) -> tuple[torch.jit.ScriptModule, list[int]]:
    """The exported module in ``model_bytes`` (read from ``source``) and its elements."""
    extra_files = {METADATA_FILE: ""}
    try:
        model = torch.jit.load(
            io.BytesIO(model_bytes), map_location="cpu", _extra_files=extra_files
        )
    except RuntimeError as exc:
        raise ValueError(f"model_file: {source} is not a TorchScript file: {exc}") from None
    if not extra_files[METADATA_FILE]:
        raise ValueError(f"model_file: {source} has no {METADATA_FILE}: not a physicsml export")
    elements = [int(z) for z in json.loads(extra_files[METADATA_FILE])["elements"]]
    return model.eval(), elements


class ExportedForceComputation:
    """The ``PythonForce`` computation: an exported model's energy and forces for an OpenMM
    ``State``, in OpenMM's units.

    It keeps the model's bytes, so a ``System`` holding it pickles (``XmlSerializer``) without
    the model file.
    """

    def __init__(
        self, model_bytes: bytes, source: str, atomic_numbers: Sequence[int], periodic: bool
    ) -> None:
        self.model_bytes = model_bytes
        self.source = source
        self.atomic_numbers = [int(z) for z in atomic_numbers]
        self.periodic = periodic
        self._load()
        unknown = sorted(set(self.atomic_numbers) - set(self.elements))
        if unknown:
            raise ValueError(
                f"atomic_numbers: {unknown} are not in the element list {self.elements} of {source}"
            )

    def _load(self) -> None:
        self.model, self.elements = _load_exported(self.model_bytes, self.source)
        self.numbers = torch.tensor(self.atomic_numbers, dtype=torch.int64)
        self.pbc = torch.full((3,), self.periodic, dtype=torch.bool)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "model_bytes": self.model_bytes,
            "source": self.source,
            "atomic_numbers": self.atomic_numbers,
            "periodic": self.periodic,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._load()

    def __call__(self, state: openmm.State) -> tuple[float, np.ndarray]:
        """Energy (kJ/mol) and forces (kJ/mol/nm) at ``state``'s positions (and box)."""
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)
        if self.periodic:
            cell = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.angstrom)
        else:
            cell = np.zeros((3, 3))
        out = self.model(
            torch.as_tensor(np.asarray(positions), dtype=torch.float64),
            self.numbers,
            torch.as_tensor(np.asarray(cell), dtype=torch.float64),
            self.pbc,
            compute_stress=False,
        )
        energy = float(out["energy"]) * KJ_PER_MOL_PER_EV
        forces = out["forces"].detach().double().numpy() * (KJ_PER_MOL_PER_EV * ANGSTROM_PER_NM)
        return energy, forces


def physicsml_force(
    model_file: str | Path,
    atomic_numbers: Sequence[int],
    periodic: bool,
    particles: Sequence[int] | None = None,
) -> openmm.PythonForce:
    """An OpenMM force computing an exported model's energy and forces.

    ``atomic_numbers`` are those of the particles the model acts on: every particle of the
    system, or those listed in ``particles`` (in that order). ``periodic``: whether the
    model sees the system's periodic box (all three directions) or an isolated molecule.
    """
    path = Path(model_file)
    if not path.is_file():
        raise FileNotFoundError(f"model_file: no exported model at {path}")
    if particles is not None and len(particles) != len(atomic_numbers):
        raise ValueError(
            f"particles: {len(particles)} indices for {len(atomic_numbers)} atomic numbers"
        )
    computation = ExportedForceComputation(path.read_bytes(), str(path), atomic_numbers, periodic)
    force = openmm.PythonForce(computation)
    force.setUsesPeriodicBoundaryConditions(periodic)
    if particles is not None:
        force.setParticles(list(particles))
    force.setName("physicsml")
    return force


def topology_from_atoms(atoms: ase.Atoms) -> app.Topology:
    """An OpenMM topology for an ASE structure: one chain, one residue, an atom per atom and,
    for a periodic structure, its cell as the box (OpenMM wants a lower-triangular cell)."""
    topology = app.Topology()
    residue = topology.addResidue("MOL", topology.addChain())
    for index, z in enumerate(atoms.numbers):
        element = app.Element.getByAtomicNumber(int(z))
        topology.addAtom(f"{element.symbol}{index}", element, residue)
    if atoms.pbc.any():
        if not atoms.pbc.all():
            raise ValueError(
                f"atoms.pbc: OpenMM boxes are periodic in all 3 directions, got {atoms.pbc}"
            )
        cell = atoms.cell.array
        if np.any(np.abs(cell[np.triu_indices(3, 1)]) > 1e-8):
            raise ValueError(
                "atoms.cell: OpenMM needs a lower-triangular cell (a along x, b in xy)"
            )
        topology.setPeriodicBoxVectors(cell * unit.angstrom)
    return topology


class PhysicsMLPotentialImpl(MLPotentialImpl):  # type: ignore[misc]
    """openmm-ml's side of the ``physicsml`` potential: adds ``physicsml_force`` for the
    topology's atoms (or the selected ``atoms``) to a system."""

    def __init__(self, model_file: str | Path) -> None:
        self.model_file = Path(model_file)

    def addForces(  # noqa: N802 (openmm-ml's method name)
        self,
        topology: app.Topology,
        system: openmm.System,
        atoms: Iterable[int] | None,
        forceGroup: int,  # noqa: N803
        **args: Any,
    ) -> None:
        """Add the model's force, in ``forceGroup``, to ``system``."""
        every_atom = list(topology.atoms())
        selected = list(atoms) if atoms is not None else None
        chosen = every_atom if selected is None else [every_atom[i] for i in selected]
        if any(atom.element is None for atom in chosen):
            raise ValueError("topology: every atom the model acts on needs an element")
        force = physicsml_force(
            self.model_file,
            [atom.element.atomic_number for atom in chosen],
            periodic=topology.getPeriodicBoxVectors() is not None,
            particles=selected,
        )
        force.setForceGroup(forceGroup)
        system.addForce(force)


class PhysicsMLPotentialImplFactory(MLPotentialImplFactory):  # type: ignore[misc]
    """Creates the ``physicsml`` potential: ``MLPotential("physicsml", model_file=PATH)``."""

    def createImpl(self, name: str, **args: Any) -> PhysicsMLPotentialImpl:  # noqa: N802
        """The potential for the exported model ``args["model_file"]``."""
        if "model_file" not in args:
            raise ValueError(f"MLPotential({name!r}): pass model_file=<an exported model>")
        return PhysicsMLPotentialImpl(args["model_file"])
