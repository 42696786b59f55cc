"""mace-torch 0.3.16 at initialisation, the same measurements as ``init_stats_ours.py`` (same
frames, statistics, loss and parameter groups). Builds the model ``mace_run_train --model MACE``
builds with ``../shared/bench/peer_mace/run_mace_torch.sh``'s flags (a ScaleShiftMACE with
scale = RMS force, shift 0, a non-residual first interaction). Run with mace-torch's venv.

usage: $PEER_VENV/bin/python experiments/accuracy/init_stats_peer.py OUT.json [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

# e3nn 0.4.4 loads its pickled constants with torch.load (mace-torch sets the same).
os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402
from e3nn import o3  # noqa: E402
from mace import data, modules, tools  # noqa: E402
from mace.tools import torch_geometric  # noqa: E402

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

NUM_CHANNELS, LMAX = 32, 3


def group_of(name: str) -> str:
    """mace-torch's parameter name -> the group name shared with our side."""
    if name.startswith("node_embedding"):
        return "embedding"
    k = re.search(r"\.(\d+)\.", name)
    layer = k.group(1) if k else "?"
    for part, group in (
        ("linear_up", "linear_up"),
        ("conv_tp_weights", "radial_mlp"),
        ("skip_tp", "skip"),
        ("interactions", "message_linear"),
        ("symmetric_contractions", "contraction"),
        ("products", "product_linear"),
        ("readouts", "readout"),
    ):
        if part in name:
            return f"{group}.{layer}"
    raise ValueError(f"unmapped parameter {name}")


def features(x: torch.Tensor, irreps: o3.Irreps) -> dict[str, Any]:
    """Statistics of a flat e3nn feature ``[N, irreps.dim]``, overall and of its scalars."""
    num_scalars = sum(mul for mul, ir in irreps if ir.l == 0)
    out = {"all": summary(x), "0e": summary(x[:, :num_scalars])}
    if x.shape[1] > num_scalars:
        out["l>0"] = summary(x[:, num_scalars:])
    return out


def build(stats: dict[str, Any]) -> torch.nn.Module:
    """The model of ``mace_run_train --model MACE`` with the benchmark's hyperparameters."""
    return modules.ScaleShiftMACE(
        r_max=CUT_OFF,
        num_bessel=8,
        num_polynomial_cutoff=5,
        max_ell=LMAX,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
        num_interactions=2,
        num_elements=len(ELEMENTS),
        hidden_irreps=o3.Irreps(f"{NUM_CHANNELS}x0e+{NUM_CHANNELS}x1o"),
        MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.array([stats["e0"][z] for z in ELEMENTS]),
        avg_num_neighbors=stats["avg_num_neighbours"],
        atomic_numbers=ELEMENTS,
        correlation=3,
        gate=modules.gate_dict["silu"],
        radial_MLP=[64, 64, 64],
        radial_type="bessel",
        use_reduced_cg=False,  # the CLI's default (the class's is True)
        atomic_inter_scale=stats["energy_scale"],
        atomic_inter_shift=0.0,
        heads=["Default"],
    )


def mace_batch(atoms_list: list[Any]) -> Any:
    """mace-torch's batch of the molecules in ``atoms_list`` (no targets)."""
    z_table = tools.AtomicNumberTable(ELEMENTS)
    configs = [
        data.Configuration(
            atomic_numbers=a.numbers,
            positions=a.positions,
            properties={},
            property_weights={},
            cell=np.zeros((3, 3)),
            pbc=(False, False, False),
        )
        for a in atoms_list
    ]
    graphs = [data.AtomicData.from_config(c, z_table=z_table, cutoff=CUT_OFF) for c in configs]
    return next(iter(torch_geometric.dataloader.DataLoader(graphs, batch_size=len(graphs))))


def run(seed: int, stats: dict[str, Any], atoms_list: list[Any]) -> dict[str, Any]:
    """All measurements for one initialisation seed."""
    torch.manual_seed(seed)
    model = build(stats)
    batch_atoms = atoms_list[:BATCH_SIZE]
    batch = mace_batch(batch_atoms)
    ref_e, ref_f = (torch.tensor(r, dtype=torch.float32) for r in references(batch_atoms))
    ref_f = ref_f.reshape(-1, 3)
    num_atoms = len(batch_atoms[0])
    hidden = o3.Irreps(f"{NUM_CHANNELS}x0e+{NUM_CHANNELS}x1o")
    scalars = o3.Irreps(f"{NUM_CHANNELS}x0e")

    blocks: dict[str, Any] = {}

    def message_stats(x: torch.Tensor) -> dict[str, Any]:
        # [N, C, (lmax + 1)^2] after mace's reshape
        return {"all": summary(x), "0e": summary(x[:, :, 0]), "l>0": summary(x[:, :, 1:])}

    def hook(name: str, kind: Any):
        def record(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
            value = output[0] if isinstance(output, tuple) else output
            if kind == "flat":
                blocks[name] = {"all": summary(value)}
            elif kind == "message":
                blocks[name] = message_stats(value)
                if output[1] is not None:
                    blocks[name.replace("message", "skip")] = features(output[1], kind_sc[name])
            else:
                blocks[name] = features(value, kind)

        return record

    kind_sc = {"message.1": scalars}
    model.node_embedding.register_forward_hook(hook("embedding", "flat"))
    model.radial_embedding.register_forward_hook(hook("radial_basis", "flat"))
    for k, (inter, prod) in enumerate(zip(model.interactions, model.products, strict=True)):
        out_irreps = hidden if k < 1 else scalars
        inter.conv_tp_weights.register_forward_hook(hook(f"radial_mlp.{k}", "flat"))
        inter.register_forward_hook(hook(f"message.{k}", "message"))
        prod.symmetric_contractions.register_forward_hook(hook(f"contraction.{k}", out_irreps))
        prod.register_forward_hook(hook(f"product.{k}", out_irreps))
        model.readouts[k].register_forward_hook(hook(f"readout.{k}", "flat"))
    captured: dict[str, torch.Tensor] = {}
    model.scale_shift.register_forward_hook(
        lambda _m, inputs, _o: captured.__setitem__("node", inputs[0])
    )
    batch_dict = batch.to_dict()

    def predict() -> tuple[torch.Tensor, torch.Tensor]:
        out = model(batch_dict, training=True, compute_force=True)
        return out["energy"].float(), out["forces"].float()

    energy, forces = predict()
    node = captured["node"]
    scale = stats["energy_scale"]
    blocks["node_energy_unscaled"] = {"all": summary(node)}
    interaction_energy = torch.zeros(len(batch_atoms)).index_add(0, batch.batch, scale * node)
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
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
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
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    atoms_list = frames()
    stats = statistics(atoms_list)
    runs = [run(seed, stats, atoms_list) for seed in args.seeds]
    write(args.out, {"side": "mace-torch 0.3.16", "statistics": stats, "runs": runs})


if __name__ == "__main__":
    main()
