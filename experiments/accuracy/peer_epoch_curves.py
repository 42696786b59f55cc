"""Per-epoch validation curves of physicsml 0.6.0 (Exscientia) from ``train_bench.py`` lines.

The peer's benchmark (``../shared/bench/peer_physicsml/train_bench.py``) prints one JSON line per
run whose ``per_epoch`` records hold Lightning's logged losses, not errors. For the validation
split they are, per epoch (molflux logs them with ``on_epoch=True`` and the batch's number of
structures as its weight):

- ``val/total/y_graph_scalars``: energy weight x MSE of the **total** energy (eV²), the
  batch-size-weighted mean over validation batches, i.e. the MSE over all structures;
- ``val/total/y_node_vector``: force weight x MSE of the force **components** ((eV/Å)²), the
  same batch-size-weighted mean. It equals the MSE over all components because every structure
  of a single-molecule file has the same number of atoms.

So, with ``n`` atoms per structure, ``E RMSE/atom = sqrt(y_graph_scalars / w_E) / n`` and
``F RMSE = sqrt(y_node_vector / w_F)``. The last epoch is checked against the line's final
``metrics.val.*_rmse_*`` (computed by ``model.predict`` after training, from the same weights);
a mismatch above ``TOLERANCE`` stops the script. MAEs are not logged per epoch, so only the final
MAEs (from ``metrics.val``) are written, on the last epoch's record. The ``train/total/*``
values are the last training step's, not epoch means, and are not used.

    python3 experiments/accuracy/peer_epoch_curves.py \\
        experiments/accuracy/results/physicsml_ethanol_3seeds.jsonl \\
        experiments/model_zoo/results/accuracy_aspirin_3seeds.jsonl \\
        --out experiments/accuracy/results/curves_physicsml.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

IMPL = "physicsml 0.6.0"
TOLERANCE = 1e-3
"""Largest relative difference allowed between the converted last epoch and the final RMSEs
(the logged losses are float32 sums, the final metrics float64 on float32 predictions)."""


def peer_lines(path: Path) -> list[dict[str, Any]]:
    """The physicsml lines of a JSON-lines file (ours, if mixed in, are skipped)."""
    lines = [json.loads(text) for text in path.read_text().splitlines() if text.strip()]
    return [line for line in lines if line.get("bench") == "physicsml_peer_baseline"]


def curve(line: dict[str, Any]) -> list[dict[str, Any]]:
    """One run's per-epoch records; raises ValueError if the last epoch disagrees with the
    final metrics."""
    if not line["ok"]:
        raise ValueError(f"{line['tag']} failed: {line['error']}")
    energy_weight = float(line["loss"]["energy"][1])
    forces_weight = float(line["loss"]["forces"][1])
    n_atoms = line["metrics"]["val"]["n_atoms"] / line["metrics"]["val"]["n_structures"]
    if n_atoms != line["n_atoms_mean"]:
        raise ValueError(f"{line['tag']}: structures of different sizes, the conversion needs one")
    model = line["model"].removesuffix("_model")
    data = Path(line["data"]).stem
    records, elapsed = [], 0.0
    for epoch in line["per_epoch"]:
        elapsed += epoch["train_s"]
        energy_mse = epoch["val/total/y_graph_scalars"] / energy_weight
        forces_mse = epoch["val/total/y_node_vector"] / forces_weight
        records.append(
            {
                "impl": IMPL,
                "model": model,
                "data": data,
                "seed": int(line["seed"]),
                "epoch": int(epoch["epoch"]),
                "val_energy_rmse_meV_per_atom": 1e3 * math.sqrt(energy_mse) / n_atoms,
                "val_forces_rmse_meV_per_A": 1e3 * math.sqrt(forces_mse),
                "epoch_s": epoch["train_s"],
                "elapsed_s": elapsed,
            }
        )
    final = line["metrics"]["val"]
    last = records[-1]
    for key, final_key in (
        ("val_energy_rmse_meV_per_atom", "energy_rmse_meV_per_atom"),
        ("val_forces_rmse_meV_per_A", "forces_rmse_meV_per_A"),
    ):
        difference = abs(last[key] / final[final_key] - 1.0)
        if difference > TOLERANCE:
            raise ValueError(
                f"{line['tag']}: epoch {last['epoch']} {key} = {last[key]:.4f} but the final "
                f"{final_key} = {final[final_key]:.4f} (relative difference {difference:.1e})"
            )
    last["val_energy_mae_meV_per_atom"] = final["energy_mae_meV_per_atom"]
    last["val_forces_mae_meV_per_A"] = final["forces_mae_meV_per_A"]
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+", help="JSON-lines files of train_bench.py")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("experiments/accuracy/results/curves_physicsml.jsonl"),
        help="per-epoch records are written here (replaced)",
    )
    args = parser.parse_args()
    out = []
    for path in args.results:
        for line in peer_lines(path):
            records = curve(line)
            last = records[-1]
            print(
                f"{last['data']} {last['model']} s{last['seed']}: epoch {last['epoch']} "
                f"E RMSE {last['val_energy_rmse_meV_per_atom']:.3f} "
                f"(final {line['metrics']['val']['energy_rmse_meV_per_atom']:.3f}) meV/atom, "
                f"F RMSE {last['val_forces_rmse_meV_per_A']:.2f} "
                f"(final {line['metrics']['val']['forces_rmse_meV_per_A']:.2f}) meV/Å"
            )
            out.extend(records)
    args.out.write_text("".join(json.dumps(record) + "\n" for record in out))
    print(f"{len(out)} records -> {args.out}")


if __name__ == "__main__":
    main()
