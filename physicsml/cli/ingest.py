"""``physicsml-ingest INPUT OUTPUT.zarr``: convert a dataset into a physicsml store."""

from __future__ import annotations

import argparse
import logging
import sys

from physicsml.data.ingest import (
    ANI_ENERGY_KEY,
    ANI_FORCES_KEY,
    ENERGY_UNITS,
    LENGTH_UNITS,
    IngestError,
    ingest,
)
from physicsml.data.store_format import StoreError


def parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(
        prog="physicsml-ingest",
        description="Convert extended XYZ (or anything ase.io reads), ANI-style HDF5 or an "
        "existing store into a physicsml zarr store (energies in eV, lengths in Å).",
    )
    p.add_argument("input", help="input file (or an existing store to copy)")
    p.add_argument("output", help="output store, e.g. data/aspirin.zarr")
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
    """Entry point of ``physicsml-ingest``; exits with status 2 on user errors."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
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
    except (IngestError, StoreError, FileExistsError) as error:
        print(f"physicsml-ingest: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("physicsml-ingest: interrupted; no output written", file=sys.stderr)
        raise SystemExit(130) from None
    print(report.summary())


if __name__ == "__main__":
    main()
