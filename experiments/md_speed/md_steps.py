"""Steps per second of ASE velocity-Verlet MD with one engine, one system, one thread count.

Runs in our venv (``--engine ours`` / ``exported``) or in mace-torch's (``--engine mace``; it
then imports nothing from physicsml). Prints one JSON line. The models are untrained: only
the architecture and its size matter for speed. ``run.py`` calls this, interleaved.

usage: python md_steps.py --engine ours --system aspirin --threads 1 --steps 200 --work DIR
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any, cast

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.io import read
from ase.md.verlet import VelocityVerlet

ASPIRIN = Path(__file__).resolve().parents[2] / "physicsml" / "data_files" / "aspirin.extxyz"
ENERGY_SCALE = 0.05
"""Scale of the untrained models' energy (eV): small forces, so the MD stays near free flight
for the few hundred femtoseconds timed (faster atoms than bonded ones: more list rebuilds)."""
AVG_NEIGHBOURS = {"aspirin": 12.0, "cu500": 42.0}
REFERENCE_ENERGIES = {1: -13.6, 6: -1029.0, 8: -2039.0, 29: -3.5}


def make_atoms(system: str) -> Atoms:
    """Aspirin's first frame, or 500 fcc Cu atoms (5x5x5 conventional cells) rattled by 0.05 Å;
    Maxwell-Boltzmann velocities at 300 K, no net momentum (seeded)."""
    if system == "aspirin":
        atoms = cast(Atoms, read(ASPIRIN, index=0))
    else:
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(5)
        atoms.rattle(0.05, seed=1)
    atoms.calc = None
    rng = np.random.default_rng(0)
    masses = atoms.get_masses()[:, None]
    momenta = rng.normal(size=(len(atoms), 3)) * np.sqrt(masses * units.kB * 300.0)
    atoms.set_momenta(momenta - momenta.mean(axis=0) * masses / masses.mean())
    return atoms


def mace_hyperparameters() -> dict[str, Any]:
    """Our MACE preset (conf/module/mace.yaml), the size of mace-torch's reference model."""
    import yaml

    preset = Path(__file__).resolve().parents[2] / "conf" / "module" / "mace.yaml"
    model = dict(yaml.safe_load(preset.read_text())["model"])
    model.pop("architecture")
    return model


def our_model_file(system: str, work: Path) -> Path:
    """An untrained MACE of the preset's size for the system's elements, saved as training
    would save it (written once)."""
    path = work / f"ours_{system}.pt"
    if path.exists():
        return path
    import torch

    from physicsml.lightning.module import PotentialModule
    from physicsml.saved_model import GraphSettings, ModelSpec, write_model_file

    elements = sorted(set(make_atoms(system).numbers.tolist()))
    spec = ModelSpec(
        architecture="mace",
        hyperparameters=mace_hyperparameters(),
        training={
            "compute_forces": True,
            "y_graph_scalars_loss": {"name": "MSELoss"},
            "y_node_vector_loss": {"name": "MSELoss"},
        },
        elements=elements,
        num_elements=len(elements),
        statistics={
            "elements": elements,
            "reference_energies": [REFERENCE_ENERGIES[z] for z in elements],
            "energy_scale": ENERGY_SCALE,
            "avg_num_neighbours": AVG_NEIGHBOURS[system],
            "num_structures": 1,
        },
        targets={"y_graph_scalars": ["energy"], "y_node_vector": "forces"},
        graph=GraphSettings(cut_off=5.0),
    )
    torch.manual_seed(0)
    work.mkdir(parents=True, exist_ok=True)
    write_model_file(spec, PotentialModule(spec).state_dict(), path)
    return path


