"""How much of a model's validation energy error is one constant offset?

For each kept run directory (``run_ours_curves.sh`` keeps seed-0 models with a ``split.json``
under ``experiments/accuracy/scratch/models/``), predicts the validation frames of the split and
prints the energy MAE, the mean signed error (the offset) and the MAE once the offset is
removed, all in meV/atom, for the validation frames and for the training frames of the same
seeded split (``--seed``, the permutation of ``bench_ours.read_split``).

usage: python experiments/accuracy/energy_bias.py experiments/accuracy/scratch/models/*_s0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import ase.io
import numpy as np


def energy_errors(model_dir: Path, seed: int) -> dict[str, dict[str, float]]:
    """Per split: MAE, mean signed error and offset-free MAE of the energy per atom (meV)."""
    from physicsml.api import Model

    split = json.loads((model_dir / "split.json").read_text())["validation"]
    frames = ase.io.read(split["source"], ":")
    validation = [frames[i] for i in split["indices"]]
    permutation = np.random.default_rng(seed).permutation(len(frames))
    train = [frames[i] for i in permutation[: 4 * len(validation)]]  # the 80/20 split's train
    model = Model.load(model_dir / "model.pt")
    result = {}
    for name, atoms in (("validation", validation), ("train", train)):
        predicted = model.predict(atoms, batch_size=40)["energy"]
        per_atom = np.array(
            [
                (float(np.asarray(e).reshape(-1)[0]) - a.get_potential_energy()) / len(a)
                for e, a in zip(predicted, atoms, strict=True)
            ]
        )
        offset = per_atom.mean()
        result[name] = {
            "mae": 1e3 * float(np.abs(per_atom).mean()),
            "offset": 1e3 * float(offset),
            "mae_without_offset": 1e3 * float(np.abs(per_atom - offset).mean()),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print("| model | split | E MAE meV/atom | mean signed error | MAE without the offset |")
    print("|---|---|---|---|---|")
    for model_dir in args.models:
        for split, e in energy_errors(model_dir, args.seed).items():
            print(
                f"| {model_dir.name} | {split} | {e['mae']:.2f} | {e['offset']:+.2f} | "
                f"{e['mae_without_offset']:.2f} |"
            )


if __name__ == "__main__":
    main()
