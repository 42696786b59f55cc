"""Per-epoch validation curves of mace-torch 0.3.16 (the official MACE) under our protocol.

``train`` (any Python with numpy and ase, e.g. our venv) writes the seed's split of
``../shared/data/md_xtb/<molecule>.extxyz`` exactly as ``experiments/model_zoo/bench_ours.py``
(``read_split``: a ``numpy.random.default_rng(seed)`` permutation cut to 200 structures, the
first 160 train, the other 40 validation) as extxyz with mace-torch's ``REF_energy`` /
``REF_forces`` keys, plus ``split.json`` (indices, in the format ``md_stability/run.py`` reads)
and the least-squares E0s of the train split (minimum-norm ``numpy.linalg.lstsq``, as
``physicsml.data.statistics``). It then runs the peer venv's ``mace_run_train`` with our MACE
hyper-parameters (one thread, ``nice -n 10``), timestamps every validation line it prints, and
appends one JSON line per epoch to ``--out``. Last, it runs ``check`` with the peer venv.

``check`` (peer venv only) evaluates the saved ``.model`` on the validation xyz with
``mace.calculators.MACECalculator`` and compares its MAEs with the logged validation of the
epoch whose checkpoint the model is (mace-torch saves the lowest-validation-loss epoch).

    python experiments/accuracy/run_mace_torch_curves.py train --molecule aspirin --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import ase.io
import numpy as np

IMPL = "mace-torch 0.3.16"
PEER_VENV = Path(".peer-mace")
"""The peer venv (a symlink; call its binaries through it, never resolve it)."""
DATA_DIR = Path("../shared/data/md_xtb")
SCRATCH = Path("experiments/accuracy/scratch/mace_torch")
RESULTS = Path("experiments/accuracy/results/curves_mace_torch.jsonl")
MAX_STRUCTURES = 200
N_TRAIN = 160
EPOCH_LINE = re.compile(r"INFO: (Initial|Epoch (\d+)): head: Default")
LOADED = re.compile(r"Loading checkpoint: \S*_epoch-(\d+)\.pt")


def split_indices(n_frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation indices of ``bench_ours.read_split`` (200 structures, 160 train)."""
    perm = np.random.default_rng(seed).permutation(n_frames)[:MAX_STRUCTURES]
    return perm[:N_TRAIN], perm[N_TRAIN:]


def labelled(atoms: ase.Atoms) -> ase.Atoms:
    """A copy of ``atoms`` with only positions, species and mace-torch's REF labels."""
    out = ase.Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    out.info["REF_energy"] = float(atoms.get_potential_energy())
    out.arrays["REF_forces"] = np.asarray(atoms.get_forces(), dtype=np.float64).copy()
    return out


def least_squares_e0s(frames: list[ase.Atoms]) -> dict[int, float]:
    """Per-element reference energies: minimum-norm least squares of total energy on counts."""
    elements = sorted({int(z) for a in frames for z in a.numbers})
    counts = np.array([[np.sum(a.numbers == z) for z in elements] for a in frames], float)
    energies = np.array([a.get_potential_energy() for a in frames])
    rcond = np.finfo(np.float64).eps * max(len(frames), len(elements))
    e0 = np.linalg.lstsq(counts, energies, rcond=rcond)[0]
    return {z: float(v) for z, v in zip(elements, e0, strict=True)}


def write_split(molecule: str, seed: int, workdir: Path) -> dict[int, float]:
    """Train/valid xyz, ``split.json`` and ``e0s.json`` for ``molecule`` and ``seed``."""
    source = DATA_DIR / f"{molecule}.extxyz"
    frames = ase.io.read(source, ":")
    train_idx, val_idx = split_indices(len(frames), seed)
    ase.io.write(workdir / "train.xyz", [labelled(frames[i]) for i in train_idx], "extxyz")
    ase.io.write(workdir / "valid.xyz", [labelled(frames[i]) for i in val_idx], "extxyz")
    e0s = least_squares_e0s([frames[i] for i in train_idx])
    split = {
        "seed": seed,
        "train": {"source": str(source), "indices": [int(i) for i in train_idx]},
        "validation": {"source": str(source), "indices": [int(i) for i in val_idx]},
    }
    (workdir / "split.json").write_text(json.dumps(split) + "\n")
    (workdir / "e0s.json").write_text(json.dumps(e0s) + "\n")
    return e0s


