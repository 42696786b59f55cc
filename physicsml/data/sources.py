"""Open a data source: a physicsml store as is, or any other file ingested once into a cache."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from physicsml.data.files import file_sha256, locked
from physicsml.data.ingest import ingest
from physicsml.data.store import AtomsStore
from physicsml.data.store_format import SCHEMA_VERSION

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$PHYSICSML_CACHE``, else ``~/.cache/physicsml`` (as in the datamodule schema)."""
    return Path(os.environ.get("PHYSICSML_CACHE", "~/.cache/physicsml")).expanduser()


def open_source(path: str | Path, cache_dir: str | Path) -> AtomsStore:
    """The store at ``path``, verified; a file (extxyz, ANI HDF5, ...) is ingested into
    ``cache_dir``.

    The cached store is named after the file and its content hash, so an edited file is
    ingested again and concurrent processes (DDP ranks, sweep jobs) build it only once; a
    cached store of an older schema version is ingested again. The first use of a store
    hashes its chunks (``AtomsStore.verify``), later ones only stat them.
    """
    source = Path(path).expanduser()
    if source.is_dir() or not source.exists():
        store = AtomsStore(source)
        store.verify(progress=True)
        return store
    cache = Path(cache_dir).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{source.stem}-{file_sha256(source)[:16]}.zarr"
    with locked(cache / f"{target.name}.lock"):
        if not target.exists() or _schema_version(target) != SCHEMA_VERSION:
            log.info("ingesting %s into %s", source, target)
            ingest(source, target, progress=True, overwrite=True)
    store = AtomsStore(target)
    store.verify(progress=True)
    return store


def _schema_version(store: Path) -> object:
    """The ``schema_version`` attribute of the store at ``store`` (``None`` if unreadable)."""
    try:
        return json.loads((store / "zarr.json").read_bytes())["attributes"]["schema_version"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
