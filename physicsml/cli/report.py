"""``physicsml-report PATH``: summarise a run or a sweep directory without a browser.

Prints one row per job (overrides, status, best and final validation energy/force MAE, epochs,
wall time) and writes PNG plots into ``PATH/report/``: the learning curves of every job and,
per finished job, predicted vs reference energies and forces on its whole validation set.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from physicsml.lightning.callbacks import GPA_PER_EV_PER_A3

ERROR_FILE = "error.txt"
"""Written into a job's directory when the job failed (its exception, on one line)."""

CURVES = ("train_loss", "val_loss", "val_energy_mae", "val_forces_mae")
failed_jobs: list[str] = []
"""Names of the failed jobs of the last multirun of this process (set by ``SweepSummary``)."""


@dataclass
class Job:
    """One run directory: its overrides, metrics and learning curves."""

    dir: Path
    overrides: list[str]
    metrics: dict[str, Any] | None
    error: str | None
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.metrics is not None and self.error is None


def load_job(job_dir: Path) -> Job:
    """Read a run directory (``metrics.json``, ``error.txt``, ``csv/metrics.csv``, overrides)."""
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    metrics_file, error_file = job_dir / "metrics.json", job_dir / ERROR_FILE
    return Job(
        dir=job_dir,
        overrides=[str(o) for o in overrides or []],
        metrics=json.loads(metrics_file.read_text()) if metrics_file.is_file() else None,
        error=error_file.read_text().strip() if error_file.is_file() else None,
        curves=read_curves(job_dir / "csv"),
    )


def find_jobs(path: Path) -> list[Job]:
    """The run at ``path``, or the jobs of the sweep at ``path`` sorted by job number."""
    markers = ("metrics.json", ERROR_FILE, "config.yaml", ".hydra")
    if any((path / m).exists() for m in markers) and not (path / "multirun.yaml").exists():
        return [load_job(path)]
    dirs = [d for d in path.iterdir() if d.is_dir() and any((d / m).exists() for m in markers)]
    dirs.sort(key=lambda d: (len(d.name), d.name))
    return [load_job(d) for d in dirs]


