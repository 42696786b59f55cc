"""``run.py``'s NVE trajectories with a mace-torch 0.3.16 model (run with the peer venv).

The model and the start frames come from a run of
``experiments/accuracy/run_mace_torch_curves.py``: its directory holds ``<name>.model`` and a
``split.json`` in ``run.py``'s format, so the trajectories start from the same validation
frames, picked the same way (evenly spaced), with the same velocity seeds, as ``run.py`` on our
model trained on that split. Forces come from ``mace.calculators.MACECalculator`` (CPU,
float32). One JSON line per trajectory, in ``run.py``'s format, is appended to ``--out``.

    .peer-mace/bin/python experiments/md_stability/run_mace_torch.py \\
        --run experiments/accuracy/scratch/mace_torch/ethanol_s0 --trajectories 2 --ps 10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from mace.calculators import MACECalculator

sys.path.insert(0, str(Path(__file__).parent))
from run import run_trajectories, validation_frames  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(prog="run_mace_torch.py", description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a run_mace_torch_curves.py run")
    parser.add_argument("--trajectories", type=int, default=2)
    parser.add_argument("--ps", type=float, default=10.0, help="length of each trajectory")
    parser.add_argument("--dt", type=float, default=0.5, help="time step in fs")
    parser.add_argument("--temperature", type=float, default=500.0, help="K")
    parser.add_argument("--every", type=int, default=10, help="steps between checks")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("experiments/md_stability/scratch/results_mace_torch.jsonl"),
        help="JSON lines are appended here",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frames = validation_frames(args.run)
    calculator = MACECalculator(
        model_paths=str(args.run / f"{args.run.name}.model"),
        device="cpu",
        default_dtype="float32",
    )
    run_trajectories(
        calculator,
        frames,
        args,
        {
            "model": f"mace-torch_{args.run.name}",
            "architecture": "mace",
            "impl": "mace-torch 0.3.16",
        },
    )


if __name__ == "__main__":
    main()
