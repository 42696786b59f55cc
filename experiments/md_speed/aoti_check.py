"""AOTInductor export of every architecture: does it compile, does it reproduce the Python
model, how long does it compile, and how fast is one call against the TorchScript export.

For each architecture and dtype: an untrained model (the schema's default hyperparameters, or
tests' small ones with ``--size small``) for H, C, O, Cu is exported with
``physicsml-export --format aoti`` and ``--format torchscript``; both evaluate aspirin and a
rattled periodic Cu cell with the training pipeline's edges (``forward_edges``) and are compared
with the Python model (relative error, Frobenius norm); then both are timed on aspirin, one
thread, calls interleaved (median of ``--calls``). Each row is appended as JSON to
``WORK/results.jsonl`` and printed as a markdown table. Run from the repository root:

    OMP_NUM_THREADS=1 python experiments/md_speed/aoti_check.py --dtypes float64 float32
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk
from ase.io import read

from physicsml.config.registry import checked_hyperparameters
from physicsml.data.graph import atoms_to_batch
from physicsml.export import export_model
from physicsml.inference import load_module
from physicsml.lightning.module import PotentialModule
from physicsml.saved_model import GraphSettings, ModelSpec, write_model_file

ROOT = Path(__file__).resolve().parents[2]
ASPIRIN = ROOT / "physicsml" / "data_files" / "aspirin.extxyz"
ELEMENTS = [1, 6, 8, 29]
ARCHITECTURES = ["mace", "nequip", "allegro", "egnn", "tensornet", "ani"]
SMALL = {
    "egnn": {"c_hidden": 8, "num_layers": 2, "num_rbf": 8},
    "mace": {"hidden_irreps": "8x0e + 8x1o", "max_ell": 2, "num_bessel": 4, "radial_mlp": [16]},
    "nequip": {"num_layers": 2, "num_features": 6, "max_ell": 2, "radial_mlp_width": 8},
    "allegro": {"num_layers": 2, "max_ell": 2, "env_embed_multiplicity": 4},
    "tensornet": {"num_features": 8, "num_radial": 8, "num_interaction_layers": 2},
    "ani": {"hidden_dims": [[16, 8]]},
}
"""Small hyperparameters (``--size small``): quick to compile."""


def model_file(architecture: str, size: str, work: Path) -> Path:
    """An untrained model of ``architecture`` for H, C, O, Cu, saved as training saves it."""
    hyperparameters = SMALL[architecture] if size == "small" else {}
    spec = ModelSpec(
        architecture=architecture,
        hyperparameters=checked_hyperparameters(architecture, hyperparameters),
        training={
            "compute_forces": True,
            "y_graph_scalars_loss": {"name": "MSELoss"},
            "y_node_vector_loss": {"name": "MSELoss"},
        },
        elements=ELEMENTS,
        num_elements=len(ELEMENTS),
        statistics={
            "elements": ELEMENTS,
            "reference_energies": [-1.0, -2.0, -3.0, -4.0],
            "energy_scale": 0.7,
            "avg_num_neighbours": 12.0,
            "num_structures": 1,
        },
        targets={"y_graph_scalars": ["energy"], "y_node_vector": "forces"},
        graph=GraphSettings(cut_off=5.2 if architecture == "ani" else 5.0),
    )
    torch.manual_seed(0)
    path = work / f"{architecture}-{size}.pt"
    write_model_file(spec, PotentialModule(spec).state_dict(), path)
    return path


def structures() -> dict[str, Atoms]:
    """Aspirin's first frame and 32 rattled fcc Cu atoms in a periodic cubic cell."""
    cu = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    cu.rattle(0.05, seed=0)
    return {"aspirin": read(ASPIRIN, index=0), "cu32": cu}


def edge_inputs(atoms: Atoms, cut_off: float, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """``forward_edges``'s arguments with the training pipeline's edges (contiguous, as the
    package requires)."""
    batch = atoms_to_batch([atoms], ELEMENTS, cut_off, dtype=dtype)
    args = (
        torch.from_numpy(atoms.positions.copy()).to(dtype),
        torch.from_numpy(atoms.numbers.astype(np.int64)),
        batch["edge_index"],
        batch["cell_shift"],
        torch.from_numpy(atoms.cell.array.copy()).to(dtype),
        torch.from_numpy(atoms.pbc.copy()),
    )
    return tuple(arg.contiguous() for arg in args)


def relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.double() - expected.double()).norm() / expected.double().norm())