def read_curves(csv_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{metric: [(epoch, value), ...]}`` of the epoch-level metrics a CSVLogger wrote into
    ``csv_dir``, including those of earlier attempts of a resumed run (``metrics.before-N.csv``)."""
    files = sorted(csv_dir.glob("metrics.before-*.csv"), key=lambda p: int(p.stem.split("-")[-1]))
    values: dict[str, dict[int, float]] = {}
    for path in [*files, csv_dir / "metrics.csv"]:
        if not path.is_file():
            continue
        with path.open() as fh:
            for row in csv.DictReader(fh):
                for key in CURVES:
                    if row.get(key) and row.get("epoch"):
                        values.setdefault(key, {})[int(row["epoch"]) + 1] = float(row[key])
    return {key: sorted(points.items()) for key, points in values.items()}


def varying_overrides(jobs: list[Job]) -> list[list[str]]:
    """Each job's overrides, keeping only those that differ between jobs (all for one job)."""
    lists = [[o for o in j.overrides if not o.startswith("hydra")] for j in jobs]
    if len(lists) < 2:
        return lists
    common = set.intersection(*(set(x) for x in lists))
    return [[o for o in x if o not in common] for x in lists]


def _fmt(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4g}"


def job_row(job: Job, overrides: list[str]) -> dict[str, str]:
    """The table row of a job: best (lowest) and final value of each validation MAE."""
    row = {"job": job.dir.name, "overrides": " ".join(overrides) or "-"}
    row["status"] = "ok" if job.ok else ("failed" if job.error else "incomplete")
    for name in ("energy", "forces", "stress"):
        curve = [v for _, v in job.curves.get(f"val_{name}_mae", [])]
        final = (job.metrics or {}).get(f"val_{name}_mae", curve[-1] if curve else None)
        if name == "stress":  # eV/Å³ -> GPa; no column for runs without stress
            if final is None:
                continue
            curve = [v * GPA_PER_EV_PER_A3 for v in curve]
            final, name = final * GPA_PER_EV_PER_A3, "stress (GPa)"
        row[f"best {name} MAE"] = _fmt(min(curve) if curve else final)
        row[f"final {name} MAE"] = _fmt(final)
    metrics = job.metrics or {}
    row["epochs"] = str(
        metrics.get("epoch", max((e for e, _ in job.curves.get("val_loss", [])), default="-"))
    )
    wall = metrics.get("wall_time_s")
    row["wall time"] = "-" if wall is None else f"{wall:.0f} s"
    return row


def format_table(rows: list[dict[str, str]]) -> str:
    """A Markdown table of ``rows`` ("-" where a row lacks a column of another)."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    rows = [{k: r.get(k, "-") for k in keys} for r in rows]
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in keys}
    lines = [
        "| " + " | ".join(k.ljust(widths[k]) for k in keys) + " |",
        "| " + " | ".join("-" * widths[k] for k in keys) + " |",
    ]
    lines += ["| " + " | ".join(r[k].ljust(widths[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def plot_learning_curves(jobs: list[Job], labels: list[str], path: Path) -> None:
    """One panel per metric in ``CURVES``, one line per job."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.5))
    for ax, key in zip(axes, CURVES, strict=True):
        for job, label in zip(jobs, labels, strict=True):
            points = job.curves.get(key, [])
            if points:
                ax.plot(*zip(*points, strict=True), marker=".", label=label)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.set_yscale("log")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 3) or 1, fontsize="small")
    fig.tight_layout(rect=(0, 0.06 + 0.04 * ((len(names) - 1) // 3), 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def validation_predictions(job_dir: Path) -> tuple[int, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The number of structures of the job's validation split, and ``{name: (reference,
    predicted)}`` for energy and forces on all of them, with the model saved in the run
    directory."""
    from ase import Atoms

    from physicsml.data.store import AtomsStore
    from physicsml.inference import load_module, predict_atoms

    split = json.loads((job_dir / "split.json").read_text())["validation"]
    data = AtomsStore(split["store"]).load()
    indices = split["indices"]
    atoms = []
    for k in indices:
        lo, hi = data.offsets[k], data.offsets[k + 1]
        atoms.append(
            Atoms(data.numbers[lo:hi], data.positions[lo:hi], cell=data.cell[k], pbc=data.pbc[k])
        )
    predicted = predict_atoms(load_module(job_dir), atoms)
    out = {}
    if "energy" in predicted and "energy" in data.structure_props:
        ref = np.asarray(data.structure_props["energy"])[indices]
        out["energy"] = (ref.ravel(), np.asarray(predicted["energy"]).ravel())
    if "forces" in predicted and "forces" in data.atom_props:
        forces = data.atom_props["forces"]
        ref_f = np.concatenate([forces[data.offsets[k] : data.offsets[k + 1]] for k in indices])
        out["forces"] = (ref_f.ravel(), np.concatenate(predicted["forces"]).ravel())
    return len(indices), out


def plot_parity(pairs: dict[str, tuple[np.ndarray, np.ndarray]], title: str, path: Path) -> None:
    """Predicted vs reference, one panel per quantity, with the MAE in each title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = {"energy": "eV", "forces": "eV/Å"}
    fig, axes = plt.subplots(1, len(pairs), figsize=(4 * len(pairs), 4), squeeze=False)
    for ax, (name, (ref, pred)) in zip(axes[0], pairs.items(), strict=True):
        lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], color="grey", lw=1)
        ax.scatter(ref, pred, s=4, alpha=0.5)
        ax.set_xlabel(f"reference {name} ({units.get(name, '')})")
        ax.set_ylabel(f"predicted {name}")
        ax.set_title(f"{name}: MAE {np.abs(pred - ref).mean():.3g} {units.get(name, '')}")
        ax.locator_params(nbins=5)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(path: Path, out_dir: Path | None = None, plots: bool = True) -> str:
    """Write the plots (unless ``plots`` is false) and return the table for a run or sweep."""
    jobs = find_jobs(path)
    if not jobs:
        raise FileNotFoundError(f"{path}: no run or sweep jobs found")
    overrides = varying_overrides(jobs)
    table = format_table([job_row(j, o) for j, o in zip(jobs, overrides, strict=True)])
    failures = [f"job {j.dir.name} failed: {j.error}" for j in jobs if j.error]
    table = "\n".join([table, *failures])
    if plots:
        out_dir = out_dir or path / "report"
        out_dir.mkdir(parents=True, exist_ok=True)
        labels = [
            f"{j.dir.name}: {' '.join(o)}" if o else j.dir.name
            for j, o in zip(jobs, overrides, strict=True)
        ]
        plot_learning_curves(jobs, labels, out_dir / "learning_curves.png")
        for job, label in zip(jobs, labels, strict=True):
            if job.ok and (job.dir / "split.json").is_file():
                try:
                    count, pairs = validation_predictions(job.dir)
                except (OSError, ValueError, RuntimeError, KeyError) as exc:
                    print(f"physicsml-report: no parity plot for {job.dir}: {exc}".split("\n")[0])
                    continue
                title = f"{label}\nall {count} validation structures"
                plot_parity(pairs, title, out_dir / f"parity_{job.dir.name}.png")
        (out_dir / "table.md").write_text(table + "\n")
    return table


class SweepSummary(Callback):
    """Hydra callback: after a multirun, print which jobs succeeded and which failed (and why)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = find_jobs(sweep_dir) if sweep_dir.is_dir() else []
        failed = [j for j in jobs if not j.ok]
        print(
            f"physicsml-train: sweep {sweep_dir}: {len(jobs) - len(failed)} of {len(jobs)} jobs "
            "succeeded" + (f", {len(failed)} failed:" if failed else "")
        )
        for job in failed:
            reason = job.error or "no metrics.json (killed or cancelled?)"
            print(f"  job {job.dir.name} ({' '.join(job.overrides)}): {reason}")
            failed_jobs.append(job.dir.name)
        print(f"physicsml-train: summary table and plots: physicsml-report {sweep_dir}")


def main(argv: list[str] | None = None) -> None:
    """Console script ``physicsml-report PATH [--out DIR] [--no-plots]``."""
    parser = argparse.ArgumentParser(prog="physicsml-report", description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path, help="a run directory or a sweep directory")
    parser.add_argument("--out", type=Path, help="where to write the plots (PATH/report)")
    parser.add_argument("--no-plots", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    try:
        table = report(args.path, args.out, plots=not args.no_plots)
    except FileNotFoundError as exc:
        print(f"physicsml-report: error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(table)
    if not args.no_plots:
        print(f"plots in {args.out or args.path / 'report'}")


if __name__ == "__main__":
    main()
