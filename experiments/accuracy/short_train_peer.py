"""The ``short_train.py`` protocol (same frames, split, shuffles, loss, Adam lr 1e-3, batch 8)
with mace-torch 0.3.16's model: its first epochs next to ours. Run with mace-torch's venv.

usage: $PEER_VENV/bin/python experiments/accuracy/short_train_peer.py OUT.jsonl
       [--seeds 0 1] [--epochs 5] [--amsgrad]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from init_common import ASPIRIN, LR, frames, split, statistics, train_epochs  # noqa: E402
from init_stats_peer import build, mace_batch  # noqa: E402


def train(seed: int, epochs: int, amsgrad: bool, atoms_list: list[Any]) -> list[dict[str, Any]]:
    """Per-epoch records of one run."""
    train_idx, _ = split(seed, len(atoms_list))
    stats = statistics([atoms_list[i] for i in train_idx])
    torch.manual_seed(seed)
    model = build(stats)

    def predict(batch: Any, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(batch.to_dict(), training=training, compute_force=True)
        return out["energy"].float(), out["forces"].float()

    opt = torch.optim.Adam(model.parameters(), lr=LR, amsgrad=amsgrad)
    label = {"side": "mace-torch 0.3.16", "variant": "amsgrad" if amsgrad else "baseline"}
    return train_epochs(opt, predict, mace_batch, atoms_list, seed, epochs, label)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--amsgrad", action="store_true", help="AMSGrad, as mace_run_train always")
    p.add_argument("--data", default=ASPIRIN, help="extxyz (default: the shipped aspirin)")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    atoms_list = frames(args.data)
    with open(args.out, "a") as out:
        for seed in args.seeds:
            for record in train(seed, args.epochs, args.amsgrad, atoms_list):
                out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
