"""Verified stores: manifests, corruption caught at open or verification, ``--verify``, the
verified marker, content hashes, read errors, interrupted and killed ingests."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from physicsml.cli import ingest as cli_ingest
from physicsml.cli.ingest import main as ingest_main
from physicsml.data import integrity
from physicsml.data.files import Interrupted, check_interrupted, interrupt
from physicsml.data.ingest import ingest
from physicsml.data.integrity import write_manifest
from physicsml.data.sources import open_source
from physicsml.data.store import AtomsStore
from physicsml.data.store_format import StoreError
from tests.data.test_prebatch import make_datamodule
from tests.structures import ETHANOL

ENERGY = ("structures/energy", "c/0")
FORCES = ("atoms/forces", "c/0/0")
EDGES = ("neighbours/*/edge_index", "c/0/0")
AT_OPEN = ("deleted", "truncated")
AT_VERIFICATION = ("overwritten", "zeroed")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 ethanol frames with the neighbour lists that training uses (cut-off 5 Å) cached."""
    path = tmp_path_factory.mktemp("pristine") / "ethanol.zarr"
    ingest(ETHANOL, path, index=":200")
    AtomsStore(path).neighbours(5.0, progress=False)
    return path


@pytest.fixture
def store(pristine: Path, tmp_path: Path) -> Path:
    """A copy of the pristine store, to corrupt."""
    path = tmp_path / "ethanol.zarr"
    shutil.copytree(pristine, path)
    return path


def chunk_file(store: Path, array: str, key: str) -> tuple[str, Path]:
    """The array's name in the store and its chunk file (``*`` is the neighbour table)."""
    (folder,) = store.glob(array)
    return folder.relative_to(store).as_posix(), folder / key


def corrupt(path: Path, kind: str) -> None:
    """Delete, truncate, overwrite 64 bytes of, or zero the file at ``path``."""
    size = path.stat().st_size
    if kind == "deleted":
        path.unlink()
    elif kind == "truncated":
        os.truncate(path, size // 2)
    else:
        data = bytearray(path.read_bytes())
        if kind == "overwritten":
            data[20:84] = np.random.default_rng(0).bytes(64)
        else:
            data[:] = bytes(size)
        assert len(data) == size
        path.write_bytes(bytes(data))


def expected(store: Path, array: str, key: str, kind: str) -> str:
    problem = {
        "deleted": "missing",
        "truncated": "bytes, the manifest records",
        "overwritten": "content hash differs from the manifest (corrupted)",
        "zeroed": "content hash differs from the manifest (corrupted)",
    }[kind]
    return re.escape(f"store {store}: array {array} chunk {key}: ") + f".*{re.escape(problem)}"


@pytest.mark.parametrize("kind", AT_OPEN + AT_VERIFICATION)
@pytest.mark.parametrize("target", [ENERGY, FORCES, EDGES], ids=["energy", "forces", "edges"])
def test_corruption_is_caught_at_open_or_verification(
    store: Path, kind: str, target: tuple[str, str]
) -> None:
    array, path = chunk_file(store, *target)
    corrupt(path, kind)
    message = expected(store, array, target[1], kind)
    if kind in AT_OPEN:
        with pytest.raises(StoreError, match=message):
            AtomsStore(store)
        return
    opened = AtomsStore(store)  # the same sizes: only the hashes tell
    with pytest.raises(StoreError, match=message):
        opened.verify()
    with pytest.raises(StoreError, match=message):
        open_source(store, store.parent / "cache")  # training's first use verifies


@pytest.mark.parametrize("kind", AT_OPEN + AT_VERIFICATION)
@pytest.mark.parametrize("target", [ENERGY, EDGES], ids=["energy", "edges"])
def test_the_datamodule_refuses_a_corrupted_store(
    store: Path, tmp_path: Path, kind: str, target: tuple[str, str]
) -> None:
    array, path = chunk_file(store, *target)
    corrupt(path, kind)
    with pytest.raises(StoreError, match=expected(store, array, target[1], kind)):
        make_datamodule(store, tmp_path / "cache", None)


@pytest.mark.parametrize(
    ("kind", "target"),
    [("deleted", ENERGY), ("truncated", EDGES), ("overwritten", FORCES), ("zeroed", EDGES)],
)
def test_training_a_corrupted_store_is_a_one_line_error(
    store: Path, tmp_path: Path, kind: str, target: tuple[str, str]
) -> None:
    array, path = chunk_file(store, *target)
    corrupt(path, kind)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "physicsml.cli.train",
            f"datamodule.dataset={store}",
            f"datamodule.cache_dir={tmp_path / 'cache'}",
            "trainer.max_epochs=1",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("physicsml-train")]
    assert len(lines) == 1, done.stderr  # (Lightning may warn about srun before it)
    assert re.match("physicsml-train: error: " + expected(store, array, target[1], kind), lines[0])
    assert not list(tmp_path.rglob("metrics.json")) and not list(tmp_path.rglob("model.pt"))


