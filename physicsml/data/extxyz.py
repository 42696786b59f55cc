"""A fast extxyz reader giving the same frames as ``ase.io`` followed by ``atoms_to_frame``.

``ase.io`` parses every atom line in Python, one value at a time; on the molecular-dynamics files
our users ingest that is most of an ingest's time. This reader parses the atom lines of many
frames in one numpy conversion and the comment line with one regular expression. It covers the
extxyz that codes write (``Properties``, ``Lattice``, ``pbc``, numeric key=value labels, R/I/S/L
columns; ``stress`` and ``virial`` of 9 or, unlike ``ase.io``, 6 Voigt numbers) and raises
:class:`UnsupportedExtxyz` for the rest (escapes, JSON values, ``VEC`` lines, ``move_mask``,
irregular atom lines), so the caller can hand those files to ``ase.io``.
``tests/data/test_extxyz.py`` checks it against ``ase.io`` frame for frame.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from ase.data import atomic_numbers
from ase.io.extxyz import per_config_properties

from physicsml.data.frames import frame_from_parts
from physicsml.data.store_format import Frame

BLOCK_FRAMES = 1024
"""Frames whose atom lines are converted to numbers together."""

# ase.io.extxyz's column renames (PROPERTY_NAME_MAP reversed) and the SinglePointCalculator's
# property names: columns and labels with these names become ``atoms.calc.results``.
COLUMN_NAMES = {"pos": "positions", "Z": "numbers", "charge": "charges", "species": "symbols"}
RESULT_NAMES = {
    "energy", "forces", "stress", "stresses", "dipole", "charges", "magmom", "magmoms",
    "free_energy", "energies", "dielectric_tensor", "born_effective_charges", "polarization",
}  # fmt: skip
PER_CONFIG_RESULTS = set(per_config_properties)
COLUMN_TYPES = {"R": np.float64, "I": np.int32, "S": np.str_, "L": np.bool_}
"""Column kind -> numpy dtype (ase.io's structured-array dtypes: float64, int32, str, bool)."""
BOOLS = {"T": True, "F": False, "True": True, "False": False, "true": True, "false": False}
BOOLS |= {"TRUE": True, "FALSE": False}
PAIR = re.compile(
    r"""\s*([^\s="'{}\[\]]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|\{([^}]*)\}|\[([^\]]*)\]|([^\s"'{}\[\]]+)))?"""
)


class UnsupportedExtxyz(ValueError):
    """The file uses an extxyz feature that this reader leaves to ``ase.io``."""


class MalformedExtxyz(ValueError):
    """The file is not extxyz (an atom count that does not match the atom lines): the
    message names the frame and line, which ``ase.io`` (reading the whole file first)
    cannot."""


def _value(key: str, text: str) -> Any:
    """A comment-line value as ``ase.io.extxyz`` types it: int, float (arrays), else str/bool."""
    if text.startswith("_JSON"):
        raise UnsupportedExtxyz(f"JSON value of {key!r}")
    parts = re.findall(r"[^\s,]+", text)
    value: Any = text
    if key != "uid" and len(parts) == 1:  # the common case, without numpy's overhead
        try:
            number = int(parts[0])
            return number if -(2**63) <= number < 2**63 else float(parts[0])  # as int64 does
        except ValueError:
            try:
                return float(parts[0])
            except ValueError:
                pass
    elif key != "uid":
        for dtype in (np.int64, np.float64):
            try:
                array = np.array(parts, dtype=dtype)
            except (ValueError, OverflowError):
                continue
            value = array[0] if len(array) == 1 else array
            break
    if isinstance(value, str) and parts and all(p in BOOLS for p in parts):
        return BOOLS[parts[0]] if len(parts) == 1 else [BOOLS[p] for p in parts]
    return value


def parse_comment(line: str) -> dict[str, Any]:
    """The key=value pairs of an extxyz comment line (a bare key means True)."""
    if "\\" in line:
        raise UnsupportedExtxyz("escaped characters in a comment line")
    info: dict[str, Any] = {}
    position, line = 0, line.strip()
    while position < len(line):
        match = PAIR.match(line, position)
        if match is None or match.end() == position:
            raise UnsupportedExtxyz(f"comment line not in key=value form: {line[:80]!r}")
        key, *quoted = match.groups()
        values = [q for q in quoted if q is not None]
        info[key] = True if not values else _value(key, values[0])
        position = match.end()
    return info


def _columns(spec: str) -> list[tuple[str, type, int]]:
    """``Properties`` -> [(ase name, dtype, number of columns)]."""
    fields = spec.split(":")
    if len(fields) % 3:
        raise UnsupportedExtxyz(f"malformed Properties {spec!r}")
    columns = []
    for name, kind, count in zip(fields[::3], fields[1::3], fields[2::3], strict=True):
        if kind not in COLUMN_TYPES or not count.isdigit():
            raise UnsupportedExtxyz(f"Properties column {name}:{kind}:{count}")
        if name == "move_mask":
            raise UnsupportedExtxyz("move_mask constraints")
        columns.append((COLUMN_NAMES.get(name, name), COLUMN_TYPES[kind], int(count)))
    return columns


def _info_parts(info: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, str, dict[str, Any]]:
    """cell, pbc and Properties out of a comment's info (which keeps the other labels)."""
    for key in ("Lattice", "stress", "virial"):
        if key in info:
            value = info[key]
            sizes = [(9,)] if key == "Lattice" else [(9,), (6,)]  # 6: Voigt, which ase.io refuses
            if not isinstance(value, np.ndarray) or value.shape not in sizes:
                raise UnsupportedExtxyz(
                    f"{key} is not {' or '.join(str(s[0]) for s in sizes)} numbers"
                )
            value = value.astype(np.float64)
            info[key] = value.reshape(3, 3, order="F") if value.shape == (9,) else value
    lattice = info.pop("Lattice", None)
    pbc = info.pop("pbc", lattice is not None)
    pbc_array = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
    cell = np.zeros((3, 3)) if lattice is None else np.ascontiguousarray(lattice.T)
    properties = info.pop("Properties", "species:S:1:pos:R:3")
    if not isinstance(properties, str):
        raise UnsupportedExtxyz("Properties is not a string")
    return cell, pbc_array, properties, info


def _frame(
    natoms: int, columns: dict[str, np.ndarray], info: dict[str, Any], cell: np.ndarray, pbc: Any
) -> Frame:
    """The frame ``atoms_to_frame`` makes of the ``ase.Atoms`` that ``ase.io`` would build."""
    arrays = dict(columns)
    numbers = arrays.pop("numbers", None)
    symbols = arrays.pop("symbols", None)
    if numbers is None:
        if symbols is None:
            raise UnsupportedExtxyz("no species or Z column")
        try:
            numbers = np.array([atomic_numbers[s.capitalize()] for s in symbols], dtype=np.int64)
        except KeyError as error:
            raise UnsupportedExtxyz(f"unknown element {error}") from None
    if "positions" not in arrays:
        raise UnsupportedExtxyz("no pos column")
    positions = arrays.pop("positions")
    results = {k: arrays.pop(k) for k in list(arrays) if k in RESULT_NAMES}
    for key in [k for k in info if k in PER_CONFIG_RESULTS]:
        results[key] = info.pop(key)
        if key == "stress" and np.shape(results[key]) == (3, 3):
            s = results[key]
            results[key] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
    # ase's SinglePointCalculator keeps these three as given and makes the rest float arrays.
    results = {
        k: v if k in ("energy", "magmom", "free_energy") else np.array(v, float)
        for k, v in results.items()
    }
    return frame_from_parts(natoms, numbers, positions, cell, pbc, results, arrays, info)


def _block(
    natoms: list[int],
    comments: list[tuple[np.ndarray, np.ndarray, dict[str, Any]]],
    lines: list[str],
    properties: str,
) -> Iterator[Frame]:
    """Frames of consecutive frames that share one ``Properties``: one numeric conversion."""
    columns = _columns(properties)
    width = sum(count for _, _, count in columns)
    tokens = " ".join(lines).split()
    if len(tokens) != width * len(lines):
        raise UnsupportedExtxyz("atom lines with a number of values other than Properties says")
    # An object array and astype: Python's own int()/float() on each value, as ase.io does.
    table = np.array(tokens, dtype=object).reshape(len(lines), width)
    parsed: list[tuple[str, np.ndarray]] = []
    start = 0
    for name, dtype, count in columns:
        raw = table[:, start : start + count]
        if dtype is np.bool_:
            if not np.isin(raw, list(BOOLS)).all():
                raise UnsupportedExtxyz(f"column {name}: values other than T/F")
            value = np.vectorize(BOOLS.__getitem__, otypes=[bool])(raw)
        else:
            try:
                value = raw.astype(dtype)
            except (ValueError, OverflowError):
                raise UnsupportedExtxyz(
                    f"column {name}: a value that is not {np.dtype(dtype).name}"
                ) from None
        parsed.append((name, value[:, 0] if count == 1 else value))
        start += count
    offset = 0
    for n, (cell, pbc, info) in zip(natoms, comments, strict=True):
        frame_columns = {name: value[offset : offset + n] for name, value in parsed}
        yield _frame(n, frame_columns, info, cell, pbc)
        offset += n


def _frame_texts(handle: TextIO) -> Iterator[tuple[int, int, str, list[str]]]:
    """(line number of its count, atom count, comment line, atom lines) of each frame.

    A count line that is not an integer raises ``MalformedExtxyz`` naming the frame, unless
    it holds lattice vectors (``VEC``, left to ``ase.io``); when it looks like an atom line of
    the frame before (as many values), that frame's count is named as too small.
    """
    line = 1
    natoms, width = 0, -1
    for frame, count_line in enumerate(handle):
        if not count_line.strip():
            rest = handle.read()
            if rest.strip():
                raise UnsupportedExtxyz("blank line between frames")
            return
        try:
            natoms = int(count_line)
        except ValueError:
            if count_line.lstrip().startswith("VEC"):
                raise UnsupportedExtxyz("VEC lines") from None
            if frame and len(count_line.split()) == width:
                raise MalformedExtxyz(
                    f"frame {frame - 1} (line {line - natoms - 2}): more atom lines than its "
                    f"atom count {natoms}"
                ) from None
            raise MalformedExtxyz(
                f"frame {frame} (line {line}): expected an atom count, got {count_line[:40]!r}"
            ) from None
        comment = next(handle, None)
        atom_lines = list(islice(handle, natoms))
        if comment is None or len(atom_lines) != natoms:
            raise MalformedExtxyz(
                f"frame {frame} (line {line}): the file ends before its {natoms} atoms"
            )
        width = len(atom_lines[0].split()) if atom_lines else -1
        if atom_lines and len(atom_lines[-1].split()) != width:
            raise MalformedExtxyz(
                f"frame {frame} (line {line}): fewer atom lines than its atom count {natoms}"
            )
        yield line, natoms, comment, atom_lines
        line += natoms + 2


def read_extxyz(path: str | Path) -> Iterator[Frame]:
    """Frames of an extxyz file, streamed in blocks of ``BLOCK_FRAMES``.

    Raises :class:`UnsupportedExtxyz` (possibly after yielding some frames) for files that need
    ``ase.io``; callers that must not see partial results should collect the frames first.
    """
    with open(path) as handle:
        natoms: list[int] = []
        comments: list[tuple[np.ndarray, np.ndarray, dict[str, Any]]] = []
        lines: list[str] = []
        block_properties: str | None = None
        for _, n, comment, atom_lines in _frame_texts(handle):
            cell, pbc, properties, info = _info_parts(parse_comment(comment))
            if natoms and (properties != block_properties or len(natoms) >= BLOCK_FRAMES):
                yield from _block(natoms, comments, lines, str(block_properties))
                natoms, comments, lines = [], [], []
            block_properties = properties
            natoms.append(n)
            comments.append((cell, pbc, info))
            lines.extend(atom_lines)
        if natoms:
            yield from _block(natoms, comments, lines, str(block_properties))
