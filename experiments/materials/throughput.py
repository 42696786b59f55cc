#!/usr/bin/env python
"""Training throughput with stress, ours vs mace-torch, side by side: one JSON line.

    python experiments/materials/throughput.py --mace-model MODEL_FILE [--rounds 6] [--steps 5]

Two worker processes (ours in this Python, mace-torch in ``--mace-python``) each build their
training batches and model once, then wait. The driver alternates them: in each round, one
worker runs ``--steps`` training steps while the other idles, then the other does, so that
both see the same machine load and the same ``--threads``. A step is what training does per
batch: the next batch from the loader (ours: neighbour lookup and collation; mace-torch:
collation of its precomputed graphs), energy, forces and stress by autograd, the loss
(10 x MSE(E/N) + 1 x MSE(F) + 1000 x MSE(sigma)), backward and an AMSGrad step.
The figure is training structures per second: mean structures per step / median step time
over all rounds; a first round warms both workers up and is dropped.

Ours uses our real training step (``PotentialModule._step``, as Lightning's training_step
minus logging); mace-torch the one of ``mace.tools.train.take_step``, on the model file that
its training wrote (weights do not change the cost).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def ours_step_factory(args: argparse.Namespace) -> tuple[Callable[[], int], dict[str, Any]]:
    """Our datamodule and module on ``args.ours_train``; a function running one training step
    and returning its number of structures."""
    from typing import cast

    import torch
    from omegaconf import OmegaConf, open_dict

    from physicsml.api import compose_config
    from physicsml.config.schema import DataModuleConfig
    from physicsml.data.datamodule import AtomsDataModule
    from physicsml.lightning.module import PotentialModule
    from physicsml.train import model_spec

    workdir = Path(tempfile.mkdtemp(prefix="materials_throughput_"))
    cfg = compose_config(ours_overrides(args, workdir), run_dir=workdir / "run")
    with open_dict(cfg):
        cfg.datamodule.dataset = None
        cfg.datamodule.train_data = str(Path(args.ours_train).resolve())
    dm = AtomsDataModule(cast(DataModuleConfig, OmegaConf.to_object(cfg.datamodule)), workdir)
    dm.prepare_data()
    dm.setup("fit")
    module = PotentialModule(model_spec(cfg.module, dm))
    module.train()
    optimizer = cast(torch.optim.Optimizer, module.configure_optimizers())

    def batches() -> Iterator[dict[str, Any]]:
        while True:
            yield from dm.train_dataloader()

    stream = batches()

    def step() -> int:
        batch = next(stream)
        loss = module._step(batch, "train")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return int(batch["ptr"].numel() - 1)

    info = {"n_params": int(sum(p.numel() for p in module.model.parameters()))}
    return step, info


def ours_overrides(args: argparse.Namespace, workdir: Path) -> list[str]:
    """Our config: the MACE of README.md ("Setups") with stress, matching mace-torch's run."""
    return [
        "module=mace",
        "logger=none",
        "callbacks=none",
        f"datamodule.cut_off={args.r_max}",
        f"datamodule.train.batch_size={args.batch_size}",
        "datamodule.y_graph_scalars=[energy]",
        "datamodule.y_node_vector=forces",
        "datamodule.y_graph_tensor=stress",
        f"datamodule.cache_dir={workdir / 'cache'}",
        "module.compute_stress=true",
        "module.optimizer.name=Adam",
        f"module.optimizer.config.lr={args.lr}",
        "+module.optimizer.config.amsgrad=true",
        "module.scheduler.name=null",
        "module.model.hidden_irreps=32x0e+32x1o",
        "module.model.mlp_irreps=16x0e",
    ]


