"""Ingest labelled structures into a store: anything ``ase.io`` reads, ANI-style HDF5, a store.

Energies are stored in eV, lengths in Å and stresses in eV/Å^3 (a ``virial``, in energy units,
becomes ``stress = -virial / V``); the source's units are stated by the caller
(``energy_unit``, ``length_unit``) and both are recorded in the store's attributes. A label
that some frames lack is stored as NaN for them (counted in the ``missing`` attribute); string
labels such as ``config_type`` are kept as string columns.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import ase.io
import h5py
import numpy as np
from ase import units as ase_units
from ase.data import atomic_numbers, chemical_symbols
from tqdm.auto import tqdm

from physicsml.data.extxyz import MalformedExtxyz, UnsupportedExtxyz, read_extxyz
from physicsml.data.files import file_sha256
from physicsml.data.frames import atoms_to_frame
from physicsml.data.store import AtomsStore
from physicsml.data.store_format import Frame
from physicsml.data.store_writer import write_store

log = logging.getLogger(__name__)

ENERGY_UNITS = {
    "eV": 1.0,
    "meV": 1e-3,
    "Hartree": ase_units.Hartree,
    "Ry": ase_units.Ry,
    "kcal/mol": ase_units.kcal / ase_units.mol,
    "kJ/mol": ase_units.kJ / ase_units.mol,
}
"""Energy units a source may be in, as their value in eV."""
LENGTH_UNITS = {"Å": 1.0, "Angstrom": 1.0, "Bohr": ase_units.Bohr, "nm": 10.0, "pm": 0.01}
"""Length units a source may be in, as their value in Å."""

# Labels with known units: (power of the energy unit, power of the length unit, stored unit).
KNOWN_LABELS: dict[str, tuple[int, int, str]] = {
    "energy": (1, 0, "eV"),
    "free_energy": (1, 0, "eV"),
    "energies": (1, 0, "eV"),
    "forces": (1, -1, "eV/Å"),
    "stress": (1, -3, "eV/Å^3"),
    "stresses": (1, -3, "eV/Å^3"),
    "dipole": (0, 1, "e·Å"),
    "charges": (0, 0, "e"),
    "initial_charges": (0, 0, "e"),
}

EXTXYZ_SUFFIXES = (".extxyz", ".xyz")
"""Files that ``physicsml.data.extxyz`` reads (falling back to ``ase.io`` where it cannot)."""
ANI_ENERGY_KEY = "wb97x_dz.energy"
ANI_FORCES_KEY = "wb97x_dz.forces"


class IngestError(ValueError):
    """A problem with the user's input (unreadable file, bad frame, wrong option)."""


@dataclass
class IngestReport:
    """What an ingest wrote."""

    store: AtomsStore
    num_skipped: int
    seconds: float

    def summary(self) -> str:
        """One line: structures, atoms, elements, properties, path, speed, bad frames skipped
        and the frames that lack a property (stored as NaN, or an empty string)."""
        store = self.store
        elements = "".join(chemical_symbols[z] + " " for z in store.elements).strip()
        props = ", ".join(
            f"{name} (structure, string)"
            if p.get("dtype") == "string"
            else f"{name} [{p['unit'] or '?'}] ({p['level']})"
            for name, p in store.properties.items()
        )
        rate = store.num_structures / max(self.seconds, 1e-9)
        missing = "".join(
            f"; {count} frames lack {name}"
            for name, count in store.attrs.get("missing", {}).items()
        )
        return (
            f"wrote {store.num_structures} structures ({store.num_atoms} atoms; elements "
            f"{elements}; properties {props or 'none'}) to {store.path} in {self.seconds:.1f} s "
            f"({rate:.0f} structures/s); skipped {self.num_skipped} bad frames{missing}"
        )


def _convert(frames: Iterable[Frame], energy: float, length: float) -> Iterator[Frame]:
    """Scale positions, cells and labels with known units from the source's units to eV/Å."""
    factors = {name: energy**pe * length**pl for name, (pe, pl, _) in KNOWN_LABELS.items()}
    for frame in frames:
        if energy != 1.0 or length != 1.0:
            frame.positions = np.asarray(frame.positions, dtype=np.float64) * length
            frame.cell = np.asarray(frame.cell, dtype=np.float64) * length
            for props in (frame.atom_props, frame.structure_props):
                for name, value in props.items():
                    if name in factors and np.issubdtype(np.asarray(value).dtype, np.floating):
                        props[name] = np.asarray(value) * factors[name]
        yield frame


