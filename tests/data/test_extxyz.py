"""The fast extxyz reader gives exactly the frames that ase.io + atoms_to_frame give."""

# ruff: noqa: E501  (the extxyz sample below has long comment lines, as real files do)

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest

from physicsml.data.extxyz import UnsupportedExtxyz, parse_comment, read_extxyz
from physicsml.data.frames import atoms_to_frame
from physicsml.data.ingest import IngestError, ingest
from physicsml.data.store_format import Frame
from tests.structures import ASPIRIN, ETHANOL, PERIODIC, write_extxyz

# Two frames with one Properties, then one with another: every column kind, quoted values in
# all four delimiters, bools, ints, arrays, a 3x3 stress, a string label, a bare key, a uid.
VARIED = """\
3
Lattice="4.0 0.0 0.0 0.0 5.0 0.0 0.0 0.0 6.0" Properties=species:S:1:pos:R:3:forces:R:3:tags:I:1:fixed:L:1:label:S:1:charge:R:1 energy=-3.5 stress="1 2 3 2 5 6 3 6 9" temperature=300 dipole={0.1 0.2 0.3} vec=[1,2,3] name=water have_forces uid=0042 pbc="T T F"
O 0.0 0.0 0.1 0.5 -0.5 0.25 1 T a -0.8
h 0.7 0.0 0.5 -0.25 0.5 0.0 2 F b 0.4
H -0.7 0.0 0.5 1e-3 2.5E+1 -7 3 T c 0.4
2
Lattice="4 0 0 0 5 0 0 0 6" Properties=species:S:1:pos:R:3:forces:R:3:tags:I:1:fixed:L:1:label:S:1:charge:R:1 energy=-1 stress="1 2 3 2 5 6 3 6 9" temperature=300.5 dipole={0 0 1} vec=[4,5,6] name=h2 uid=7
H 0.0 0.0 0.0 1 2 3 4 F x 0.0
H 0.0 0.0 0.74 -1 -2 -3 5 T y 0.0
2
Properties=Z:I:1:pos:R:3 energy=2.0 pbc=F
1 0.0 0.0 0.0
1 0.0 0.0 0.74
1
energy=0.5 comment='a plain frame'
He 1.0 2.0 3.0
"""


CONSISTENT = VARIED[: VARIED.index("2\nProperties=Z")]
"""The first two frames: the same labels in both, so they make one store."""


def assert_same_frames(fast: list[Frame], reference: list[Frame]) -> None:
    assert len(fast) == len(reference)
    for a, b in zip(fast, reference, strict=True):
        for key in ("positions", "numbers", "cell", "pbc"):
            x, y = getattr(a, key), getattr(b, key)
            assert x.dtype == y.dtype and np.array_equal(x, y), key
        for group in ("atom_props", "structure_props"):
            x, y = getattr(a, group), getattr(b, group)
            assert list(x) == list(y), group
            for name in x:
                assert x[name].dtype == y[name].dtype, (group, name)
                assert np.array_equal(x[name], y[name]), (group, name)


def ase_frames(path: Path) -> list[Frame]:
    return [atoms_to_frame(atoms) for atoms in ase.io.iread(path, ":")]


@pytest.mark.parametrize("path", [ETHANOL, ASPIRIN], ids=lambda p: p.name)
def test_shipped_files_read_as_ase_reads_them(path: Path) -> None:
    assert_same_frames(list(read_extxyz(path)), ase_frames(path))


@pytest.mark.parametrize("name", list(PERIODIC))
def test_periodic_files_read_as_ase_reads_them(tmp_path: Path, name: str) -> None:
    path = write_extxyz(tmp_path, name)
    assert_same_frames(list(read_extxyz(path)), ase_frames(path))


def test_every_column_kind_and_comment_form(tmp_path: Path) -> None:
    path = tmp_path / "varied.extxyz"
    path.write_text(VARIED)
    fast = list(read_extxyz(path))
    assert_same_frames(fast, ase_frames(path))
    first = fast[0]
    assert first.pbc.tolist() == [True, True, False]
    assert first.numbers.tolist() == [8, 1, 1]
    assert first.atom_props["tags"].dtype == np.int32
    assert "fixed" not in first.atom_props and "label" not in first.atom_props
    assert first.structure_props["stress"].shape == (3, 3)
    assert fast[2].numbers.tolist() == [1, 1]


def test_comment_parsing() -> None:
    info = parse_comment('a=1 b=2.5 c="1 2 3" d={x y} e=T flag big=99999999999999999999')
    assert info["a"] == 1 and isinstance(info["a"], int)
    assert info["b"] == 2.5
    assert info["c"].tolist() == [1, 2, 3]
    assert info["d"] == "x y" and info["e"] is True and info["flag"] is True
    assert isinstance(info["big"], float)  # beyond int64, as ase.io reads it


@pytest.mark.parametrize(
    "comment",
    [
        "Properties=species:S:1:pos:R:3:move_mask:L:1",
        'Properties=species:S:1:pos:R:3 info="_JSON {\\"a\\": 1}"',
    ],
)
def test_features_left_to_ase_fall_back_to_it(tmp_path: Path, comment: str) -> None:
    mask = " T" if "move_mask" in comment else ""
    path = tmp_path / "special.extxyz"
    path.write_text(f"2\n{comment} energy=1.0\nH 0 0 0{mask}\nH 0 0 0.7{mask}\n")
    with pytest.raises(UnsupportedExtxyz):
        list(read_extxyz(path))
    store = ingest(path, tmp_path / "s.zarr").store
    assert store.attrs["source"]["reader"] == "ase.io:auto"
    assert store.num_structures == 1


def test_ingest_uses_the_fast_reader_and_matches_ase(tmp_path: Path) -> None:
    path = tmp_path / "varied.extxyz"
    path.write_text(CONSISTENT)
    fast = ingest(path, tmp_path / "fast.zarr").store
    slow = ingest(path, tmp_path / "slow.zarr", format="extxyz", index="0:").store
    assert fast.attrs["source"]["reader"] == "physicsml.extxyz"
    assert slow.attrs["source"]["reader"] == "ase.io:extxyz"
    a, b = fast.load(), slow.load()
    assert np.array_equal(a.positions, b.positions) and np.array_equal(a.numbers, b.numbers)
    assert a.atom_props.keys() == b.atom_props.keys()
    for name in a.atom_props:
        assert np.array_equal(a.atom_props[name], b.atom_props[name]), name
    for name in a.structure_props:
        assert np.array_equal(a.structure_props[name], b.structure_props[name]), name


def test_bad_value_names_file_and_frame(tmp_path: Path) -> None:
    path = tmp_path / "bad.extxyz"
    path.write_text(
        "1\nProperties=species:S:1:pos:R:3 energy=1\nH 0 0 0\n"
        "1\nProperties=species:S:1:pos:R:3 energy=1\nH 0 zero 0\n"
    )
    with pytest.raises(IngestError, match=r"bad.extxyz.*frame 1"):
        ingest(path, tmp_path / "s.zarr")
    assert not (tmp_path / "s.zarr").exists()
