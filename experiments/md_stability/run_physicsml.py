"""``run.py``'s NVE trajectories with a physicsml 0.6.0 (Exscientia) model (run with its venv).

Training: ``../shared/bench/peer_physicsml/train_bench.py`` (imported by path), i.e. the
benchmark protocol of ``experiments/accuracy`` (seeded permutation split, first
``--max-structures`` frames, 80/20, least-squares E0, 1·MSE(E) + 10·MSE(F), Adam 1e-3, batch 8,
float32, ``--epochs``). The script does not keep its model, so this one catches the model object
(``molflux.modelzoo.load_from_dict``) and the featurisation metadata
(``molflux.core.featurise_dataset``) on their way in, and saves both with
``molflux.core.save_model`` in ``RUN_DIR/model``. The run's JSON line goes to
``RUN_DIR/<name>.json`` and the split to ``RUN_DIR/split.json`` in ``run.py``'s format.

MD: the saved model is loaded back with physicsml's own ASE calculator
(``physicsml.plugins.ase.load.to_ase_calculator``: it featurises every structure through RDKit
and molflux, as their datamodule does, and takes forces by autograd), checked against the
training run's final validation MAEs, and driven by ``run.py``'s ``run_trajectory`` from the
validation frames ``run.py`` would pick (evenly spaced), with the same velocity seeds. One JSON
line per trajectory, in ``run.py``'s format, is appended to ``--out``. An existing
``RUN_DIR/model`` is reused (no retraining).

Run from the repository root, with the peer's venv::

    ../peer-physicsml/bin/python experiments/md_stability/run_physicsml.py \\
        --data ../shared/data/md_xtb/ethanol.extxyz --seed 0 --trajectories 2 --ps 10

Their package is also called ``physicsml``: ``run.py`` is therefore imported by file path, and
the script must not run with this repository's root on ``sys.path`` (no ``PYTHONPATH=.``).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import logging
from pathlib import Path
from types import ModuleType
from typing import Any

import molflux.core
import molflux.modelzoo
import numpy as np
import torch
from physicsml.plugins.ase.load import to_ase_calculator

HERE = Path(__file__).resolve().parent
TRAIN_BENCH = Path("../shared/bench/peer_physicsml/train_bench.py")
SCRATCH = Path("experiments/md_stability/scratch")
IMPL = "physicsml 0.6.0"


def load_by_path(name: str, path: Path) -> ModuleType:
    """Import the file ``path`` as module ``name`` (avoids the two ``physicsml`` packages)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train(args: argparse.Namespace, run_dir: Path) -> None:
    """Train with ``train_bench.main`` and save its model, featurisation and split."""
    bench = load_by_path("peer_train_bench", TRAIN_BENCH)
    caught: dict[str, Any] = {}
    load_from_dict = molflux.modelzoo.load_from_dict
    featurise_dataset = molflux.core.featurise_dataset

    def catch_model(*a: Any, **k: Any) -> Any:
        caught["model"] = load_from_dict(*a, **k)
        return caught["model"]

    def catch_featurisation(*a: Any, **k: Any) -> Any:
        caught["featurisation_metadata"] = copy.deepcopy(k["featurisation_metadata"])
        return featurise_dataset(*a, **k)

    molflux.modelzoo.load_from_dict = catch_model
    molflux.core.featurise_dataset = catch_featurisation
    try:
        code = bench.main(
            [
                "--data", str(args.data), "--model", args.architecture,
                "--epochs", str(args.epochs), "--batch-size", "8", "--pre-batch", "none",
                "--max-structures", str(args.max_structures), "--threads", str(args.threads),
                "--seed", str(args.seed), "--out-dir", str(run_dir.resolve()),
                "--tag", run_dir.name,
            ]
        )  # fmt: skip
    finally:
        molflux.modelzoo.load_from_dict = load_from_dict
        molflux.core.featurise_dataset = featurise_dataset
    if code != 0:
        raise RuntimeError(f"train_bench failed: see {run_dir / (run_dir.name + '.json')}")
    molflux.core.save_model(
        caught["model"], str(run_dir / "model"), caught["featurisation_metadata"]
    )
    split = np.load(run_dir / f"{run_dir.name}_split.npz")
    (run_dir / "split.json").write_text(
        json.dumps(
            {
                part: {"source": str(args.data), "indices": split[key].tolist()}
                for part, key in (("train", "train_idx"), ("validation", "val_idx"))
            }
        )
    )


def check(calculator: Any, frames: list[Any], run_dir: Path) -> dict[str, float]:
    """Validation MAEs through the calculator, next to the training run's final ones."""
    energy, forces = [], []
    for frame in frames:  # reference energy and forces: ase's extxyz reader puts them in .calc
        atoms = frame.copy()
        atoms.calc = calculator
        energy.append((atoms.get_potential_energy() - frame.get_potential_energy()) / len(atoms))
        forces.append((atoms.get_forces() - frame.get_forces()).ravel())
    final = json.loads((run_dir / f"{run_dir.name}.json").read_text())["metrics"]["val"]
    result = {
        "calculator_val_energy_mae_meV_per_atom": 1e3 * float(np.mean(np.abs(energy))),
        "calculator_val_forces_mae_meV_per_A": 1e3 * float(np.mean(np.abs(np.concatenate(forces)))),
        "train_bench_val_energy_mae_meV_per_atom": final["energy_mae_meV_per_atom"],
        "train_bench_val_forces_mae_meV_per_A": final["forces_mae_meV_per_A"],
    }
    (run_dir / "calculator_check.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="run_physicsml.py", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/md_xtb/ethanol.extxyz"))
    parser.add_argument("--architecture", default="mace", help="train_bench.py --model")
    parser.add_argument("--seed", type=int, default=0, help="split, training and velocity seed")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--max-structures", type=int, default=200)
    parser.add_argument("--trajectories", type=int, default=2)
    parser.add_argument("--ps", type=float, default=10.0, help="length of each trajectory")
    parser.add_argument("--dt", type=float, default=0.5, help="time step in fs")
    parser.add_argument("--temperature", type=float, default=500.0, help="K")
    parser.add_argument("--every", type=int, default=10, help="steps between checks")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out",
        type=Path,
        default=SCRATCH / "results_physicsml.jsonl",
        help="JSON lines are appended here",
    )
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # molflux logs every featurisation (every MD step) at INFO
    name = f"physicsml0.6_{args.data.stem}_{args.architecture}_s{args.seed}"
    run_dir = SCRATCH / "models" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "model").exists():
        train(args, run_dir)
    md = load_by_path("md_stability_run", HERE / "run.py")
    torch.set_num_threads(args.threads)
    frames = md.validation_frames(run_dir)
    calculator = to_ase_calculator(model_path=str(run_dir / "model"), precision="32")
    print(json.dumps(check(calculator, frames, run_dir)), flush=True)
    md.run_trajectories(
        calculator, frames, args, {"model": name, "architecture": args.architecture, "impl": IMPL}
    )


if __name__ == "__main__":
    main()
