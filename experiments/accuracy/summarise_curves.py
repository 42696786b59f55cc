"""Per-epoch validation curves of ours and the peers, side by side (issue 15).

Reads our ``bench_ours.py`` lines (``run_ours_curves.sh``: one line per run with per-epoch
validation metrics) and the peers' per-epoch records (``curves_mace_torch.jsonl``,
``curves_physicsml.jsonl``: one line per epoch), and prints markdown tables:

- per molecule, model, implementation and variant: validation energy and force errors (mean ±
  sd over seeds) at the chosen epochs, and the median epoch time;
- per seed, whether ours is at or below mace-torch's force MAE and physicsml's energy error;
- at equal wall-clock time: each of our variants' error at the time the peer needed for its
  last epoch (training time only, validation excluded on every side).

usage: python experiments/accuracy/summarise_curves.py results/ours_curves.jsonl \\
           results/curves_mace_torch.jsonl results/curves_physicsml.jsonl [--epochs 5 10 20 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

Curve = list[dict[str, Any]]
"""One run's per-epoch records, epoch 1 first."""

METRICS = {
    "E MAE meV/atom": "val_energy_mae_meV_per_atom",
    "F MAE meV/Å": "val_forces_mae_meV_per_A",
    "E RMSE meV/atom": "val_energy_rmse_meV_per_atom",
    "F RMSE meV/Å": "val_forces_rmse_meV_per_A",
}


def ours_curve(line: dict[str, Any]) -> tuple[tuple[str, str, str, str, int], Curve]:
    """Our bench line as ((data, model, impl, variant, seed), per-epoch records)."""
    data = Path(line["data"]).stem
    variant = line["tag"].removeprefix(f"ours_{data}_{line['model']}_").rsplit("_s", 1)[0]
    atoms = line["metrics"]["val"]["n_atoms"] / line["metrics"]["val"]["n_structures"]
    curve, elapsed = [], 0.0
    for k, epoch in enumerate(line["per_epoch"], start=1):
        elapsed += epoch["train_s"]
        curve.append(
            {
                "epoch": k,
                "epoch_s": epoch["train_s"],
                "elapsed_s": elapsed,
                "val_energy_mae_meV_per_atom": 1e3 * epoch["val_energy_per_atom_mae"],
                "val_forces_mae_meV_per_A": 1e3 * epoch["val_forces_mae"],
                # one molecule per file: every structure has the same number of atoms
                "val_energy_rmse_meV_per_atom": 1e3 * epoch["val_energy_rmse"] / atoms,
                "val_forces_rmse_meV_per_A": 1e3 * epoch["val_forces_rmse"],
            }
        )
    return (data, line["model"], "ours", variant, int(line["seed"])), curve


def read_curves(paths: list[str]) -> dict[tuple[str, str, str, str, int], Curve]:
    """All runs, keyed by (data, model, implementation, variant, seed)."""
    runs: dict[tuple[str, str, str, str, int], Curve] = defaultdict(list)
    for path in paths:
        for text in Path(path).read_text().splitlines():
            if not text.strip():
                continue
            line = json.loads(text)
            if "per_epoch" in line:
                key, curve = ours_curve(line)
                runs[key] = curve
            else:
                key = (line["data"], line["model"], line["impl"], line.get("variant", "-"),
                       int(line["seed"]))  # fmt: skip
                runs[key].append(line)
    for curve in runs.values():
        curve.sort(key=lambda r: r["epoch"])
    return runs


def mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}"


def at_epoch(curve: Curve, epoch: int, key: str) -> float | None:
    for record in curve:
        if record["epoch"] == epoch and record.get(key) is not None:
            return float(record[key])
    return None


def epoch_table(runs: dict[tuple[str, str, str, str, int], Curve], epochs: list[int]) -> str:
    """Mean ± sd over seeds at each epoch, per (data, model, implementation, variant)."""
    groups: dict[tuple[str, str, str, str], dict[int, Curve]] = defaultdict(dict)
    for (data, model, impl, variant, seed), curve in runs.items():
        groups[(data, model, impl, variant)][seed] = curve
    header = "| data | model | implementation | variant | seeds | metric | " + " | ".join(
        f"epoch {e}" for e in epochs
    )
    lines = [header + " | s/epoch |", "|" + "---|" * (len(epochs) + 7)]
    for (data, model, impl, variant), by_seed in sorted(groups.items()):
        seconds = [r["epoch_s"] for c in by_seed.values() for r in c[1:] if r.get("epoch_s")]
        for label, key in METRICS.items():
            cells = []
            for e in epochs:
                values = [at_epoch(c, e, key) for c in by_seed.values()]
                cells.append(mean_sd([v for v in values if v is not None]))
            if all(c == "-" for c in cells):
                continue
            time_cell = f"{statistics.median(seconds):.1f}" if seconds else "-"
            lines.append(
                f"| {data} | {model} | {impl} | {variant} | {sorted(by_seed)} | {label} | "
                + " | ".join(cells)
                + f" | {time_cell} |"
            )
    return "\n".join(lines)


