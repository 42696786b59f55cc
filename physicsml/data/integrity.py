"""Content manifests of the zarr groups we write (stores, neighbour-list tables) and their checks.

A group's ``manifest.json`` records, for every array in it, every file of the array (its
``zarr.json`` and its chunks ``c/...``) with its byte size and SHA-256::

    {"format": "physicsml-manifest", "version": 1,
     "arrays": {"atoms/forces": {"zarr.json": [412, "3f..."], "c/0/0": [180231, "9a..."]}}}

Opening a group checks that every recorded file exists with its size (one ``stat`` each), so
a deleted chunk never reads as zarr's fill value. Verifying hashes every file, once:
``verified.json`` then records the manifest's digest and each file's size, mtime and ctime,
so a later verification only stats the files, and any change to a file makes it hash them
again. A read that fails anyway (a chunk corrupted in a group not verified yet) raises
``StoreError`` naming the store, the array and, when its hash shows it, the chunk.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from tqdm.auto import tqdm

from physicsml.data.files import check_interrupted, file_sha256
from physicsml.data.store_format import StoreError

MANIFEST = "manifest.json"
VERIFIED = "verified.json"
FORMAT = "physicsml-manifest"
VERSION = 1

Signature = tuple[int, int, int]
"""A file's size, mtime and ctime (ns): what ``verified.json`` remembers of it."""


def _array_folders(group: Path) -> list[Path]:
    """Folders of the arrays in ``group``, not descending into hidden folders (writes in
    progress) or groups with their own manifest."""
    found = []
    for folder, subfolders, files in os.walk(group):
        here = Path(folder)
        if (
            "zarr.json" in files
            and json.loads((here / "zarr.json").read_bytes()).get("node_type") == "array"
        ):
            found.append(here)
            subfolders.clear()
            continue
        subfolders[:] = sorted(
            name
            for name in subfolders
            if not name.startswith(".") and not (here / name / MANIFEST).exists()
        )
    return sorted(found)


