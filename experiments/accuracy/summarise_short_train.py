"""Markdown table of ``short_train.py`` / ``short_train_peer.py`` records: per side and variant,
the training loss and validation MAEs of the last epoch, per seed and their mean.

usage: python experiments/accuracy/summarise_short_train.py RESULTS.jsonl... [--epoch 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any


def table(records: list[tuple[str, dict[str, Any]]], epoch: int) -> str:
    """One row per (file, side, variant) at ``epoch`` from ``(file stem, record)`` pairs."""
    runs: dict[tuple[str, str, str], dict[int, dict[str, Any]]] = defaultdict(dict)
    for stem, r in records:
        if r["epoch"] == epoch:
            runs[(stem, r["side"], r["variant"])][r["seed"]] = r
    lines = [
        f"| file | side | variant | seeds | train loss (epoch {epoch}) per seed | mean | val F MAE "
        "meV/Å per seed | mean | val E MAE meV/atom per seed | mean |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (stem, side, variant), by_seed in runs.items():
        seeds = sorted(by_seed)
        cells = []
        for key, digits in (
            ("train_loss", 2),
            ("val_forces_mae_meV_per_A", 0),
            ("val_energy_mae_meV_per_atom", 1),
        ):
            values = [by_seed[s][key] for s in seeds]
            per_seed = " / ".join(f"{v:.{digits}f}" for v in values)
            cells.append(f"{per_seed} | **{statistics.fmean(values):.{digits}f}**")
        lines.append(f"| {stem} | {side} | {variant} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+")
    p.add_argument("--epoch", type=int, default=5)
    args = p.parse_args()
    records = []
    for path in args.results:
        with open(path) as f:
            records += [(Path(path).stem, json.loads(line)) for line in f if line.strip()]
    print(table(records, args.epoch))


if __name__ == "__main__":
    main()