def goal_table(runs: dict[tuple[str, str, str, str, int], Curve], epochs: list[int]) -> str:
    """Per seed: our force MAE vs mace-torch's, our energy error vs physicsml's."""
    lines = [
        "| data | model | variant | seed | epoch | F MAE ours / mace-torch | E MAE ours / "
        "physicsml | E RMSE ours / physicsml |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (data, model, impl, variant, seed), curve in sorted(runs.items()):
        if impl != "ours":
            continue
        mace = next((c for k, c in runs.items() if k[:3] == (data, model, "mace-torch 0.3.16")
                     and k[4] == seed), None)  # fmt: skip
        peer = next((c for k, c in runs.items() if k[:3] == (data, model, "physicsml 0.6.0")
                     and k[4] == seed), None)  # fmt: skip
        for e in epochs:
            cells = []
            for other, key in (
                (mace, "val_forces_mae_meV_per_A"),
                (peer, "val_energy_mae_meV_per_atom"),
                (peer, "val_energy_rmse_meV_per_atom"),
            ):
                ours, theirs = at_epoch(curve, e, key), at_epoch(other or [], e, key)
                if ours is None or theirs is None:
                    cells.append("-")
                else:
                    mark = "**≤**" if ours <= theirs else ">"
                    cells.append(f"{ours:.1f} {mark} {theirs:.1f}")
            if any(c != "-" for c in cells):
                lines.append(
                    f"| {data} | {model} | {variant} | {seed} | {e} | " + " | ".join(cells)
                )
    return "\n".join(line + " |" if not line.endswith("|") else line for line in lines)


def count_table(runs: dict[tuple[str, str, str, str, int], Curve]) -> str:
    """Per run of ours: in how many epochs it is at or below each peer's run of the same seed."""
    lines = [
        "| data | model | variant | seed | F MAE ≤ mace-torch (epochs) | E MAE ≤ mace-torch "
        "(epochs) | E RMSE ≤ physicsml (epochs) | last epoch: E MAE ours / physicsml |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def peer(data: str, model: str, impl: str, seed: int) -> Curve:
        return next(
            (c for k, c in runs.items() if k[:3] == (data, model, impl) and k[4] == seed), []
        )

    for (data, model, impl, variant, seed), curve in sorted(runs.items()):
        if impl != "ours":
            continue
        mace, physicsml = (
            peer(data, model, p, seed) for p in ("mace-torch 0.3.16", "physicsml 0.6.0")
        )
        cells = []
        for other, key in (
            (mace, "val_forces_mae_meV_per_A"),
            (mace, "val_energy_mae_meV_per_atom"),
            (physicsml, "val_energy_rmse_meV_per_atom"),
        ):
            pairs = [(at_epoch(curve, r["epoch"], key), r.get(key)) for r in other]
            pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
            cells.append(f"{sum(a <= b for a, b in pairs)} / {len(pairs)}" if pairs else "-")
        last = physicsml[-1]["epoch"] if physicsml else None
        ours_e = at_epoch(curve, last, "val_energy_mae_meV_per_atom") if last else None
        theirs_e = physicsml[-1].get("val_energy_mae_meV_per_atom") if physicsml else None
        cells.append(f"{ours_e:.1f} / {theirs_e:.1f}" if ours_e and theirs_e else "-")
        lines.append(f"| {data} | {model} | {variant} | {seed} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def error_at_time(curve: Curve, seconds: float, key: str) -> tuple[float, int] | None:
    """The last completed epoch's error within ``seconds`` of training time."""
    done = [r for r in curve if r["elapsed_s"] <= seconds * (1 + 1e-9) and r.get(key) is not None]
    return (float(done[-1][key]), int(done[-1]["epoch"])) if done else None


def wall_clock_table(runs: dict[tuple[str, str, str, str, int], Curve]) -> str:
    """Our error at the training time each peer needed for all its epochs, per seed."""
    lines = [
        "| data | model | peer | peer's time s (epochs) | peer F MAE | ours variant | ours "
        "epoch at that time | ours F MAE | ours / peer |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (data, model, impl, _, seed), peer in sorted(runs.items()):
        if impl == "ours" or not peer or peer[-1].get("elapsed_s") is None:
            continue
        budget = float(peer[-1]["elapsed_s"])
        peer_error = at_epoch(peer, peer[-1]["epoch"], "val_forces_mae_meV_per_A")
        for (d, m, i, variant, s), ours in sorted(runs.items()):
            if (d, m, i, s) != (data, model, "ours", seed):
                continue
            found = error_at_time(ours, budget, "val_forces_mae_meV_per_A")
            if found is None or peer_error is None:
                continue
            error, epoch = found
            lines.append(
                f"| {data} | {model} | {impl} s{seed} | {budget:.0f} ({peer[-1]['epoch']}) | "
                f"{peer_error:.1f} | {variant} | {epoch} | {error:.1f} | "
                f"{error / peer_error:.2f}x |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+")
    parser.add_argument("--epochs", type=int, nargs="+", default=[5, 10, 20, 30])
    args = parser.parse_args()
    runs = read_curves(args.results)
    print(epoch_table(runs, args.epochs))
    print()
    print(goal_table(runs, args.epochs))
    print()
    print(count_table(runs))
    print()
    print(wall_clock_table(runs))


if __name__ == "__main__":
    main()
