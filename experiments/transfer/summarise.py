"""Markdown tables of the transfer-learning and ensemble experiment from its work directory.

Reads ``evals/<run>.json`` (``physicsml-eval`` of each uracil run's ``model.pt`` on the
held-out frames), each run's ``metrics.json`` and ``train.log``, and the ensembles'
``ensemble_<model>.json`` and ``ensemble_<model>_member<k>.json``.
"""

import json
import re
import sys
from pathlib import Path
from typing import Any

FRAMES = (25, 50, 100)
VARIANTS = {
    "scratch": "from scratch",
    "full": "full fine-tuning",
    "frozen_interactions": "frozen interactions",
    "ssf": "SSF",
    "adapters": "adapters",
    "lora": "LoRA",
}
GOAL_FRAMES = 50
GOAL_RATIO = 0.6
GOAL_SPEARMAN = 0.5


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when the file does not exist."""
    return json.loads(path.read_text()) if path.exists() else None


def forces_mae_meV(table: dict[str, Any]) -> float:
    """The overall force MAE of a ``physicsml-eval`` table, in meV/Å."""
    return 1000.0 * float(table["overall"]["forces_mae_eV_per_A"])


def trainable_count(run_dir: Path) -> str:
    """The trainable parameter count that ``train.log`` reports (all, when nothing is frozen)."""
    log = (run_dir / "train.log").read_text() if (run_dir / "train.log").exists() else ""
    frozen = re.search(r"(\d+) of (\d+) parameters trainable", log)
    if frozen:
        return f"{frozen[1]} of {frozen[2]}"
    wrapped = re.search(r"(\d+) wrapper parameters train, the model's (\d+) stay fixed", log)
    if wrapped:
        return f"{wrapped[1]} added ({wrapped[2]} fixed)"
    return "all"


def learning_curve(work: Path) -> tuple[str, dict[tuple[str, int], float]]:
    """The table of force MAE per variant and frame count, and those MAEs."""
    maes: dict[tuple[str, int], float] = {}
    header = "| variant | trainable | " + " | ".join(f"{n} frames" for n in FRAMES) + " |"
    lines = [header, "|---|---|" + "---|" * len(FRAMES)]
    for variant, label in VARIANTS.items():
        cells = []
        trainable = "-"
        for frames in FRAMES:
            name = f"uracil{frames}_{variant}"
            table = read_json(work / "evals" / f"{name}.json")
            metrics = read_json(work / "runs" / name / "metrics.json")
            if table is None or metrics is None:
                cells.append("not run")
                continue
            maes[(variant, frames)] = forces_mae_meV(table)
            trainable = trainable_count(work / "runs" / name)
            cells.append(
                f"{maes[(variant, frames)]:.1f} (ep. {metrics['model_epoch']}/{metrics['epoch']})"
            )
        lines.append(f"| {label} | {trainable} | " + " | ".join(cells) + " |")
    return "\n".join(lines), maes


def transfer_goal(maes: dict[tuple[str, int], float]) -> str:
    """Whether the best fine-tuned model at GOAL_FRAMES reaches GOAL_RATIO of from scratch."""
    scratch = maes.get(("scratch", GOAL_FRAMES))
    tuned = {v: m for (v, n), m in maes.items() if n == GOAL_FRAMES and v != "scratch"}
    if scratch is None or not tuned:
        return f"transfer goal: not measured (runs at {GOAL_FRAMES} frames missing)"
    best = min(tuned, key=tuned.__getitem__)
    ratio = tuned[best] / scratch
    verdict = "met" if ratio <= GOAL_RATIO else "missed"
    return (
        f"transfer goal ({GOAL_FRAMES} frames, best fine-tuned / scratch <= {GOAL_RATIO}): "
        f"{VARIANTS[best]} {tuned[best]:.1f} / {scratch:.1f} meV/Å = {ratio:.2f}: {verdict}"
    )


def ensembles(work: Path) -> str:
    """The table of each ensemble's calibration and its mean's error against its members'."""
    lines = [
        "| ensemble | members' force MAE (meV/Å) | best member | ensemble mean | "
        "Spearman (forces) | Spearman (energy) | goals |",
        "|---|---|---|---|---|---|---|",
    ]
    for model in ("mace", "egnn"):
        table = read_json(work / f"ensemble_{model}.json")
        members = [read_json(work / f"ensemble_{model}_member{k}.json") for k in range(4)]
        if table is None or any(m is None for m in members):
            lines.append(f"| {model.upper()} | not run | | | | | |")
            continue
        member_maes = [forces_mae_meV(m) for m in members if m is not None]
        mean_mae = forces_mae_meV(table)
        spearman = float(table["calibration"]["forces_spearman"])
        energy_spearman = float(table["calibration"]["energy_spearman"])
        goals = (
            f"Spearman {'met' if spearman >= GOAL_SPEARMAN else 'missed'}, "
            f"mean < best {'met' if mean_mae < min(member_maes) else 'missed'}"
        )
        lines.append(
            f"| {model.upper()} | {', '.join(f'{m:.1f}' for m in member_maes)} | "
            f"{min(member_maes):.1f} | {mean_mae:.1f} | {spearman:.3f} | {energy_spearman:.3f} "
            f"| {goals} |"
        )
    return "\n".join(lines)


def main() -> None:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("experiments/transfer/scratch")
    curve, maes = learning_curve(work)
    print(curve)
    print()
    print(transfer_goal(maes))
    print()
    print(ensembles(work))


if __name__ == "__main__":
    main()
