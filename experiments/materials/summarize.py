#!/usr/bin/env python
"""The README's tables from ``elastic.py``'s JSON lines: each calculator against EMT.

    python experiments/materials/summarize.py [experiments/materials/scratch/elastic.jsonl]

Lines of the same calculator and path are merged (later values win); ``emt`` is the reference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

PROPERTIES = [
    ("a0", "a0 (Å)", "{:.4f}"),
    ("B_GPa", "B, E–V fit (GPa)", "{:.1f}"),
    ("C11", "C11 (GPa)", "{:.1f}"),
    ("C12", "C12 (GPa)", "{:.1f}"),
    ("C44", "C44 (GPa)", "{:.1f}"),
    ("npt_a_mean", "a, NPT 300 K (Å)", "{:.4f}"),
]
ERRORS = [
    ("val_energy_mae_meV_per_atom", "E MAE (meV/atom)"),
    ("val_forces_mae_meV_per_A", "F MAE (meV/Å)"),
    ("val_stress_mae_meV_per_A3", "stress MAE (meV/Å³)"),
]


def cell(row: dict[str, Any], reference: dict[str, Any], key: str, fmt: str) -> str:
    """``value (+x.xx %)`` against the reference, or ``value`` for the reference itself."""
    if key not in row:
        return "–"
    text = fmt.format(row[key])
    if row is reference:
        return text
    return f"{text} ({100 * (row[key] / reference[key] - 1):+.2f} %)"


def main(argv: list[str]) -> None:
    """Print the markdown tables."""
    path = Path(argv[0] if argv else "experiments/materials/scratch/elastic.jsonl")
    rows: dict[str, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        name = f"{row['calculator']} {Path(row['path']).name if row['path'] else ''}".strip()
        rows.setdefault(name, {}).update(row)
    reference = rows["emt"]
    names = list(rows)
    print("| property | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for key, label, fmt in PROPERTIES:
        cells = [cell(rows[n], reference, key, fmt) for n in names]
        print(f"| {label} | " + " | ".join(cells) + " |")
    for key, label in ERRORS:
        print(f"| {label} | " + " | ".join(f"{rows[n][key]:.3g}" for n in names) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
