"""Frames of ``ase.Atoms`` (or of the parts an ``ase.Atoms`` holds), labels sorted by level.

Shared by the ``ase.io`` path of ingest, the fast extxyz reader and the API.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from physicsml.data.store_format import STRING, Frame

ATOM_RESULTS = {"forces", "charges", "energies", "stresses", "magmoms"}
STRUCTURE_RESULTS = {"energy", "free_energy", "stress", "dipole", "magmom"}
VOIGT_TO_3X3 = np.array([[0, 5, 4], [5, 1, 3], [4, 3, 2]])
"""Index that turns Voigt ``[xx, yy, zz, yz, xz, xy]`` into a symmetric 3x3 matrix."""
STRESS_FROM_VIRIAL = "virial"
"""The per-structure label (eV, 9 or 6 Voigt components) stored as ``stress = -virial / V``."""


def _numeric(value: np.ndarray) -> bool:
    return value.dtype.kind in "iuf"  # integers and floats; not bool, complex, str or object


def as_3x3(name: str, value: Any) -> np.ndarray:
    """A stress or virial given as a 3x3 matrix, 9 numbers (row by row, symmetric as extxyz
    writes it) or 6 Voigt numbers ``[xx, yy, zz, yz, xz, xy]`` as a float 3x3 matrix."""
    array = np.asarray(value, dtype=np.float64)
    if array.shape == (6,):
        return array[VOIGT_TO_3X3]
    if array.size == 9:
        return array.reshape(3, 3)
    raise ValueError(f"'{name}' has {array.size} components, expected 9 or 6 (Voigt)")


def stress_from_virial(virial: Any, cell: Any, pbc: Any) -> np.ndarray:
    """``-virial / V`` (ASE's convention), V the cell's volume; ``ValueError`` when the
    structure has no periodic direction or no volume."""
    volume = abs(float(np.linalg.det(np.asarray(cell, dtype=np.float64))))
    if not np.asarray(pbc).any() or volume < 1e-9:
        raise ValueError(
            f"a virial needs a periodic cell with a volume (stress = -virial / V), but pbc is "
            f"{np.asarray(pbc).tolist()} and the cell volume {volume:.3g} Å^3"
        )
    return -as_3x3(STRESS_FROM_VIRIAL, virial) / volume


def atoms_to_frame(atoms: Any) -> Frame:
    """Frame of an ``ase.Atoms`` with its labels: ``atoms.calc.results`` plus numeric
    ``atoms.arrays`` and ``atoms.info`` entries (as float64) and ``atoms.info`` strings (such
    as ``config_type``), under their own names. Voigt stresses become 3x3 matrices; a
    ``virial`` in ``atoms.info`` becomes the stress (see ``stress_from_virial``)."""
    results = atoms.calc.results if atoms.calc is not None else {}
    arrays = {k: v for k, v in atoms.arrays.items() if k not in ("numbers", "positions")}
    return frame_from_parts(
        len(atoms),
        atoms.numbers,
        atoms.positions,
        atoms.cell.array,
        atoms.pbc,
        results,
        arrays,
        atoms.info,
    )


def frame_from_parts(
    n: int,
    numbers: Any,
    positions: Any,
    cell: Any,
    pbc: Any,
    results: dict[str, Any],
    arrays: dict[str, Any],
    info: dict[str, Any],
) -> Frame:
    """Frame of a structure given as ``ase.Atoms`` holds it (see ``atoms_to_frame``)."""
    atom_props: dict[str, np.ndarray] = {}
    structure_props: dict[str, np.ndarray] = {}
    if STRESS_FROM_VIRIAL in info:
        virial = info[STRESS_FROM_VIRIAL]
        info = {k: v for k, v in info.items() if k != STRESS_FROM_VIRIAL}
        if "stress" not in results:
            results = results | {"stress": stress_from_virial(virial, cell, pbc)}
    for name, raw in results.items():
        value = np.asarray(raw)
        if not _numeric(value):
            continue
        if name == "stress":
            value = as_3x3(name, value)
        elif name == "stresses" and value.shape[-1:] == (6,):
            value = value[..., VOIGT_TO_3X3]
        per_atom = name in ATOM_RESULTS or (
            name not in STRUCTURE_RESULTS and value.ndim >= 1 and value.shape[0] == n
        )
        (atom_props if per_atom else structure_props)[name] = value
    for name, raw in arrays.items():
        value = np.asarray(raw)
        if _numeric(value):
            atom_props.setdefault(name, value)
    for name, raw in info.items():
        if name in atom_props:
            continue
        if isinstance(raw, str):
            structure_props.setdefault(name, np.asarray(raw, dtype=STRING))
            continue
        value = np.asarray(raw)
        if _numeric(value):
            # Float: a value written as "300" in one comment line may be "300.5" in the next.
            structure_props.setdefault(name, value.astype(np.float64))
    return Frame(
        positions=np.asarray(positions, dtype=np.float64),
        numbers=np.asarray(numbers, dtype=np.int64),
        cell=np.asarray(cell, dtype=np.float64),
        pbc=np.asarray(pbc, dtype=bool),
        atom_props=atom_props,
        structure_props=structure_props,
    )
