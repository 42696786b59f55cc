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
        description="Write MODEL as one file that loads without physicsml. torchscript: "
        "torch.jit.load(OUT)(positions, atomic_numbers, cell, pbc) -> energy, forces, stress, "
        "with its own neighbour list (m.forward_edges takes the edges instead). aoti: an "
        "AOTInductor package (.pt2; compiled with the system's C++ compiler), "
        "torch._inductor.aoti_load_package(OUT)(positions, atomic_numbers, edge_index, "
        "cell_shift, cell, pbc) -> energy, forces, stress.",
    )
    p.add_argument(
        "model", help="a run directory (its model.pt: the best epoch's), a checkpoint or model.pt"
    )
    p.add_argument("out", type=Path, help="the file to write (e.g. model.ts, model.pt2)")
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