def check(architecture: str, dtype_name: str, size: str, calls: int, work: Path) -> dict[str, Any]:
    """One row: compile time, errors against the Python model, time per call."""
    dtype = {"float32": torch.float32, "float64": torch.float64}[dtype_name]
    path = model_file(architecture, size, work)
    row: dict[str, Any] = {"architecture": architecture, "dtype": dtype_name, "size": size}
    package_path = work / f"{architecture}-{size}-{dtype_name}.pt2"
    start = time.perf_counter()
    try:
        export_model(path, package_path, "aoti", dtype_name)
    except Exception as error:  # noqa: BLE001 -- the row reports why it does not compile
        row["compiles"] = False
        row["error"] = str(error).splitlines()[0][:300] if str(error) else repr(error)
        (work / f"{architecture}-{dtype_name}.error.txt").write_text(traceback.format_exc())
        return row
    row["compiles"] = True
    row["compile_s"] = time.perf_counter() - start
    script_path = work / f"{architecture}-{size}-{dtype_name}.ts"
    export_model(path, script_path, "torchscript", dtype_name)
    package = torch._inductor.aoti_load_package(str(package_path))
    scripted = torch.jit.load(str(script_path))
    module = load_module(path).to(dtype)
    cut_off = module.spec.graph.cut_off
    for key, atoms in structures().items():
        periodic = bool(atoms.pbc.any())
        batch = atoms_to_batch([atoms], ELEMENTS, cut_off, dtype=dtype)
        expected = module(batch, forces=True, stress=periodic)
        args = edge_inputs(atoms, cut_off, dtype)
        computed = package(*args)
        row[f"{key}_energy_rel"] = relative(computed["energy"], expected["energy"].detach()[0])
        row[f"{key}_forces_rel"] = relative(computed["forces"], expected["forces"].detach())
        if periodic:
            row[f"{key}_stress_rel"] = relative(computed["stress"], expected["stress"].detach()[0])
    args = edge_inputs(structures()["aspirin"], cut_off, dtype)
    timings: dict[str, list[float]] = {"aoti": [], "torchscript": []}
    for _ in range(5):  # warm-up (TorchScript's profiling executor optimises on early calls)
        package(*args)
        scripted.forward_edges(*args)
    for _ in range(calls):  # interleaved, so that the machine's load hits both alike
        start = time.perf_counter()
        package(*args)
        timings["aoti"].append(time.perf_counter() - start)
        start = time.perf_counter()
        scripted.forward_edges(*args)
        timings["torchscript"].append(time.perf_counter() - start)
    row["aoti_ms"] = 1e3 * statistics.median(timings["aoti"])
    row["torchscript_ms"] = 1e3 * statistics.median(timings["torchscript"])
    row["speedup"] = row["torchscript_ms"] / row["aoti_ms"]
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| architecture | dtype | compiles | compile s | aspirin E / F rel. err. "
        "| Cu32 E / F / stress rel. err. | AOTI ms | TorchScript ms | TS / AOTI |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if not r["compiles"]:
            lines.append(f"| {r['architecture']} | {r['dtype']} | no: {r['error']} | | | | | | |")
            continue
        lines.append(
            f"| {r['architecture']} | {r['dtype']} | yes | {r['compile_s']:.0f} "
            f"| {r['aspirin_energy_rel']:.1e} / {r['aspirin_forces_rel']:.1e} "
            f"| {r['cu32_energy_rel']:.1e} / {r['cu32_forces_rel']:.1e} / "
            f"{r['cu32_stress_rel']:.1e} "
            f"| {r['aoti_ms']:.2f} | {r['torchscript_ms']:.2f} | {r['speedup']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architectures", nargs="+", default=ARCHITECTURES)
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    parser.add_argument("--size", choices=["default", "small"], default="default")
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--work", type=Path, default=ROOT / "experiments/md_speed/scratch/aoti")
    parser.add_argument("--table", action="store_true", help="print WORK/results.jsonl's table")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results = args.work / "results.jsonl"
    if args.table:
        print(table([json.loads(line) for line in results.read_text().splitlines()]))
        return
    torch.set_num_threads(1)
    rows = []
    for dtype in args.dtypes:
        for architecture in args.architectures:
            row = check(architecture, dtype, args.size, args.calls, args.work)
            print(json.dumps(row), flush=True)
            with results.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            rows.append(row)
    print(table(rows))


if __name__ == "__main__":
    main()
