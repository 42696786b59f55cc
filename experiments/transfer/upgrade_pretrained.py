"""Re-save a MACE ``model.pt`` from before ``SymmetricContraction.weight_scale`` existed.

The MACE symmetric contraction gained a ``weight_scale`` buffer (weights stored divided by
it) while this experiment ran; ``module.init_from`` then refuses an older model because its
weights lack that key. This writes the same function in the new layout (weights divided by
the scale, the scale stored) and checks that both predict the same forces on a few frames.
Only needed for a pretrained model saved by the older code.
"""

import argparse
from pathlib import Path

import ase.io
import torch

from physicsml.inference import load_module, predict_atoms
from physicsml.models.mace.symmetric_contraction import SymmetricContraction
from physicsml.saved_model import read_model_file, write_model_file


def upgrade(source: Path, target_dir: Path) -> Path:
    """Write ``target_dir/model.pt``: ``source``'s model with explicit contraction scales."""
    spec, state = read_model_file(source)
    module = load_module(source)
    for name, layer in module.named_modules():
        if isinstance(layer, SymmetricContraction) and f"{name}.weight_scale" not in state:
            scale = torch.cat([torch.full((n,), float(n)) for n in layer.num_weights])
            state[f"{name}.weight"] = state[f"{name}.weight"] / scale[:, None]
            state[f"{name}.weight_scale"] = scale
    target_dir.mkdir(parents=True, exist_ok=True)
    write_model_file(spec, state, target_dir / "model.pt")
    return target_dir / "model.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="run directory or model.pt of the old model")
    parser.add_argument("target", type=Path, help="directory for the re-saved model.pt")
    parser.add_argument("--check-data", type=Path, help="extxyz frames to compare forces on")
    args = parser.parse_args()
    written = upgrade(args.source, args.target)
    if args.check_data is not None:
        frames = ase.io.read(args.check_data, ":5")
        assert isinstance(frames, list)
        before = predict_atoms(load_module(args.source), frames)["forces"]
        after = predict_atoms(load_module(written), frames)["forces"]
        difference = max(float(abs(b - a).max()) for b, a in zip(before, after, strict=True))
        print(f"{written}: largest force difference on {len(frames)} frames {difference:.2e} eV/Å")


if __name__ == "__main__":
    main()
