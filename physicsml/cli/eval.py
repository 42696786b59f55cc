"""``physicsml-eval MODEL [MODEL ...] DATA``: a trained potential's (or an ensemble's) errors on
labelled data."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ase.io import write

from physicsml.data.ingest import IngestError
from physicsml.data.sources import default_cache_dir, open_source
from physicsml.data.store_format import StoreError
from physicsml.ensemble import check_compatible, ensemble_members
from physicsml.evaluate import (
    EvaluationError,
    annotated,
    calibration,
    ensemble_mean,
    error_table,
    format_calibration,
    format_table,
    plot_reliability,
    predict,
    read_labelled,
)
from physicsml.inference import load_module
from physicsml.saved_model import SavedModelError

USER_ERRORS = (EvaluationError, SavedModelError, StoreError, IngestError)
"""Errors a user fixes from their one-line message (exit status 2)."""


def parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(
        prog="physicsml-eval",
        description="Predict energies, forces (and stresses, for a model that predicts them) "
        "of DATA with MODEL and print their errors (MAE, RMSE) overall, per element, per "
        "structure size and per config_type.",
    )
    p.add_argument(
        "model",
        nargs="+",
        help="a run directory (its model.pt: the best epoch's), a checkpoint or model.pt; "
        "several, or a sweep's directory: an ensemble (mean, spread and its calibration)",
    )
    p.add_argument("data", help="a store, or any file physicsml-ingest reads")
    p.add_argument("--plot", type=Path, help="an ensemble's reliability plot (png)")
    p.add_argument("--out", type=Path, help="write the structures and predictions (extxyz)")
    p.add_argument("--json", type=Path, help="write the error table (JSON)")
    p.add_argument("--batch-size", type=int, default=64, help="structures per batch (64)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``physicsml-eval``; exits with status 2 on user errors."""
    p = parser()
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error(f"--batch-size must be at least 1, got {args.batch_size}")
    try:
        run(args)
    except USER_ERRORS as error:
        print(f"physicsml-eval: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def run(args: argparse.Namespace) -> None:
    """Evaluate ``args.model`` on ``args.data``; write and print what ``args`` ask for."""
    model_files = ensemble_members(args.model[0] if len(args.model) == 1 else args.model)
    members = [load_module(file) for file in model_files]
    check_compatible(members, model_files)
    module, model_file = members[0], model_files[0]
    data = read_labelled(open_source(args.data, default_cache_dir()), module)
    preds = ensemble_mean(
        [predict(m, data.atoms, args.batch_size, progress=not args.quiet) for m in members]
    )
    if args.out is not None:
        write(args.out, annotated(data, preds), format="extxyz")
        print(f"predictions of {len(data.atoms)} structures written to {args.out}")
    if data.energy is None and data.forces is None and data.stress is None:
        if args.out is None:
            raise EvaluationError(
                f"{args.data} has no reference energies or forces to compare with: "
                "pass --out to write the predictions"
            )
        print(f"{args.data} has no reference energies or forces: predictions only")
        return
    table = error_table(data, preds)
    if len(members) > 1:
        print(f"an ensemble of {len(members)} on {args.data} (the members' mean):")
        table["calibration"] = calibration(data, preds)
    else:
        print(f"{describe(model_file)} on {args.data}:")
    print(format_table(table))
    if table.get("calibration"):
        print(format_calibration(table["calibration"]))
    if args.plot is not None:
        if "forces_reliability" not in table.get("calibration", {}):
            raise EvaluationError("--plot needs an ensemble (several models) and reference forces")
        plot_reliability(table["calibration"], args.plot)
        print(f"reliability plot written to {args.plot}")
    if args.json is not None:
        models = [str(f) for f in model_files]
        record = {"model": models[0] if len(models) == 1 else models, **table}
        args.json.write_text(json.dumps(record, indent=2) + "\n")


def describe(model_file: Path) -> str:
    """``model_file``, with the epoch and source a run directory's ``metrics.json`` records."""
    metrics_file = model_file.with_name("metrics.json")
    if model_file.name != "model.pt" or not metrics_file.is_file():
        return str(model_file)
    metrics = json.loads(metrics_file.read_text())
    if "model_epoch" not in metrics:
        return str(model_file)
    return f"{model_file} (epoch {metrics['model_epoch']}: {metrics['model_source']})"


if __name__ == "__main__":
    main()