def _ase_frames(path: Path, format: str | None, index: str) -> Iterator[Frame]:
    for atoms in ase.io.iread(path, index=index, format=format):
        yield atoms_to_frame(atoms)


def _ani_frames(path: Path, energy_key: str, forces_key: str | None) -> Iterator[Frame]:
    """Conformers of an ANI-style HDF5 file: a group per molecule with ``atomic_numbers``
    (or ``species`` symbols), ``coordinates [M,n,3]`` and the energy/forces datasets."""
    with h5py.File(path, "r") as handle:
        names: list[str] = []
        handle.visititems(
            lambda name, obj: (
                names.append(name) if isinstance(obj, h5py.Group) and "coordinates" in obj else None
            )
        )
        if not names:
            raise IngestError(f"{path}: no HDF5 group with 'coordinates' (expected ANI layout)")
        for name in names:
            group = handle[name]
            wanted = [energy_key] + ([forces_key] if forces_key else [])
            missing = [key for key in wanted if key not in group]
            if missing:
                raise IngestError(
                    f"{path}: group '{name}' has no dataset {missing[0]!r} (it has "
                    f"{sorted(group)}); choose others with --h5-energy-key/--h5-forces-key"
                )
            if "atomic_numbers" in group:
                numbers = np.asarray(group["atomic_numbers"][()], dtype=np.int64)
            else:
                symbols = [s.decode() if isinstance(s, bytes) else s for s in group["species"]]
                numbers = np.array([atomic_numbers[s] for s in symbols], dtype=np.int64)
            coordinates = np.asarray(group["coordinates"][()], dtype=np.float64)
            energies = np.asarray(group[energy_key][()], dtype=np.float64)
            forces = np.asarray(group[forces_key][()], dtype=np.float64) if forces_key else None
            for m in range(len(coordinates)):
                yield Frame(
                    positions=coordinates[m],
                    numbers=numbers,
                    cell=np.zeros((3, 3)),
                    pbc=np.zeros(3, dtype=bool),
                    atom_props={} if forces is None else {"forces": forces[m]},
                    structure_props={"energy": energies[m]},
                )


def _present(raw: Any) -> bool:
    """Whether a store's value is a label, not the mark of a missing one (all NaN, or '')."""
    value = np.asarray(raw)
    if value.dtype.kind == "f":
        return not np.isnan(value).all()
    return value.dtype.kind in "iub" or bool(value.size and value.reshape(-1)[0] != "")


def _store_frames(store: AtomsStore) -> Iterator[Frame]:
    data = store.load()
    for k in range(len(data.offsets) - 1):
        start, stop = data.offsets[k], data.offsets[k + 1]
        atom_props = {name: v[start:stop] for name, v in data.atom_props.items()}
        structure_props = {name: v[k] for name, v in data.structure_props.items()}
        yield Frame(
            positions=data.positions[start:stop],
            numbers=data.numbers[start:stop],
            cell=data.cell[k],
            pbc=data.pbc[k],
            atom_props={name: v for name, v in atom_props.items() if _present(v)},
            structure_props={name: v for name, v in structure_props.items() if _present(v)},
        )


def _guarded(frames: Iterable[Frame], path: Path) -> Iterator[Frame]:
    """Re-raise a reader's errors as ``IngestError`` naming the file and frame."""
    iterator = iter(frames)
    index = 0
    while True:
        try:
            frame = next(iterator)
        except StopIteration:
            return
        except (IngestError, UnsupportedExtxyz):
            raise
        except MalformedExtxyz as error:  # names its frame: the reader reads ahead
            raise IngestError(f"{path}: {error}") from error
        except Exception as error:
            message = f"{type(error).__name__}: {error}"
            raise IngestError(f"{path}: cannot read frame {index}: {message}") from error
        yield frame
        index += 1