def mace_command(
    name: str, seed: int, epochs: int, e0s: dict[int, float], n_atoms: int
) -> list[str]:
    """``mace_run_train`` with our MACE hyper-parameters (loss 1 MSE(E) + 10 MSE(F))."""
    return [
        *("nice", "-n", "10", str(PEER_VENV.absolute() / "bin" / "mace_run_train")),
        *("--name", name, "--seed", str(seed), "--device", "cpu", "--default_dtype", "float32"),
        *("--train_file", "train.xyz", "--valid_file", "valid.xyz"),
        *("--energy_key", "REF_energy", "--forces_key", "REF_forces", "--E0s", str(e0s)),
        *("--model", "MACE", "--hidden_irreps", "32x0e+32x1o", "--max_ell", "3"),
        *("--correlation", "3", "--num_interactions", "2", "--num_radial_basis", "8"),
        *("--num_cutoff_basis", "5", "--MLP_irreps", "16x0e", "--r_max", "5.0"),
        # mace-torch's "weighted" loss is the MSE of energy per atom: N^2 makes it MSE(E).
        *("--loss", "weighted", "--energy_weight", str(n_atoms**2), "--forces_weight", "10"),
        *("--optimizer", "adam", "--lr", "1e-3", "--weight_decay", "0.0", "--clip_grad", "None"),
        *("--scheduler", "ExponentialLR", "--lr_scheduler_gamma", "1.0"),
        *("--batch_size", "8", "--valid_batch_size", "8", "--max_num_epochs", str(epochs)),
        *("--eval_interval", "1", "--error_table", "PerAtomMAE", "--num_workers", "0"),
        "--save_cpu",
    ]