def _files(folder: Path) -> list[str]:
    """Files of the array at ``folder``, relative to it (``zarr.json``, ``c/0/0``...)."""
    return sorted(
        (Path(parent) / name).relative_to(folder).as_posix()
        for parent, _, names in os.walk(folder)
        for name in names
    )


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _replace_json(path: Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` atomically (a temporary file renamed)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(value, sort_keys=True))
    os.replace(tmp, path)


@dataclass(frozen=True)
class Manifest:
    """The manifest of the group at ``group``, part of the store at ``store`` (named in errors).

    ``arrays`` maps an array (relative to ``group``) to its files: ``{key: (size, sha256)}``.
    """

    store: Path
    group: Path
    arrays: dict[str, dict[str, tuple[int, str]]]

    @property
    def digest(self) -> str:
        """SHA-256 of the manifest's content."""
        return _digest(self.arrays)

    def error(self, array: str, key: str | None, problem: str) -> StoreError:
        """``StoreError``: ``store S: array A chunk K: problem`` (``file zarr.json`` for an
        array's metadata), with the fix for a neighbour-list cache."""
        name = (self.group / array).relative_to(self.store).as_posix()
        text = f"store {self.store}: array {name}"
        if key is not None:
            text += f" {'file' if key == 'zarr.json' else 'chunk'} {key}"
        text += f": {problem}"
        if self.group != self.store:
            text += f"; a cache: delete {self.group} to compute it again"
        return StoreError(text)

    def check_files(self) -> dict[str, Signature]:
        """Stat every recorded file: ``StoreError`` when one is missing or has another size.

        Returns each file's signature (size, mtime, ctime) by its path in the group.
        """
        signatures = {}
        for array, files in self.arrays.items():
            for key, (size, _) in files.items():
                try:
                    stat = os.stat(self.group / array / key)
                except FileNotFoundError:
                    problem = "missing (deleted?), the manifest records it"
                    raise self.error(array, key, problem) from None
                if stat.st_size != size:
                    problem = f"{stat.st_size} bytes, the manifest records {size} (truncated?)"
                    raise self.error(array, key, problem)
                signatures[f"{array}/{key}"] = (size, stat.st_mtime_ns, stat.st_ctime_ns)
        return signatures

    def verify(self, force: bool = False, progress: bool = False) -> int:
        """Check every file's hash (``StoreError`` at the first that differs) and remember it.

        Skipped when ``verified.json`` shows that this manifest was verified and no file has
        changed since, unless ``force``. Returns the number of files hashed. A group that is
        not writable is verified each time.
        """
        signatures = self.check_files()
        remembered = {"manifest": self.digest, "files": signatures}
        marker = self.group / VERIFIED
        if not force and marker.is_file() and _load(marker) == json.loads(json.dumps(remembered)):
            return 0
        total = sum(size for files in self.arrays.values() for size, _ in files.values())
        hashed = 0
        with tqdm(
            total=total,
            desc=f"verifying {self.group.name}",
            unit="B",
            unit_scale=True,
            disable=not progress,
            delay=1.0,
        ) as bar:
            for array in self.arrays:
                check_interrupted()  # physicsml-ingest --verify stops between arrays
                hashed += self.verify_array(array)
                bar.update(sum(size for size, _ in self.arrays[array].values()))
        self.remember(signatures)
        return hashed

    def remember(self, signatures: dict[str, Signature]) -> None:
        """Write ``verified.json``: these files, as they are now, match the manifest."""
        if os.access(self.group, os.W_OK):
            _replace_json(self.group / VERIFIED, {"manifest": self.digest, "files": signatures})

    def verify_array(self, array: str) -> int:
        """Hash the files of ``array``; ``StoreError`` when one differs, is missing or is not
        in the manifest. Returns the number of files hashed."""
        files = self.arrays[array]
        folder = self.group / array
        extra = sorted(set(_files(folder)) - set(files))
        if extra:
            raise self.error(array, extra[0], "not in the manifest (added later)")
        for key, (_, sha256) in files.items():
            try:
                actual = file_sha256(folder / key)
            except FileNotFoundError:
                raise self.error(array, key, "missing (deleted?)") from None
            if actual != sha256:
                raise self.error(array, key, "content hash differs from the manifest (corrupted)")
        return len(files)

    def read_error(self, array: str, error: Exception) -> StoreError:
        """The ``StoreError`` for a failed read of ``array``: the chunk whose hash differs,
        else the reader's error in one line."""
        try:
            self.verify_array(array)
        except StoreError as found:
            return found
        reason = str(error).splitlines()[0] if str(error) else ""
        return self.error(
            array,
            None,
            f"cannot be read ({type(error).__name__}: {reason}); check it with "
            f"physicsml-ingest --verify {self.store}",
        )

    def checked(self, array: zarr.Array, name: str) -> CheckedArray:
        """``array`` (``name`` in this group) with read errors raised as ``StoreError``."""
        return CheckedArray(array, self, name)


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def build_manifest(group: Path) -> dict[str, dict[str, tuple[int, str]]]:
    """Sizes and hashes of the files of every array in ``group`` (see the module docstring)."""
    arrays = {}
    for folder in _array_folders(group):
        arrays[folder.relative_to(group).as_posix()] = {
            key: (os.stat(folder / key).st_size, file_sha256(folder / key))
            for key in _files(folder)
        }
    return arrays


def write_manifest(group: Path) -> None:
    """Record the manifest of the finished group at ``group``, and mark it verified (its
    hashes are those of the files just written)."""
    arrays = build_manifest(group)
    _replace_json(group / MANIFEST, {"format": FORMAT, "version": VERSION, "arrays": arrays})
    manifest = Manifest(group, group, arrays)
    manifest.remember(manifest.check_files())


def read_manifest(store: Path, group: Path) -> Manifest:
    """The manifest of ``group`` (a part of ``store``); ``StoreError`` when it is missing or
    unreadable. Its files are not checked: see ``Manifest.check_files`` and ``verify``."""
    value = _load(group / MANIFEST)
    where = f"store {store}: {(group / MANIFEST).relative_to(store).as_posix()}"
    fix = "ingest the store again" if group == store else f"delete {group} to compute it again"
    if value is None:
        raise StoreError(f"{where} is missing or unreadable; {fix}")
    try:
        if (value["format"], value["version"]) != (FORMAT, VERSION):
            raise ValueError(value["format"], value["version"])
        arrays = {
            array: {key: (int(size), str(sha)) for key, (size, sha) in files.items()}
            for array, files in value["arrays"].items()
        }
    except (KeyError, TypeError, ValueError, AttributeError):
        raise StoreError(f"{where} is not a version {VERSION} physicsml manifest; {fix}") from None
    return Manifest(store, group, arrays)


class CheckedArray:
    """A zarr array of a store, read on demand: a failed read raises ``StoreError`` naming the
    store and the array (and the chunk, found by its hash), never a decompressor's error."""

    def __init__(self, array: zarr.Array, manifest: Manifest, name: str) -> None:
        self.array = array
        self.manifest = manifest
        self.name = name

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    @property
    def ndim(self) -> int:
        return len(self.array.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> Any:
        try:
            return self.array[key]
        except (IndexError, TypeError):
            raise
        except Exception as error:
            raise self.manifest.read_error(self.name, error) from error

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self[...], dtype=dtype)