def ingest(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    format: str | None = None,
    index: str = ":",
    energy_unit: str | None = None,
    length_unit: str | None = None,
    h5_energy_key: str = ANI_ENERGY_KEY,
    h5_forces_key: str | None = ANI_FORCES_KEY,
    skip_bad: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> IngestReport:
    """Read ``input_path`` and write a store at ``output_path``.

    The input is a physicsml store (a directory), an ANI-style HDF5 file (unless ``format``
    is given), or anything ``ase.io.iread(input_path, index, format)`` reads. Source units
    default to eV and Å (Hartree and Å for ANI HDF5). Bad frames (non-finite values, shapes
    not matching the atom count) raise ``IngestError`` naming the file and frame index, or are
    skipped and counted when ``skip_bad``; a label that some frames lack is NaN for them.
    """
    source_path = Path(input_path)
    output = Path(output_path)
    if not source_path.exists():
        raise IngestError(f"input {source_path} does not exist")
    if (output.exists() or output.is_symlink()) and not overwrite:
        raise FileExistsError(f"{output} already exists; pass --overwrite to replace it")
    if source_path.resolve() == output.resolve():
        raise IngestError(f"input and output are the same path {output}")
    if energy_unit is not None and energy_unit not in ENERGY_UNITS:
        raise IngestError(f"unknown energy unit {energy_unit!r}; use one of {list(ENERGY_UNITS)}")
    if length_unit is not None and length_unit not in LENGTH_UNITS:
        raise IngestError(f"unknown length unit {length_unit!r}; use one of {list(LENGTH_UNITS)}")
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    source: dict[str, Any] = {"path": str(source_path.resolve()), "created": created}
    frames: Iterable[Frame]
    default_energy = "eV"
    if source_path.is_dir():
        if energy_unit or length_unit or index != ":":
            raise IngestError(f"{source_path} is a store: units and index do not apply")
        store = AtomsStore(source_path)
        store.verify(progress=progress)
        frames = _store_frames(store)
        source |= {
            "sha256": store.attrs["source"].get("sha256"),
            "reader": "physicsml-store",
            "parent": store.attrs["source"],
        }
    elif format is None and h5py.is_hdf5(source_path):
        if index != ":":
            raise IngestError("--index applies to inputs read with ase.io only")
        frames = _ani_frames(source_path, h5_energy_key, h5_forces_key or None)
        default_energy = "Hartree"
        source |= {
            "sha256": file_sha256(source_path),
            "reader": "ani-hdf5",
            "energy_key": h5_energy_key,
            "forces_key": h5_forces_key,
        }
    else:
        fast = index == ":" and (
            format == "extxyz" or (format is None and source_path.suffix in EXTXYZ_SUFFIXES)
        )
        frames = read_extxyz(source_path) if fast else _ase_frames(source_path, format, index)
        source |= {
            "sha256": file_sha256(source_path),
            "reader": "physicsml.extxyz" if fast else f"ase.io:{format or 'auto'}",
            "index": index,
        }
    energy_unit = energy_unit or default_energy
    length_unit = length_unit or "Å"
    units = {name: unit for name, (_, _, unit) in KNOWN_LABELS.items()}
    units |= {"length": "Å", "source_energy": energy_unit, "source_length": length_unit}
    energy_factor, length_factor = ENERGY_UNITS[energy_unit], LENGTH_UNITS[length_unit]
    skipped = 0

    def on_bad(frame: int, problem: str) -> None:
        nonlocal skipped
        if not skip_bad:
            raise IngestError(
                f"{source_path}: frame {frame}: {problem} (physicsml-ingest --skip-bad "
                "SOURCE STORE skips bad frames; then train on STORE)"
            )
        skipped += 1
        log.warning("%s: skipping frame %d: %s", source_path, frame, problem)

    def write(frames: Iterable[Frame]) -> AtomsStore:
        bar = tqdm(
            _convert(_guarded(frames, source_path), energy_factor, length_factor),
            desc=f"ingesting {source_path.name}",
            unit=" frames",
            disable=not progress,
            mininterval=1.0,
            delay=2.0,
        )
        try:
            return write_store(
                output, bar, source=source, units=units, overwrite=overwrite, on_bad=on_bad
            )
        except (IngestError, UnsupportedExtxyz):
            raise
        except ValueError as error:
            raise IngestError(f"{source_path}: {error}") from error
        finally:
            bar.close()

    start = time.perf_counter()
    try:
        store = write(frames)
    except UnsupportedExtxyz as reason:
        log.info("%s: reading with ase.io (%s)", source_path, reason)
        skipped = 0
        source["reader"] = f"ase.io:{format or 'auto'}"
        store = write(_ase_frames(source_path, format, index))
    return IngestReport(store, skipped, time.perf_counter() - start)
