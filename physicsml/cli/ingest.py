"""``physicsml-ingest INPUT OUTPUT.zarr``: convert a dataset into a physicsml store."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from physicsml.data.files import Interrupted, interrupt, take_interrupt
from physicsml.data.ingest import (
    ANI_ENERGY_KEY,
    ANI_FORCES_KEY,
    ENERGY_UNITS,
    LENGTH_UNITS,
    IngestError,
    ingest,
)
from physicsml.data.store import AtomsStore
from physicsml.data.store_format import StoreError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""Signals that stop an ingest, its temporary store removed (exit status 128 + the signal)."""


def parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(
        prog="physicsml-ingest",
        description="Convert extended XYZ (or anything ase.io reads), ANI-style HDF5 or an "
        "existing store into a physicsml zarr store (energies in eV, lengths in Å).",
    )
    p.add_argument("input", nargs="?", help="input file (or an existing store to copy)")
    p.add_argument("output", nargs="?", help="output store, e.g. data/aspirin.zarr")
    p.add_argument(
        "--verify",
        metavar="STORE",
        help="check the hash of every chunk of STORE and its neighbour-list caches, then exit",
    )
    p.add_argument("--format", help="ase.io format of the input (default: guessed)")
    p.add_argument("--index", default=":", help="frames to read, ase.io syntax (default ':')")
    p.add_argument(
        "--energy-unit",
        choices=list(ENERGY_UNITS),
        help="energy unit of the input (default: eV; Hartree for ANI HDF5)",
    )
    p.add_argument(
        "--length-unit", choices=list(LENGTH_UNITS), help="length unit of the input (default Å)"
    )
    p.add_argument(
        "--h5-energy-key", default=ANI_ENERGY_KEY, help="ANI HDF5 dataset stored as 'energy'"
    )
    p.add_argument(
        "--h5-forces-key",
        default=ANI_FORCES_KEY,
        help="ANI HDF5 dataset stored as 'forces' ('' for none)",
    )
    p.add_argument("--skip-bad", action="store_true", help="skip (and count) bad frames")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``physicsml-ingest``; exits with status 2 on user errors, 128 + the
    signal's number when interrupted (SIGINT, SIGTERM), leaving no output unless the signal
    came after the store was complete."""
    # First: a signal at any later point is recorded, and the write stops at its next check.
    handlers = {signum: signal.signal(signum, interrupt) for signum in STOP_SIGNALS}
    try:
        run(argv)
    except Interrupted as error:
        name = signal.Signals(error.signum).name
        print(f"physicsml-ingest: {name}: stopped, no output written", file=sys.stderr)
        raise SystemExit(128 + error.signum) from None
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        take_interrupt()  # none left for a later call in this process (after an error)


def run(argv: list[str] | None) -> None:
    """Parse ``argv``, then verify or convert; a signal that arrives after the output is in
    place still exits with 128 + its number (the output is kept: it is complete)."""
    p = parser()
    args = p.parse_args(argv)
    if args.verify is not None and (args.input or args.output):
        p.error("--verify STORE takes no INPUT and OUTPUT")
    if args.verify is None and not (args.input and args.output):
        p.error("INPUT and OUTPUT are required (or --verify STORE)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        print(verify(args.verify, not args.quiet) if args.verify else convert(args))
    except (IngestError, StoreError, FileExistsError) as error:
        print(f"physicsml-ingest: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    late = take_interrupt()
    if late is not None:
        name = signal.Signals(late).name
        done = f"{args.output} is complete" if args.output else "the store verified"
        print(
            f"physicsml-ingest: {name}: received after the work was done ({done})", file=sys.stderr
        )
        raise SystemExit(128 + late)


def convert(args: argparse.Namespace) -> str:
    """Ingest ``args.input`` into ``args.output``; the one-line summary."""
    report = ingest(
        args.input,
        args.output,
        format=args.format,
        index=args.index,
        energy_unit=args.energy_unit,
        length_unit=args.length_unit,
        h5_energy_key=args.h5_energy_key,
        h5_forces_key=args.h5_forces_key or None,
        skip_bad=args.skip_bad,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    return report.summary()


def verify(path: str, progress: bool) -> str:
    """Hash every chunk of the store at ``path`` (``StoreError`` at the first that differs);
    the one-line summary."""
    store = AtomsStore(path)
    store.verify(force=True, progress=progress)
    manifests = store.manifests()
    arrays = sum(len(m.arrays) for m in manifests)
    chunks = sum(key != "zarr.json" for m in manifests for f in m.arrays.values() for key in f)
    return f"{path}: {arrays} arrays, {chunks} chunks verified"


if __name__ == "__main__":
    main()
