"""Side-by-side markdown tables of ``init_stats_ours.py`` and ``init_stats_peer.py`` results:
mean over the seeds of each quantity, ours / peer and their ratio.

usage: python experiments/accuracy/compare_init_stats.py OURS.json PEER.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

BLOCK_ORDER = [
    "embedding",
    "radial_basis",
    "radial_mlp.0",
    "message.0",
    "contraction.0",
    "product.0",
    "readout.0",
    "radial_mlp.1",
    "message.1",
    "skip.1",
    "contraction.1",
    "product.1",
    "readout.1",
    "node_energy_unscaled",
]


def mean_over_seeds(runs: list[dict[str, Any]], *keys: str) -> float:
    """Mean over the seeds' runs of ``run[keys[0]][keys[1]]...`` (the RMS of a summary)."""
    values = []
    for run in runs:
        value: Any = run
        for key in keys:
            value = value[key]
        values.append(value["rms"] if isinstance(value, dict) else value)
    return statistics.fmean(values)


def row(label: str, ours: float, peer: float, digits: int = 4) -> str:
    """One table row: the two values and ours / peer."""
    ratio = f"{ours / peer:.2f}" if peer else "-"
    return f"| {label} | {ours:.{digits}g} | {peer:.{digits}g} | {ratio} |"


def tables(ours: dict[str, Any], peer: dict[str, Any]) -> str:
    """The markdown tables comparing the two result files."""
    a, b = ours["runs"], peer["runs"]
    seeds = [r["seed"] for r in a]
    lines = [
        f"Seeds {seeds}; values are means over the seeds.",
        "",
        "| block output (RMS; 0e and l>0 parts) | ours | mace-torch | ours / mace-torch |",
        "|---|---|---|---|",
    ]
    for name in BLOCK_ORDER:
        for part in ("all", "0e", "l>0"):
            if all(part in r["blocks"].get(name, {}) for r in a + b):
                label = name if part == "all" else f"{name} [{part}]"
                lines.append(
                    row(
                        label,
                        mean_over_seeds(a, "blocks", name, part),
                        mean_over_seeds(b, "blocks", name, part),
                    )
                )
    lines += ["", "| output | ours | mace-torch | ours / mace-torch |", "|---|---|---|---|"]
    lines.append(row("parameters", a[0]["num_parameters"], b[0]["num_parameters"], 6))
    lines.append(
        row(
            "initial loss 1 MSE(E) + 10 MSE(F)",
            *(mean_over_seeds(x, "loss") for x in (a, b)),
        )
    )
    for key in a[0]["outputs"]:
        lines.append(row(key, *(mean_over_seeds(x, "outputs", key) for x in (a, b))))
    lines += [
        "",
        "| parameter group | grad norm ours | grad norm mace-torch | ratio | first Adam step: "
        "ΔF RMS meV/Å ours | mace-torch | ratio | ΔE meV/atom ours | mace-torch | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for group in sorted(a[0]["groups"]):

        def cells(*keys: str) -> str:
            x, y = mean_over_seeds(a, *keys), mean_over_seeds(b, *keys)
            return f"{x:.3g} | {y:.3g} | {x / y:.2f}" if y else f"{x:.3g} | {y:.3g} | -"

        lines.append(
            f"| {group} | "
            + cells("groups", group, "grad_norm")
            + " | "
            + cells("adam_step", group, "d_forces_meV_per_A")
            + " | "
            + cells("adam_step", group, "d_energy_meV_per_atom")
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ours")
    p.add_argument("peer")
    args = p.parse_args()
    with open(args.ours) as f, open(args.peer) as g:
        print(tables(json.load(f), json.load(g)))


if __name__ == "__main__":
    main()
