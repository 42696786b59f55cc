"""A few epochs of our MACE on 200 shipped aspirin frames (160 train / 40 validation, the
peers' protocol: Adam lr 1e-3, batch 8, ``1 MSE(E) + 10 MSE(F)``, float32, one thread), to
measure cheaply what an initialisation or normalisation change does to the first epochs.

``--variants``: the model as built (``baseline``) or patched as ``variants.py`` describes
(``+`` combines patches, e.g. ``embedding+skip+radial``).

usage: python experiments/accuracy/short_train.py OUT.jsonl --variants baseline embedding+skip
       [--seeds 0 1] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from init_common import (  # noqa: E402
    ASPIRIN,
    CUT_OFF,
    ELEMENTS,
    LR,
    frames,
    split,
    statistics,
    train_epochs,
)
from init_stats_ours import HYPERPARAMETERS  # noqa: E402
from variants import parse_variant, patch  # noqa: E402

from physicsml.data.graph import atoms_to_batch  # noqa: E402
from physicsml.models.mace import MACE  # noqa: E402


def train(variant: str, seed: int, epochs: int, atoms_list: list[Any]) -> list[dict[str, Any]]:
    """Per-epoch records of one run."""
    patches = parse_variant(variant)
    train_idx, _ = split(seed, len(atoms_list))
    stats = statistics([atoms_list[i] for i in train_idx])
    e0 = torch.tensor([stats["e0"][z] for z in ELEMENTS], dtype=torch.float32)
    scale = stats["energy_scale"]
    torch.manual_seed(seed)
    model = MACE(
        num_elements=len(ELEMENTS),
        cut_off=CUT_OFF,
        avg_num_neighbours=stats["avg_num_neighbours"],
        **HYPERPARAMETERS,
    )
    patch(model, patches, CUT_OFF)

    def make_batch(chunk: list[Any]) -> dict[str, torch.Tensor]:
        return atoms_to_batch(chunk, ELEMENTS, CUT_OFF, dtype=torch.float32)

    def predict(batch: dict[str, torch.Tensor], training: bool):
        pos = batch["coordinates"].detach().requires_grad_(True)
        batch = {**batch, "coordinates": pos}
        node = scale * model(batch)["node_energy"] + e0[batch["species"]]
        energy = torch.zeros(int(batch["batch"].max()) + 1).index_add(0, batch["batch"], node)
        (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=training)
        return energy, -grad

    opt = torch.optim.Adam(model.parameters(), lr=LR, amsgrad="amsgrad" in patches)
    label = {"side": "ours", "variant": variant}
    return train_epochs(opt, predict, make_batch, atoms_list, seed, epochs, label)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--variants", nargs="+", default=["baseline"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--data", default=ASPIRIN, help="extxyz (default: the shipped aspirin)")
    args = p.parse_args()
    torch.set_num_threads(1)
    atoms_list = frames(args.data)
    with open(args.out, "a") as out:
        for variant in args.variants:
            for seed in args.seeds:
                for record in train(variant, seed, args.epochs, atoms_list):
                    out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
