"""Our MACE at initialisation on 8 aspirin frames: per-block output statistics, initial energy
and forces, per-group gradient norms after one backward of ``1 MSE(E) + 10 MSE(F)`` and the
effect of one first Adam step per group. Run in our venv; the peer side is
``init_stats_peer.py``, the table ``compare_init_stats.py``.

usage: python experiments/accuracy/init_stats_ours.py OUT.json [--seeds 0 1 2] [--variant V]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from init_common import (  # noqa: E402
    BATCH_SIZE,
    CUT_OFF,
    ELEMENTS,
    first_adam_step_effect,
    frames,
    group_norms,
    loss,
    references,
    statistics,
    summary,
    write,
)
from variants import parse_variant, patch  # noqa: E402

from physicsml.data.graph import atoms_to_batch  # noqa: E402
from physicsml.models.mace import MACE  # noqa: E402

HYPERPARAMETERS: dict[str, Any] = {
    "num_bessel": 8,
    "num_polynomial_cutoff": 5,
    "max_ell": 3,
    "num_interactions": 2,
    "hidden_irreps": "32x0e + 32x1o",
    "mlp_irreps": "16x0e",
    "correlation": 3,
    "radial_mlp": [64, 64, 64],
}


def group_of(name: str) -> str:
    """Our parameter name -> the group name shared with the peer side."""
    name = name.replace("parametrizations.", "").replace(".original", "")  # variants.py
    if name == "embedding":
        return "embedding"
    k = re.search(r"\.(\d+)\.", name)
    layer = k.group(1) if k else "?"
    for part, group in (
        ("linear_up", "linear_up"),
        ("radial_mlp", "radial_mlp"),
        ("mix_weight", "message_linear"),
        ("skip", "skip"),
        ("contraction", "contraction"),
        ("products", "product_linear"),
        ("energy_head", "readout"),
    ):
        if part in name:
            return f"{group}.{layer}"
    raise ValueError(f"unmapped parameter {name}")


def features(x: torch.Tensor) -> dict[str, Any]:
    """Statistics of a ``[N, D, C]`` feature, overall and of its ``0e`` block."""
    return {"all": summary(x), "0e": summary(x[:, 0, :]), "l>0": summary(x[:, 1:, :])}


def run(
    seed: int, stats: dict[str, Any], atoms_list: list[Any], variant: str = "baseline"
) -> dict[str, Any]:
    """All measurements for one initialisation seed."""
    torch.manual_seed(seed)
    model = MACE(
        num_elements=len(ELEMENTS),
        cut_off=CUT_OFF,
        avg_num_neighbours=stats["avg_num_neighbours"],
        **HYPERPARAMETERS,
    )
    patch(model, parse_variant(variant), CUT_OFF)
    batch_atoms = atoms_list[:BATCH_SIZE]
    batch = atoms_to_batch(batch_atoms, ELEMENTS, CUT_OFF, dtype=torch.float32)
    ref_e, ref_f = (torch.tensor(r, dtype=torch.float32) for r in references(batch_atoms))
    ref_f = ref_f.reshape(-1, 3)
    e0 = torch.tensor([stats["e0"][z] for z in ELEMENTS], dtype=torch.float32)
    scale = stats["energy_scale"]
    num_atoms = len(batch_atoms[0])

    blocks: dict[str, Any] = {}

    def hook(name: str, kind: str):
        def record(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
            value = output[0] if isinstance(output, tuple) else output
            if kind == "flat":
                blocks[name] = {"all": summary(value)}
            else:
                blocks[name] = features(value)
            if isinstance(output, tuple) and output[1] is not None:
                blocks[name.replace("message", "skip")] = features(output[1])

        return record

    model.radial.register_forward_hook(hook("radial_basis", "flat"))
    for k, (inter, prod) in enumerate(zip(model.interactions, model.products, strict=True)):
        inter.radial_mlp.register_forward_hook(hook(f"radial_mlp.{k}", "flat"))
        inter.register_forward_hook(hook(f"message.{k}", "nd"))
        prod.contraction.register_forward_hook(hook(f"contraction.{k}", "nd"))
        prod.register_forward_hook(hook(f"product.{k}", "nd"))
        model.energy_head[k].register_forward_hook(hook(f"readout.{k}", "flat"))

    coordinates = batch["coordinates"]

    def predict() -> tuple[torch.Tensor, torch.Tensor]:
        pos = coordinates.detach().clone().requires_grad_(True)
        batch["coordinates"] = pos
        node = model(batch)["node_energy"]
        node_energy = scale * node + e0[batch["species"]]
        energy = torch.zeros(len(batch_atoms)).index_add(0, batch["batch"], node_energy)
        (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=True)
        predict.node = node  # type: ignore[attr-defined]
        return energy, -grad

    energy, forces = predict()
    blocks["embedding"] = {"all": summary(model.embedding[batch["species"]])}
    node = predict.node  # type: ignore[attr-defined]
    blocks["node_energy_unscaled"] = {"all": summary(node)}
    interaction_energy = torch.zeros(len(batch_atoms)).index_add(0, batch["batch"], scale * node)
    outputs = {
        "interaction_energy_per_atom": summary(scale * node),
        "energy_error_per_atom_rms": float(
            ((energy - ref_e) / num_atoms).detach().pow(2).mean().sqrt()
        ),
        "forces_rms": float(forces.detach().pow(2).mean().sqrt()),
        "forces_error_rms": float((forces - ref_f).detach().pow(2).mean().sqrt()),
        "interaction_energy_structure_std": float(interaction_energy.detach().std()),
    }
    total = loss(energy, forces, ref_e, ref_f)
    model.zero_grad()
    total.backward()
    named = list(model.named_parameters())
    return {
        "seed": seed,
        "num_parameters": sum(p.numel() for _, p in named),
        "loss": float(total),
        "blocks": blocks,
        "outputs": outputs,
        "groups": group_norms(named, group_of),
        "adam_step": first_adam_step_effect(named, group_of, predict, ref_e, ref_f, num_atoms),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variant", default="baseline", help="patches of variants.py, e.g. skip+radial")
    args = p.parse_args()
    torch.set_num_threads(1)
    atoms_list = frames()
    stats = statistics(atoms_list)
    runs = [run(seed, stats, atoms_list, args.variant) for seed in args.seeds]
    write(args.out, {"side": f"ours ({args.variant})", "statistics": stats, "runs": runs})


if __name__ == "__main__":
    main()