def run_logged(command: list[str], workdir: Path) -> None:
    """Run ``command`` (one thread) in ``workdir``, its output to ``run.log``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with (workdir / "run.log").open("w") as log:
        code = subprocess.run(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    if code.returncode != 0:
        raise RuntimeError(f"mace_run_train failed ({code.returncode}); see {workdir}/run.log")


def log_times(workdir: Path) -> tuple[dict[int, float], int]:
    """Seconds since the initial validation at which each epoch's (1-based) validation was
    logged (mace-torch's own millisecond timestamps), and the epoch (1-based) of the
    checkpoint mace-torch saved as the model (its lowest validation loss)."""
    stamps: dict[int | None, float] = {}
    loaded = None
    for line in (workdir / "run.log").read_text().splitlines():
        if (match := EPOCH_LINE.search(line)) is not None:
            when = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").timestamp()
            stamps[None if match.group(2) is None else int(match.group(2)) + 1] = when
        if (match := LOADED.search(line)) is not None:
            loaded = int(match.group(1)) + 1
    if None not in stamps or loaded is None:
        raise RuntimeError(f"{workdir}/run.log lacks the initial validation or the saved epoch")
    initial = stamps.pop(None)
    return {epoch: when - initial for epoch, when in stamps.items() if epoch is not None}, loaded


def eval_metrics(workdir: Path, seed: int) -> dict[int, dict[str, Any]]:
    """The logged validation metrics of each epoch (1-based), from mace-torch's results file."""
    metrics = {}
    results = workdir / "results" / f"{workdir.name}_run-{seed}_train.txt"
    for line in results.read_text().splitlines():
        record = json.loads(line)
        if record.get("mode") == "eval" and record.get("epoch") is not None:
            metrics[int(record["epoch"]) + 1] = record
    return metrics


def curve_records(molecule: str, seed: int) -> list[dict[str, Any]]:
    """One record per epoch of a finished run: validation errors and times.

    ``epoch_s`` is training only: the wall time between two validation lines less the
    validation's own time (mace-torch's ``time`` of the eval record); ``elapsed_s`` sums it.
    ``epoch_wall_s`` includes the validation.
    """
    workdir = SCRATCH / f"{molecule}_s{seed}"
    stamps, saved = log_times(workdir)
    metrics = eval_metrics(workdir, seed)
    records, previous, elapsed = [], 0.0, 0.0
    for epoch in sorted(metrics):
        m = metrics[epoch]
        wall = stamps[epoch] - previous
        previous = stamps[epoch]
        elapsed += wall - m["time"]
        records.append(
            {
                "impl": IMPL,
                "model": "mace",
                "data": molecule,
                "seed": seed,
                "epoch": epoch,
                "val_energy_mae_meV_per_atom": 1e3 * m["mae_e_per_atom"],
                "val_forces_mae_meV_per_A": 1e3 * m["mae_f"],
                "val_energy_rmse_meV_per_atom": 1e3 * m["rmse_e_per_atom"],
                "val_forces_rmse_meV_per_A": 1e3 * m["rmse_f"],
                "epoch_s": wall - m["time"],
                "elapsed_s": elapsed,
                "epoch_wall_s": wall,
                "saved_model_epoch": saved,
            }
        )
    return records


def append_records(args: argparse.Namespace) -> None:
    """Append a finished run's per-epoch lines to ``--out``."""
    lines = [json.dumps(r) for r in curve_records(args.molecule, args.seed)]
    with args.out.open("a") as out:
        out.write("\n".join(lines) + "\n")
    print(lines[-1], flush=True)


def train(args: argparse.Namespace) -> None:
    """Write the split, train, append the per-epoch lines and check the saved model."""
    name = f"{args.molecule}_s{args.seed}"
    workdir = SCRATCH / name
    shutil.rmtree(workdir, ignore_errors=True)  # no stale checkpoints for mace-torch to load
    workdir.mkdir(parents=True)
    e0s = write_split(args.molecule, args.seed, workdir)
    n_atoms = len(ase.io.read(workdir / "valid.xyz", 0))
    command = mace_command(name, args.seed, args.epochs, e0s, n_atoms)
    (workdir / "command.txt").write_text(" ".join(command) + "\n")
    run_logged(command, workdir)
    append_records(args)
    python = str(PEER_VENV / "bin" / "python")
    check_command = [
        python,
        __file__,
        "check",
        "--molecule",
        args.molecule,
        "--seed",
        str(args.seed),
    ]
    subprocess.run(check_command, check=True)


def check(args: argparse.Namespace) -> None:
    """MAEs of the saved model on ``valid.xyz`` with ``MACECalculator`` against the log."""
    import torch
    from mace.calculators import MACECalculator

    torch.set_num_threads(1)
    name = f"{args.molecule}_s{args.seed}"
    workdir = SCRATCH / name
    calc = MACECalculator(
        model_paths=str(workdir / f"{name}.model"), device="cpu", default_dtype="float32"
    )
    energy_errors, force_errors = [], []
    for atoms in ase.io.read(workdir / "valid.xyz", ":"):
        reference_e, reference_f = atoms.info["REF_energy"], atoms.arrays["REF_forces"]
        atoms.calc = calc
        energy_errors.append((atoms.get_potential_energy() - reference_e) / len(atoms))
        force_errors.append((atoms.get_forces() - reference_f).ravel())
    epoch = log_times(workdir)[1]
    logged = eval_metrics(workdir, args.seed)[epoch]
    result = {
        "model": f"{name}.model",
        "checkpoint_epoch": epoch,
        "calculator_val_energy_mae_meV_per_atom": 1e3 * float(np.mean(np.abs(energy_errors))),
        "logged_val_energy_mae_meV_per_atom": 1e3 * logged["mae_e_per_atom"],
        "calculator_val_forces_mae_meV_per_A": 1e3
        * float(np.mean(np.abs(np.concatenate(force_errors)))),
        "logged_val_forces_mae_meV_per_A": 1e3 * logged["mae_f"],
    }
    (workdir / "check.json").write_text(json.dumps(result) + "\n")
    print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="run_mace_torch_curves.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument("action", choices=["train", "records", "check"])
    parser.add_argument("--molecule", choices=["aspirin", "ethanol"], required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON lines are appended here")
    args = parser.parse_args()
    {"train": train, "records": append_records, "check": check}[args.action](args)


if __name__ == "__main__":
    main()
