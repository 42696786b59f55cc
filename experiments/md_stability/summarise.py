"""Table of ``run.py``'s JSON lines: per model and trajectory length, the fraction of
trajectories that stayed physical and their total-energy drift.

    python experiments/md_stability/summarise.py experiments/md_stability/scratch/results.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path


def table(records: list[dict]) -> str:
    rows = [
        "| model | molecule | trajectories x ps (asked) | stayed physical | simulated ps "
        "| drift meV/atom/ps, median (range) | max abs(E - E0) meV/atom, median | ms/step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, float], list[dict]] = defaultdict(list)
    for record in records:
        groups[(record["model"], record["asked_ps"])].append(record)
    for (model, asked), group in sorted(groups.items()):
        physical = [r for r in group if r["physical"]]
        drifts = [r["drift_meV_per_atom_per_ps"] for r in physical]
        drift = (
            f"{statistics.median(drifts):+.3f} ({min(drifts):+.3f} to {max(drifts):+.3f})"
            if drifts
            else "-"
        )
        change = (
            f"{statistics.median(r['max_energy_change_meV_per_atom'] for r in physical):.2f}"
            if physical
            else "-"
        )
        rows.append(
            f"| {model} | {group[0]['molecule']} | {len(group)} x {asked:g} "
            f"| {len(physical)}/{len(group)} | {sum(r['ps'] for r in group):.1f} | {drift} "
            f"| {change} | {1000 * statistics.median(r['seconds_per_step'] for r in group):.1f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(prog="summarise.py", description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+", help="JSON-lines files of run.py")
    args = parser.parse_args()
    records = [
        json.loads(line)
        for path in args.results
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    print(table(records))
    problems = [r for r in records if not r["physical"]]
    for r in problems:
        print(f"- {r['model']} frame {r['validation_frame']}: {r['problem']} after {r['ps']} ps")


if __name__ == "__main__":
    main()