def test_a_corrupted_neighbour_cache_is_named_and_computed_again_once_deleted(
    store: Path, pristine: Path
) -> None:
    array, path = chunk_file(store, *EDGES)
    corrupt(path, "zeroed")
    table = path.parents[3]
    with pytest.raises(StoreError, match=f"{array} chunk c/0/0: .*a cache: delete {table} to"):
        AtomsStore(store).verify()
    shutil.rmtree(table)
    assert AtomsStore(store).verify() == 0  # the store itself was verified before
    edges = AtomsStore(store).neighbours(5.0, progress=False).edge_index
    np.testing.assert_array_equal(edges, AtomsStore(pristine).neighbours(5.0).edge_index)


def test_verify_cli(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ingest_main(["--verify", str(store), "--quiet"])
    manifests = AtomsStore(store).manifests()
    arrays = sum(len(m.arrays) for m in manifests)
    assert len(manifests) == 2 and arrays > 10  # the store and its neighbour table
    chunks = sum(len(files) - 1 for m in manifests for files in m.arrays.values())
    assert capsys.readouterr().out == f"{store}: {arrays} arrays, {chunks} chunks verified\n"
    array, path = chunk_file(store, *FORCES)
    corrupt(path, "overwritten")
    with pytest.raises(SystemExit) as stop:
        ingest_main(["--verify", str(store), "--quiet"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        f"physicsml-ingest: error: store {store}: array atoms/forces chunk c/0/0: content hash "
        "differs from the manifest (corrupted)\n"
    )
    with pytest.raises(SystemExit) as stop:
        ingest_main(["--verify", str(store), "in.xyz", "out.zarr"])
    assert stop.value.code == 2


def count_hashes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files that ``integrity`` hashes from now on."""
    hashed: list[Path] = []
    real = integrity.file_sha256

    def counting(path: Path) -> str:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(integrity, "file_sha256", counting)
    return hashed


def test_a_verified_store_is_not_hashed_again_until_a_chunk_changes(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed = count_hashes(monkeypatch)
    manifests = AtomsStore(store).manifests()
    files = [sum(len(f) for f in m.arrays.values()) for m in manifests]  # store, neighbours
    assert AtomsStore(store).verify() == sum(files) == len(hashed)  # a copy: new ctimes
    assert AtomsStore(store).verify() == 0 and len(hashed) == sum(files)
    _, path = chunk_file(store, *ENERGY)
    path.write_bytes(path.read_bytes())  # the same bytes, written again
    assert AtomsStore(store).verify() == files[0] == len(hashed) - sum(files)
    assert AtomsStore(store).verify() == 0
    assert AtomsStore(store).verify(force=True) == sum(files)
    stat = path.stat()
    corrupt(path, "zeroed")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the same mtime: ctime tells
    with pytest.raises(StoreError, match="array structures/energy chunk c/0: content hash"):
        AtomsStore(store).verify()


def test_a_chunk_not_in_the_manifest_is_refused(store: Path) -> None:
    array, path = chunk_file(store, *FORCES)
    shutil.copy(path, path.with_name("1"))
    with pytest.raises(StoreError, match="array atoms/forces chunk c/0/1: not in the manifest"):
        AtomsStore(store).verify()


def test_a_chunk_never_reads_as_fill_value_or_decompressor_error(store: Path) -> None:
    _, path = chunk_file(store, *ENERGY)
    opened = AtomsStore(store)
    lazy = opened.open_arrays()
    corrupt(path, "overwritten")  # after the checks at open, before any verification
    for read in (opened.load, lambda: lazy.structure_props["energy"][:5]):
        with pytest.raises(StoreError, match="array structures/energy chunk c/0: content hash"):
            read()
    corrupt(path, "truncated")
    write_manifest(store)  # a manifest that agrees with the broken chunk: only the read fails
    with pytest.raises(StoreError, match=r"array structures/energy: cannot be read \(.*Zstd"):
        AtomsStore(store).load()


def test_a_store_without_manifest_asks_to_ingest_again(store: Path) -> None:
    root = zarr.open_group(store, mode="a", zarr_format=3)
    root.attrs["schema_version"] = 1  # as physicsml wrote stores before manifests
    (store / "manifest.json").unlink()
    with pytest.raises(StoreError, match=r"schema_version 1.*ingest it again, physicsml-ingest"):
        AtomsStore(store)


@pytest.mark.parametrize("content", [None, "[1, 2]"])
def test_a_missing_or_garbled_manifest_is_refused(store: Path, content: str | None) -> None:
    manifest = store / "manifest.json"
    if content is None:
        manifest.unlink()
    else:
        manifest.write_text(content)
    problem = "is missing or unreadable" if content is None else "is not a version 1"
    with pytest.raises(StoreError, match=f"store {store}: manifest.json {problem}.*ingest"):
        AtomsStore(store)


def test_an_outdated_cached_ingest_is_redone(tmp_path: Path) -> None:
    source = tmp_path / "ethanol.extxyz"
    source.write_text("".join(ETHANOL.read_text().splitlines(keepends=True)[: 11 * 20]))
    first = open_source(source, tmp_path / "cache")
    root = zarr.open_group(first.path, mode="a", zarr_format=3)
    root.attrs["schema_version"] = 1
    (first.path / "manifest.json").unlink()
    again = open_source(source, tmp_path / "cache")
    assert again.path == first.path and again.num_structures == 20


def test_content_hash_identifies_the_data(tmp_path: Path) -> None:
    first = ingest(ETHANOL, tmp_path / "a.zarr", index=":50").store
    time.sleep(1.1)  # another creation time in the attributes
    second = ingest(ETHANOL, tmp_path / "b.zarr", index=":50").store
    other = ingest(ETHANOL, tmp_path / "c.zarr", index=":51").store
    assert first.attrs["source"]["created"] != second.attrs["source"]["created"]
    assert first.content_hash() == second.content_hash() != other.content_hash()
    assert len(first.content_hash()) == 64
    first.neighbours(5.0, progress=False)  # a cache is not content
    assert AtomsStore(first.path).content_hash() == second.content_hash()


def run_ingest_until_written(tmp_path: Path, out: Path) -> tuple[subprocess.Popen[str], Path]:
    """Start ``physicsml-ingest`` on 120 000 ethanol frames; return once its temporary store
    exists, with that path. The write takes seconds, so a signal sent then arrives while it
    runs even on a loaded machine (with 30 000 frames it once finished first)."""
    big = tmp_path / "big.extxyz"
    big.write_text(ETHANOL.read_text() * 80)
    process = subprocess.Popen(
        [sys.executable, "-m", "physicsml.cli.ingest", "--quiet", str(big), str(out)],
        stderr=subprocess.PIPE,
        text=True,
    )
    tmp = out.with_name(f"{out.name}.tmp-{process.pid}")
    deadline = time.monotonic() + 120
    while not tmp.exists():
        assert process.poll() is None, "the ingest ended before writing"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    return process, tmp


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_ingest_removes_its_temporary_store(tmp_path: Path, signum: int) -> None:
    out = tmp_path / "out.zarr"
    process, tmp = run_ingest_until_written(tmp_path, out)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert not tmp.exists()  # never a temporary store left behind
    assert process.returncode == 128 + signum, err  # the signal always stops it
    assert err.strip().endswith("stopped, no output written")
    assert not out.exists()


def test_a_signal_is_honoured_at_the_next_check_only() -> None:
    interrupt(signal.SIGTERM, None)  # as the handler physicsml-ingest installs: no raise
    interrupt(signal.SIGINT, None)
    with pytest.raises(Interrupted) as stop:
        check_interrupted()
    assert stop.value.signum == signal.SIGTERM  # the first
    check_interrupted()  # taken: no signal left


def test_a_signal_after_the_rename_still_exits_non_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.zarr"
    real_ingest = ingest

    def ingest_then_signal(*args: Any, **kwargs: Any) -> Any:
        report = real_ingest(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # recorded by the handler, not fatal
        return report

    monkeypatch.setattr(cli_ingest, "ingest", ingest_then_signal)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stop:
        ingest_main(["--quiet", str(ETHANOL), str(out), "--index", ":5"])
    assert stop.value.code == 128 + signal.SIGTERM
    assert "SIGTERM: received after the work was done" in capsys.readouterr().err
    assert AtomsStore(out).num_structures == 5  # complete, so kept
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is uninstalled


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_the_next_ingest_removes_a_killed_ones_temporary_store(tmp_path: Path) -> None:
    out = tmp_path / "out.zarr"
    process, tmp = run_ingest_until_written(tmp_path, out)
    process.kill()
    process.communicate(timeout=60)
    assert tmp.is_dir()  # nothing could clean it
    alive = out.with_name(f"out.zarr.tmp-{os.getppid()}")
    unrelated = tmp_path / f"other.zarr.tmp-{dead_pid()}"
    for path in (alive, unrelated):
        path.mkdir()
    ingest(ETHANOL, out, index=":5")
    assert not tmp.exists() and alive.is_dir() and unrelated.is_dir()
    assert AtomsStore(out).num_structures == 5


def test_a_killed_neighbour_list_writer_is_cleaned_up(store: Path) -> None:
    directory = store / "neighbours"
    stale = directory / f".tmp-0123456789abcdef-{dead_pid()}"
    alive = directory / f".tmp-0123456789abcdef-{os.getppid()}"
    for path in (stale, alive):
        path.mkdir()
    AtomsStore(store).neighbours(4.0, progress=False)
    assert not stale.exists() and alive.is_dir()
