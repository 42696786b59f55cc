"""On-disk helpers shared by the writers of stores, neighbour-list and pre-batch caches.

Locks that concurrent processes (DDP ranks, sweep jobs) wait on, writes staged in a temporary
folder and renamed into place (stopped by a signal only between writes), the ``complete``
attribute that marks a finished zarr group, and file hashes.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import numpy as np
import zarr

from physicsml.data.store_format import StoreError, chunks

HASH_BLOCK_BYTES = 2**20
"""Bytes read at a time while hashing a file."""


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (released when the process dies)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove(path: Path) -> None:
    """Delete the file, link or folder at ``path`` if there is one."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def staged(path: Path, tmp: Path | None = None) -> Iterator[Path]:
    """A temporary path to build ``path`` in, renamed to ``path`` when the block succeeds.

    ``tmp`` defaults to ``<path>.tmp-<pid>``; it is removed when the block fails, so an
    interrupted write leaves nothing, and a killed writer's (its pid not running) is removed
    by the next. What is at ``path`` is replaced only once the new content is complete.
    """
    if tmp is None:
        remove_stale(path.parent, re.escape(f"{path.name}.tmp-") + r"(\d+)")
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    remove(tmp)
    try:
        yield tmp
        if path.exists() or path.is_symlink():
            old = path.with_name(f"{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            remove(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise


class Interrupted(KeyboardInterrupt):
    """Raised by ``check_interrupted`` for the signal ``signum`` (SIGINT, SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_received: list[int] = []
"""Signals that ``interrupt`` recorded and no ``take_interrupt`` has taken yet."""


def interrupt(signum: int, frame: FrameType | None) -> None:
    """A signal handler that only records ``signum``: the writer stops at its next check
    (``check_interrupted``, between frames and before the rename), never inside a zarr write
    or a finaliser, where a raised exception would be lost or leave writes running."""
    _received.append(signum)


def take_interrupt() -> int | None:
    """The first signal recorded since the last call (``None`` if none), forgetting them all."""
    signum = _received[0] if _received else None
    _received.clear()
    return signum


def check_interrupted() -> None:
    """Raise ``Interrupted`` if ``interrupt`` recorded a signal (then forget it)."""
    signum = take_interrupt()
    if signum is not None:
        raise Interrupted(signum)


def remove_stale(folder: Path, pattern: str) -> None:
    """Remove the entries of ``folder`` whose whole name matches ``pattern``, a regular
    expression whose one group is a pid, when that process is not running: the temporary
    paths of staged writes whose writer was killed."""
    names = re.compile(pattern)
    for entry in folder.iterdir() if folder.is_dir() else []:
        match = names.fullmatch(entry.name)
        if match and not _running(int(match[1])):
            remove(entry)


def _running(pid: int) -> bool:
    """Whether a process ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def complete(path: Path) -> bool:
    """Whether ``path`` is a zarr group whose writer finished (its ``complete`` attribute)."""
    if not (path / "zarr.json").is_file():
        return False
    return bool(zarr.open_group(path, mode="r", zarr_format=3).attrs.get("complete"))


def zarr_array(group: zarr.Group, name: str) -> zarr.Array:
    """The array ``name`` of ``group``; ``StoreError`` when it is not an array."""
    array = group[name]
    if not isinstance(array, zarr.Array):
        raise StoreError(f"{group.store_path}/{name} is not an array")
    return array


def widen(group: zarr.Group, path: Path, name: str, dtype: np.dtype) -> zarr.Array:
    """Rewrite array ``name`` of ``group`` (a folder at ``path``) in the wider ``dtype``."""
    old = zarr_array(group, name)
    wide = group.create_array(
        f"{name}-wide", shape=old.shape, dtype=dtype, chunks=chunks(old.shape, dtype)
    )
    for start in range(0, old.shape[0], wide.chunks[0]):
        wide[start : start + wide.chunks[0]] = old[start : start + wide.chunks[0]]
    shutil.rmtree(path / name)
    os.replace(path / f"{name}-wide", path / name)
    return zarr_array(group, name)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of the file at ``path``, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(HASH_BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()
