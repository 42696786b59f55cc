"""``physicsml-export MODEL OUT``: a trained potential as one file that loads without physicsml."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from physicsml.config.errors import ConfigError
from physicsml.export import DTYPES, FORMATS, ExportError, export_model
from physicsml.saved_model import SavedModelError

USER_ERRORS = (ExportError, SavedModelError, ConfigError)
"""Errors a user fixes from their one-line message (exit status 2)."""


def parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(
        prog="physicsml-export",
        description="Write MODEL as one TorchScript file that torch.jit.load reads without "
        "physicsml: m(positions, atomic_numbers, cell, pbc) -> energy, forces, stress; it "
        "builds its own neighbour list (m.forward_edges takes the edges instead).",
    )
    p.add_argument(
        "model", help="a run directory (its model.pt: the best epoch's), a checkpoint or model.pt"
    )
    p.add_argument("out", type=Path, help="the file to write (e.g. model.ts)")
    p.add_argument("--format", choices=FORMATS, default="torchscript", help="(torchscript)")
    p.add_argument("--dtype", choices=list(DTYPES), default="float32", help="(float32)")
    return p


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``physicsml-export``; exits with status 2 on user errors."""
    args = parser().parse_args(argv)
    try:
        info = export_model(args.model, args.out, args.format, args.dtype)
    except USER_ERRORS as error:
        print(f"physicsml-export: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(
        f"{args.out}: {args.format} potential, {info['dtype']}, cut-off {info['cut_off']:g} Å, "
        f"elements {info['elements']}"
    )


if __name__ == "__main__":
    main()
