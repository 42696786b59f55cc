#!/usr/bin/env python
"""Train our models with the peer benchmark's protocol; print one JSON line (the peer's keys).

    python experiments/model_zoo/bench_ours.py --data ../shared/data/md_xtb/aspirin.extxyz \\
        --model mace --epochs 30 --max-structures 200 --threads 2 [--out-dir DIR]
    python experiments/model_zoo/bench_ours.py profile --data ... --model mace --steps 20

The protocol is that of ``../shared/bench/peer_physicsml/README.md`` (``train_bench.py``):
split by ``numpy.random.default_rng(seed).permutation`` (``--max-structures`` keeps the first
M), train = first floor(0.8 n), validation = the rest; Adam lr 1e-3 without scheduler; batch 8
(validation too); cut-off 5 Å; float32; forces by autograd; the peer's hyperparameters for
each model (``PEER_HPARAMS``). The data go through our real pipeline: the two splits become
two stores (``physicsml.api.Model.train`` writes them with ``write_store``), the datamodule
builds and caches neighbour lists and the training statistics (least-squares E0s, RMS-force
scale, average neighbour count), and ``physicsml.train.train`` fits.

Loss: the peer's is 1 x MSE(total energy) + 10 x MSE(force components). Our module compares
energies per atom, so the energy weight is multiplied by the mean of N^2 over the training
structures (exactly the peer's loss for single-molecule data such as aspirin, N = 21).

Timing: ``setup_s`` runs from reading the file to the start of the first training epoch
(stores, neighbour lists, statistics, model); epochs are timed by a callback that subtracts
validation; ``structures_per_s`` = structures per epoch / median epoch time over epochs 2..N.
Final MAEs come from predicting the train and validation structures with the trained model.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, cast

import ase.io
import lightning as L
import numpy as np
import torch
from omegaconf import open_dict

PEER_HPARAMS: dict[str, tuple[str, list[str]]] = {
    "mace": (
        "mace",
        [
            "module.model.hidden_irreps=32x0e+32x1o",
            "module.model.max_ell=3",
            "module.model.correlation=3",
            "module.model.num_interactions=2",
            "module.model.num_bessel=8",
            "module.model.num_polynomial_cutoff=5",
            "module.model.mlp_irreps=16x0e",
        ],
    ),
    # physicsml's EGNN runs an extra embedding block: its num_layers=4 is our num_layers=5.
    "egnn": (
        "egnn",
        [
            "module.model.c_hidden=64",
            "module.model.num_layers=5",
            "module.model.num_layers_phi=2",
            "module.model.num_rbf=8",
            "module.model.pool_type=sum",
        ],
    ),
    "nequip": (
        "nequip",
        [
            "module.model.num_features=32",
            "module.model.num_layers=3",
            "module.model.max_ell=2",
            "module.model.num_bessel=8",
            "module.model.num_polynomial_cutoff=6",
            "module.model.mlp_irreps=16x0e",
            "module.model.radial_mlp_width=64",
            "module.model.radial_mlp_depth=2",
        ],
    ),
    "allegro": (
        "allegro",
        [
            "module.model.num_layers=2",
            "module.model.max_ell=2",
            "module.model.env_embed_multiplicity=16",
            "module.model.latent_mlp_latent_dimensions=[128,128]",
            "module.model.two_body_latent_mlp_latent_dimensions=[32,64,128]",
            "module.model.mlp_latent_dimensions=[64]",
            "module.model.num_bessel=8",
        ],
    ),
    "tensor_net": (
        "tensornet",
        [
            "module.model.num_features=64",
            "module.model.num_radial=32",
            "module.model.num_interaction_layers=2",
            "module.model.embedding_mlp_hidden_dims=[128]",
            "module.model.interaction_mlp_hidden_dims=[64,128]",
            "module.model.scalar_output_mlp_hidden_dims=[64,32]",
        ],
    ),
    # ANI-1 element set (H, C, N, O); the radial AEV cut-off 5.2 Å needs edges up to 5.2 Å.
    "ani": ("ani", ["datamodule.elements=[1,6,7,8]", "datamodule.cut_off=5.2"]),
}
"""Peer model name (``train_bench.py --model``) -> our module name and the peer's settings."""


