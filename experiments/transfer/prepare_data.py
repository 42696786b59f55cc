"""Write the frame subsets of the transfer-learning experiment as extxyz files.

Each GFN2-xTB trajectory in ``../shared/data/md_xtb`` is cut into a training block (the first
two thirds of the frames) and a held-out validation block (the last third), so that validation
frames are never neighbours in time of training frames. Subsets of the training block are
evenly spaced frames (every k-th), not the first N, so a small subset still spans the block.
"""

import argparse
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms

MOLECULES = ("ethanol", "malonaldehyde", "aspirin", "uracil")


def evenly_spaced(frames: list[Atoms], count: int) -> list[Atoms]:
    """``count`` frames spread evenly over ``frames`` (first and last included)."""
    if count > len(frames):
        raise ValueError(f"asked for {count} frames of a block of {len(frames)}")
    indices = np.linspace(0, len(frames) - 1, count).round().astype(int)
    return [frames[i] for i in indices]


def write_subsets(
    data_dir: Path, out_dir: Path, pretrain_frames: int, val_frames: int, pretrain_val_frames: int
) -> None:
    """Write ``<molecule>_train<N>.extxyz`` and ``<molecule>_val<M>.extxyz`` for every molecule."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for molecule in MOLECULES:
        frames = ase.io.read(data_dir / f"{molecule}.extxyz", ":")
        assert isinstance(frames, list)
        split = 2 * len(frames) // 3
        train_block, val_block = frames[:split], frames[split:]
        sizes = (25, 50, 100, 400) if molecule == "uracil" else (pretrain_frames, 400)
        for size in sizes:
            ase.io.write(
                out_dir / f"{molecule}_train{size}.extxyz", evenly_spaced(train_block, size)
            )
        for size in {val_frames, pretrain_val_frames}:
            ase.io.write(out_dir / f"{molecule}_val{size}.extxyz", evenly_spaced(val_block, size))
        print(f"{molecule}: {len(frames)} frames, {split} to train from, {len(val_block)} held out")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/md_xtb"))
    parser.add_argument("--out", type=Path, default=Path("experiments/transfer/scratch/data"))
    parser.add_argument("--pretrain-frames", type=int, default=200)
    parser.add_argument("--val-frames", type=int, default=200)
    parser.add_argument("--pretrain-val-frames", type=int, default=50)
    args = parser.parse_args()
    write_subsets(
        args.data, args.out, args.pretrain_frames, args.val_frames, args.pretrain_val_frames
    )


if __name__ == "__main__":
    main()