class ExportedCalculator(Calculator):
    """Energy and forces from a ``physicsml-export`` TorchScript file, edges from our Verlet
    list (``forward_edges``)."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, path: Path, skin: float = 0.5) -> None:
        super().__init__()
        import torch

        from physicsml.calculators.neighbours import SkinNeighbourList

        self.torch = torch
        self.potential = torch.jit.load(str(path))
        self.neighbours = SkinNeighbourList(self.potential.cut_off, skin)

    def calculate(
        self, atoms: Any = None, properties: Any = None, system_changes: Any = all_changes
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        torch = self.torch
        positions = self.atoms.positions
        cell, pbc = self.atoms.cell.array, self.atoms.pbc
        i, j, shifts = self.neighbours.edges(positions, cell, pbc, self.atoms.numbers)
        out = self.potential.forward_edges(
            torch.from_numpy(positions),
            torch.from_numpy(self.atoms.numbers.astype(np.int64)),
            torch.from_numpy(np.stack([i, j])),
            torch.from_numpy(shifts @ cell),
            torch.from_numpy(cell),
            torch.from_numpy(pbc),
            False,
        )
        energy = float(out["energy"])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": out["forces"].double().numpy(),
        }


def mace_torch_calculator(system: str) -> Calculator:
    """mace-torch's calculator around an untrained ScaleShiftMACE built as ``mace_run_train
    --model MACE`` builds it with the hyperparameters of ../shared/bench/peer_mace."""
    import torch
    from e3nn import o3
    from mace import modules
    from mace.calculators import MACECalculator

    hyper = mace_hyperparameters()
    elements = sorted(set(make_atoms(system).numbers.tolist()))
    torch.manual_seed(0)
    model = modules.ScaleShiftMACE(
        r_max=5.0,
        num_bessel=hyper["num_bessel"],
        num_polynomial_cutoff=hyper["num_polynomial_cutoff"],
        max_ell=hyper["max_ell"],
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
        num_interactions=hyper["num_interactions"],
        num_elements=len(elements),
        hidden_irreps=o3.Irreps(hyper["hidden_irreps"]),
        MLP_irreps=o3.Irreps(hyper["mlp_irreps"]),
        atomic_energies=np.array([REFERENCE_ENERGIES[z] for z in elements]),
        avg_num_neighbors=AVG_NEIGHBOURS[system],
        atomic_numbers=elements,
        correlation=hyper["correlation"],
        gate=torch.nn.functional.silu,
        radial_MLP=list(hyper["radial_mlp"]),
        atomic_inter_scale=ENERGY_SCALE,
        atomic_inter_shift=0.0,
    )
    return MACECalculator(models=model.float(), device="cpu", default_dtype="float32")


def main() -> None:
    parser = argparse.ArgumentParser(prog="md_steps.py", description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["ours", "exported", "mace"], required=True)
    parser.add_argument("--system", choices=["aspirin", "cu500"], required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--work", type=Path, required=True, help="folder for the model files")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(args.threads)
    atoms = make_atoms(args.system)
    calculator: Calculator
    if args.engine == "mace":
        calculator = mace_torch_calculator(args.system)
    else:
        model = our_model_file(args.system, args.work)
        if args.engine == "ours":
            from physicsml.calculators import PhysicsMLCalculator

            calculator = PhysicsMLCalculator(model)
        else:
            from physicsml.export import export_model

            exported = model.with_suffix(".ts")
            if not exported.exists():
                export_model(model, exported)
            calculator = ExportedCalculator(exported)
    atoms.calc = calculator
    dynamics = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    dynamics.run(args.warmup)
    builds = getattr(getattr(calculator, "neighbours", None), "builds", None)
    start = time.perf_counter()
    dynamics.run(args.steps)
    seconds = time.perf_counter() - start
    if builds is not None:
        builds = calculator.neighbours.builds - builds  # type: ignore[attr-defined]
    result = {
        "engine": args.engine,
        "system": args.system,
        "atoms": len(atoms),
        "threads": args.threads,
        "steps": args.steps,
        "seconds": round(seconds, 4),
        "steps_per_s": round(args.steps / seconds, 3),
        "list_builds": builds,
        "parameters": sum(
            p.numel()
            for p in (
                calculator.models[0].parameters()  # type: ignore[attr-defined]
                if args.engine == "mace"
                else (
                    calculator.module.parameters()  # type: ignore[attr-defined]
                    if args.engine == "ours"
                    else calculator.potential.parameters()  # type: ignore[attr-defined]
                )
            )
        ),
        "final_energy_eV": round(float(atoms.get_potential_energy()), 4),
        "torch": torch.__version__,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