class EpochTimer(L.Callback):
    """Wall time of every training epoch without its validation, and structures seen."""

    instances: list[EpochTimer] = []

    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[dict[str, float]] = []
        self.train_start: float | None = None
        self._start = self._val = self._val_start = 0.0
        self._structures = 0
        EpochTimer.instances.append(self)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.train_start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._val, self._structures = time.perf_counter(), 0.0, 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        self._structures += int(batch["ptr"].numel() - 1)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val += time.perf_counter() - self._val_start

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = time.perf_counter() - self._start
        validation = {  # this epoch's validation metrics (validation ran before this hook)
            key: float(value)
            for key, value in trainer.callback_metrics.items()
            if key.startswith("val_")
        }
        self.epochs.append(
            {
                "total_s": total,
                "train_s": total - self._val,
                "structures": self._structures,
                **validation,
            }
        )


def read_split(
    path: str, seed: int, max_structures: int, train_fraction: float
) -> tuple[list[Any], list[Any], np.ndarray, np.ndarray]:
    """The peer's split: a seeded permutation, optionally cut, first floor(f n) train."""
    frames = ase.io.read(path, ":")
    perm = np.random.default_rng(seed).permutation(len(frames))
    if max_structures and max_structures < len(frames):
        perm = perm[:max_structures]
    n_train = int(np.floor(train_fraction * len(perm)))
    train_idx, val_idx = perm[:n_train], perm[n_train:]
    return [frames[i] for i in train_idx], [frames[i] for i in val_idx], train_idx, val_idx


def overrides_for(args: argparse.Namespace, train_atoms: list[Any], workdir: Path) -> list[str]:
    """Our config overrides reproducing the peer's run."""
    name, hparams = PEER_HPARAMS[args.model]
    n2 = float(np.mean([len(a) ** 2 for a in train_atoms]))
    return [
        f"module={name}",
        "datamodule=default",
        "logger=none",
        "callbacks=none",
        f"seed={args.seed}",
        *([f"datamodule.cut_off={args.cut_off}"] if args.model != "ani" else []),
        f"datamodule.split.seed={args.seed}",
        f"datamodule.train.batch_size={args.batch_size}",
        f"datamodule.validation.batch_size={args.batch_size}",
        f"datamodule.cache_dir={workdir / 'cache'}",
        *([f"datamodule.pre_batch={args.pre_batch}"] if args.pre_batch != "none" else []),
        "module.optimizer.name=Adam",
        f"module.optimizer.config={{lr:{args.lr}}}",
        "module.scheduler.name=null",
        f"module.y_graph_scalars_loss.weight={args.energy_weight * n2}",
        f"module.y_node_vector_loss.weight={args.forces_weight}",
        f"trainer.max_epochs={args.epochs}",
        f"trainer.precision={args.precision}",
        f"trainer.accelerator={args.accelerator}",
        "trainer.enable_checkpointing=false",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "trainer.num_sanity_val_steps=0",
        *hparams,
        *args.override,
    ]


def errors(predicted: dict[str, list[np.ndarray]], atoms: list[Any]) -> dict[str, float]:
    """Energy (meV/atom) and force (meV/Å) errors, as the peer computes them."""
    e_pred = np.array([float(np.asarray(e).reshape(-1)[0]) for e in predicted["energy"]])
    e_true = np.array([a.get_potential_energy() for a in atoms])
    n = np.array([len(a) for a in atoms], dtype=np.float64)
    f_pred = np.concatenate([np.asarray(f).reshape(-1) for f in predicted["forces"]])
    f_true = np.concatenate([a.get_forces().reshape(-1) for a in atoms])
    de, df = (e_pred - e_true) / n, f_pred - f_true
    return {
        "energy_mae_meV_per_atom": float(np.mean(np.abs(de)) * 1e3),
        "energy_rmse_meV_per_atom": float(np.sqrt(np.mean(de**2)) * 1e3),
        "forces_mae_meV_per_A": float(np.mean(np.abs(df)) * 1e3),
        "forces_rmse_meV_per_A": float(np.sqrt(np.mean(df**2)) * 1e3),
        "n_structures": len(atoms),
        "n_atoms": int(n.sum()),
    }


def keep_for_md(run_dir: Path, keep: Path, data: str, val_idx: np.ndarray) -> None:
    """Copy the trained ``model.pt`` to ``keep`` with a ``split.json`` naming the validation
    frames of ``data`` (what ``experiments/md_stability/run.py`` starts its trajectories from)."""
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy2(run_dir / "model.pt", keep / "model.pt")
    validation = {"source": str(Path(data).resolve()), "indices": val_idx.tolist()}
    (keep / "split.json").write_text(json.dumps({"validation": validation}))