def mace_step_factory(args: argparse.Namespace) -> tuple[Callable[[], int], dict[str, Any]]:
    """mace-torch's model file and data; a function running one training step."""
    import torch
    from mace import data, modules, tools
    from mace.data.utils import KeySpecification, update_keyspec_from_kwargs
    from mace.tools import torch_geometric
    from mace.tools.default_keys import DefaultKeys

    torch.set_default_dtype(torch.float32)
    model = torch.load(args.mace_model, weights_only=False, map_location="cpu").float().train()
    keys = update_keyspec_from_kwargs(KeySpecification(), DefaultKeys.keydict())
    _, configs = data.load_from_xyz(args.mace_train, key_specification=keys)
    z_table = tools.AtomicNumberTable([int(z) for z in model.atomic_numbers])
    cutoff = float(model.r_max)
    graphs = [
        data.AtomicData.from_config(c, z_table=z_table, cutoff=cutoff, heads=["Default"])
        for c in configs
    ]
    loader = torch_geometric.dataloader.DataLoader(
        graphs, batch_size=args.batch_size, shuffle=True, drop_last=False
    )
    loss_fn = modules.WeightedEnergyForcesStressLoss(
        energy_weight=10.0, forces_weight=1.0, stress_weight=1000.0
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, amsgrad=True)

    def batches() -> Iterator[Any]:
        while True:
            yield from loader

    stream = batches()

    def step() -> int:
        batch = next(stream)
        out = model(
            batch.to_dict(),
            training=True,
            compute_force=True,
            compute_virials=False,
            compute_stress=True,
        )
        loss = loss_fn(pred=out, ref=batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return int(batch.num_graphs)

    info = {"n_params": int(sum(p.numel() for p in model.parameters()))}
    return step, info


def worker(args: argparse.Namespace) -> None:
    """Build one package's step, then run ``N`` steps per ``N`` read on stdin; one JSON line
    of step times (s) and structures per request."""
    import torch

    # Libraries print to stdout: keep the real stdout for the JSON answers only.
    sys.stdout.flush()
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    factory = ours_step_factory if args.worker == "ours" else mace_step_factory
    step, info = factory(args)
    print(json.dumps({"ready": True, **info}), file=answers, flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        times, structures = [], []
        for _ in range(int(line)):
            start = time.perf_counter()
            structures.append(step())
            times.append(time.perf_counter() - start)
        print(json.dumps({"times": times, "structures": structures}), file=answers, flush=True)


def start_worker(python: str, kind: str, argv: list[str]) -> subprocess.Popen[str]:
    """A worker process of ``kind`` (ours or mace) with 1 BLAS/OpenMP pool of the same size."""
    threads = argv[argv.index("--threads") + 1]
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    return subprocess.Popen(
        [python, str(Path(__file__).resolve()), "--worker", kind, *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def request(proc: subprocess.Popen[str], line: str) -> dict[str, Any]:
    """Send ``line`` to a worker and read its JSON answer."""
    assert proc.stdin is not None and proc.stdout is not None
    if line:
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
    answer = proc.stdout.readline()
    if not answer:
        raise SystemExit(f"throughput.py: error: a worker exited (status {proc.wait()})")
    return dict(json.loads(answer))


def drive(args: argparse.Namespace, argv: list[str]) -> None:
    """Alternate the two workers and print the summary line."""
    workers = {
        "ours": start_worker(sys.executable, "ours", argv),
        "mace-torch": start_worker(str(args.mace_python.resolve()), "mace", argv),
    }
    infos = {name: request(proc, "") for name, proc in workers.items()}
    times: dict[str, list[float]] = {name: [] for name in workers}
    structures: dict[str, list[int]] = {name: [] for name in workers}
    for round_index in range(args.rounds + 1):  # round 0 warms both up and is dropped
        order = list(workers) if round_index % 2 == 0 else list(workers)[::-1]
        for name in order:
            answer = request(workers[name], str(args.steps))
            if round_index > 0:
                times[name] += answer["times"]
                structures[name] += answer["structures"]
    for proc in workers.values():
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
    result: dict[str, Any] = {
        "threads": args.threads,
        "batch_size": args.batch_size,
        "r_max": args.r_max,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
    }
    for name in workers:
        step_s = statistics.median(times[name])
        per_step = statistics.mean(structures[name])
        result[name] = {
            **{k: v for k, v in infos[name].items() if k != "ready"},
            "step_ms_median": 1e3 * step_s,
            "step_ms_min": 1e3 * min(times[name]),
            "structures_per_s": per_step / step_s,
        }
    result["speedup_ours_over_mace_torch"] = (
        result["ours"]["structures_per_s"] / result["mace-torch"]["structures_per_s"]
    )
    line = json.dumps(result)
    print(line)
    if args.out:
        with open(args.out, "a") as handle:
            handle.write(line + "\n")


def main() -> None:
    """Driver, or (``--worker``) one package's worker."""
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser(prog="throughput.py", description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["ours", "mace"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mace-model", required=True, help="a mace-torch .model file")
    parser.add_argument(
        "--mace-python", type=Path, default=HERE.parents[1] / ".peer-mace" / "bin" / "python"
    )
    parser.add_argument("--ours-train", default=str(HERE / "scratch" / "cu_train.extxyz"))
    parser.add_argument("--mace-train", default=str(HERE / "scratch" / "cu_train_mace.xyz"))
    parser.add_argument("--r-max", type=float, default=4.0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="append the JSON line to this file")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    argv = list(sys.argv[1:])
    if "--threads" not in argv:
        argv += ["--threads", str(args.threads)]
    drive(args, argv)


if __name__ == "__main__":
    main()