def gpu_figures() -> dict[str, Any]:
    """The GPU's name and peak allocated memory, when training ran on one."""
    if not torch.cuda.is_available():
        return {}
    return {
        "gpu": torch.cuda.get_device_name(),
        "peak_gpu_mem_mb": torch.cuda.max_memory_allocated() / 2**20,
    }


def bench(args: argparse.Namespace) -> dict[str, Any]:
    """One training run; the result dict with the peer's keys."""
    from physicsml.api import Model

    start = time.perf_counter()
    train_atoms, val_atoms, train_idx, val_idx = read_split(
        args.data, args.seed, args.max_structures, args.train_fraction
    )
    load_s = time.perf_counter() - start
    workdir = Path(tempfile.mkdtemp(prefix=f"ours_bench_{args.model}_"))
    overrides = overrides_for(args, train_atoms, workdir)
    model = Model.from_overrides(overrides, run_dir=workdir / "run")
    with open_dict(model.cfg):
        model.cfg.callbacks = {"epoch_timer": {"_target_": f"{__name__}.EpochTimer"}}
    fit_start = time.perf_counter()
    model.train(train_atoms, val_atoms)
    train_call_s = time.perf_counter() - fit_start
    gpu = gpu_figures()  # before prediction, so that the peak memory is training's
    timer = EpochTimer.instances[-1]
    assert timer.train_start is not None
    setup_s = load_s + timer.train_start - fit_start
    epochs = timer.epochs
    after_first = epochs[1:] or epochs
    epoch_s = statistics.median(e["train_s"] for e in after_first)
    metrics = {
        "train": errors(model.predict(train_atoms, batch_size=32), train_atoms),
        "val": errors(model.predict(val_atoms, batch_size=32), val_atoms),
    }
    module = model.module
    assert module is not None
    if args.keep:
        keep_for_md(model.run_dir, Path(args.keep), args.data, val_idx)
    data_stem = Path(args.data).stem
    return {
        "bench": "physicsml_ours",
        "tag": args.tag
        or f"ours_{data_stem}_{args.model}_e{args.epochs}_b{args.batch_size}_t{args.threads}",
        "ok": True,
        "data": str(Path(args.data).resolve()),
        "model": args.model,
        "overrides": overrides,
        "n_params": int(sum(p.numel() for p in module.model.parameters())),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "pre_batch": args.pre_batch,
        "cut_off": args.cut_off,
        "seed": args.seed,
        "threads": args.threads,
        "n_train": len(train_atoms),
        "n_val": len(val_atoms),
        "load_s": load_s,
        "setup_s": setup_s,
        "prebatch_s": 0.0,
        "train_call_s": train_call_s,
        "epoch_train_s_median_after_first": epoch_s,
        "epoch_total_s_median_after_first": statistics.median(e["total_s"] for e in after_first),
        "first_epoch_train_s": epochs[0]["train_s"],
        "structures_per_epoch": epochs[-1]["structures"],
        "structures_per_s": epochs[-1]["structures"] / epoch_s,
        "metrics": metrics,
        "per_epoch": epochs,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "precision": args.precision,
        "accelerator": args.accelerator,
        **gpu,
        "wall_s": time.perf_counter() - start,
        "split": {"train_idx": train_idx.tolist(), "val_idx": val_idx.tolist()},
        "workdir": str(workdir),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "host": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }


def profile(args: argparse.Namespace) -> dict[str, Any]:
    """Median time of each phase of a bare training step (outside Lightning), as the peer's
    ``step_profile.py``: loader (neighbour lookup + collation), forward, forces, loss,
    backward, Adam; optionally the top operators of ``torch.profiler``."""
    from omegaconf import OmegaConf

    from physicsml.allocator import keep_freed_memory
    from physicsml.api import Model, compose_config
    from physicsml.config.schema import DataModuleConfig
    from physicsml.data.datamodule import AtomsDataModule
    from physicsml.lightning.module import PotentialModule
    from physicsml.models.utils import scatter_sum
    from physicsml.train import model_spec

    train_atoms, _, _, _ = read_split(args.data, args.seed, args.max_structures, 0.8)
    workdir = Path(tempfile.mkdtemp(prefix=f"ours_profile_{args.model}_"))
    cfg = compose_config(overrides_for(args, train_atoms, workdir), run_dir=workdir / "run")
    if cfg.keep_freed_memory_mb is not None:  # as physicsml.train.train
        keep_freed_memory(cfg.keep_freed_memory_mb)
    with open_dict(cfg):
        cfg.datamodule.dataset = None
        cfg.datamodule.train_data = Model(cfg)._as_source(train_atoms, "train")
    dm = AtomsDataModule(cast(DataModuleConfig, OmegaConf.to_object(cfg.datamodule)), workdir)
    dm.prepare_data()
    dm.setup("fit")
    module = PotentialModule(model_spec(cfg.module, dm))
    module.train()
    reference = cast(torch.Tensor, module.reference_energies)
    loss_fn = torch.nn.MSELoss()
    energy_weight = module.losses["y_graph_scalars"][1]
    forces_weight = module.losses["y_node_vector"][1]
    opt = cast(torch.optim.Optimizer, module.configure_optimizers())  # as in training
    phases: dict[str, list[float]] = {
        k: [] for k in ("loader", "forward", "forces", "loss", "backward", "adam", "total")
    }

    def step(batch_iter: Any) -> list[float]:
        t0 = time.perf_counter()
        batch = next(batch_iter)
        t1 = time.perf_counter()
        batch["coordinates"].requires_grad_(True)
        out = module.model(batch)
        node_energy = module.energy_scale * out["node_energy"] + reference[batch["species"]]
        energy = scatter_sum(node_energy, batch["batch"], batch["ptr"].numel() - 1)
        t2 = time.perf_counter()
        (grad,) = torch.autograd.grad(energy.sum(), batch["coordinates"], create_graph=True)
        t3 = time.perf_counter()
        n = (batch["ptr"][1:] - batch["ptr"][:-1]).to(energy.dtype)
        loss = energy_weight * loss_fn(energy / n, batch["y_graph_scalars"][:, 0] / n)
        loss = loss + forces_weight * loss_fn(-grad, batch["y_node_vector"])
        t4 = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        t5 = time.perf_counter()
        opt.step()
        t6 = time.perf_counter()
        return [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t6 - t0]

    def batches() -> Any:
        while True:
            yield from dm.train_dataloader()

    it = batches()
    for _ in range(args.steps):
        for key, value in zip(phases, step(it), strict=True):
            phases[key].append(value)
    result: dict[str, Any] = {
        "model": args.model,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "steps": args.steps,
        "median_ms": {k: 1e3 * statistics.median(v[2:] or v) for k, v in phases.items()},
        "n_params": int(sum(p.numel() for p in module.model.parameters())),
    }
    if args.torch_profiler:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                step(it)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
        result["top_ops"] = table
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    mode = "bench"
    if argv and argv[0] == "profile":
        mode, argv = "profile", argv[1:]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--model", default="mace", choices=sorted(PEER_HPARAMS))
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--pre-batch", default="none", choices=["none", "in_memory", "on_disk"])
    p.add_argument("--cut-off", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-structures", type=int, default=0, help="0 = all")
    p.add_argument("--train-fraction", type=float, default=0.8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--energy-weight", type=float, default=1.0)
    p.add_argument("--forces-weight", type=float, default=10.0)
    p.add_argument("--precision", default="32", help="trainer.precision, e.g. 32, bf16-mixed")
    p.add_argument("--accelerator", default="cpu", help="trainer.accelerator: cpu or gpu")
    p.add_argument("--tag", default=None)
    p.add_argument("--out-dir", default=None, help="also append the JSON line to DIR/all.jsonl")
    p.add_argument("--keep", default=None, help="copy model.pt and the split here (for MD)")
    p.add_argument("--steps", type=int, default=20, help="profile: training steps to time")
    p.add_argument("--torch-profiler", action="store_true", help="profile: top operators")
    p.add_argument("--override", action="append", default=[], help="extra config override")
    args = p.parse_args(argv)

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    # Lightning prints to stdout: keep the real stdout for the JSON line only.
    sys.stdout.flush()
    json_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    result = profile(args) if mode == "profile" else bench(args)
    line = json.dumps(result)
    if args.out_dir:
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(args.out_dir) / "all.jsonl", "a") as f:
            f.write(line + "\n")
    json_out.write(line + "\n")
    json_out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
