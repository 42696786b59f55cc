"""Data-pipeline benchmark: ingest, neighbour lists and data loading per epoch (not a test).

    python experiments/data_pipeline/benchmark.py [--epochs 3] [--batch-size 16]

For ethanol and aspirin (md_xtb, GFN2-xTB MD) and Cu bulk (emt_bulk, periodic) it prints
the ingest time, the neighbour-list time per structure, and the time to iterate the
training loader for ``pre_batch`` None / in_memory / on_disk with 0 and 2 workers (epoch 0
includes building the pre-batches and starting the workers; "later" is the mean of the
other epochs). Everything is written into a fresh temporary folder.

    python experiments/data_pipeline/benchmark.py --memory 10000 100000 [--work DIR]

instead measures, for stores of that many structures (ethanol frames replicated with a
0.01 Å jitter, synthetic labels; kept in ``DIR`` and reused when given), the memory of an
on_disk training run, twice, each in a fresh process: a first run that builds the neighbour
lists, the statistics and the pre-batches, and a second run that reuses the caches. Each
reports the resident memory after ``setup``, the peak resident memory of the whole process
(setup, building epoch 0, and epoch 1), the peak growth during epoch 1 and its time.

    python experiments/data_pipeline/benchmark.py --steps 30 --datasets aspirin

instead trains the MACE preset (``conf/module/mace.yaml``) for that many steps per loader
and prints the share of step time spent waiting for the next batch (Lightning's simple
profiler: ``train_dataloader_next`` against ``run_training_batch``, first step left out).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from physicsml.config.schema import BatchConfig, DataModuleConfig, PreBatch, SplitConfig
from physicsml.data.datamodule import AtomsDataModule
from physicsml.data.ingest import ingest
from physicsml.data.store import AtomsStore
from physicsml.data.store_format import Frame
from physicsml.data.store_writer import write_store

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
DATASETS = {
    "ethanol": DATA / "md_xtb" / "ethanol.extxyz",
    "aspirin": DATA / "md_xtb" / "aspirin.extxyz",
    "cu_bulk": DATA / "emt_bulk" / "cu_bulk.extxyz",
}
# (label, pre_batch, rebatch_every_n_epochs, num_workers); in_memory always reads in-process.
LOADERS = [
    ("None", None, None, 0),
    ("None", None, None, 2),
    ("in_memory (re-drawn every epoch)", PreBatch.in_memory, 1, 0),
    ("in_memory (drawn once)", PreBatch.in_memory, 0, 0),
    ("on_disk (drawn once)", PreBatch.on_disk, None, 0),
    ("on_disk (drawn once)", PreBatch.on_disk, None, 2),
]


def fresh_config(
    store: Path, work: Path, pre_batch: PreBatch | None, workers: int, args
) -> DataModuleConfig:
    """Energy + forces of ``store``; pre-batches always built afresh (a new directory)."""
    return DataModuleConfig(
        dataset=str(store),
        cache_dir=str(work / "cache"),
        pre_batch_dir=str(work / f"prebatch-{time.monotonic_ns()}"),
        pre_batch=pre_batch,
        num_workers=workers,
        y_graph_scalars=["energy"],
        y_node_vector="forces",
        cut_off=args.cut_off,
        train=BatchConfig(batch_size=args.batch_size),
    )


def loading_times(
    store: Path, work: Path, pre_batch: PreBatch | None, every: int | None, workers: int, args
) -> tuple[float, float, int]:
    """Seconds of epoch 0, mean seconds of the later epochs, batches per epoch."""
    config = fresh_config(store, work, pre_batch, workers, args)
    config.rebatch_every_n_epochs = every
    config.split = SplitConfig(train=0.8, validation=0.2, seed=0)
    datamodule = AtomsDataModule(config)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    seconds = []
    for epoch in range(args.epochs):
        loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        start = time.perf_counter()
        batches = sum(1 for _ in loader)
        seconds.append(time.perf_counter() - start)
    del loader  # stops persistent workers
    return seconds[0], sum(seconds[1:]) / max(len(seconds) - 1, 1), batches


def replicated_store(path: Path, num: int, seed: int = 0) -> AtomsStore:
    """``num`` structures: the 1500 ethanol frames cycled, positions jittered by 0.01 Å."""
    data = AtomsStore(ingest(DATASETS["ethanol"], path.with_suffix(".src.zarr")).store.path).load()
    rng = np.random.default_rng(seed)
    frames_in = len(data.offsets) - 1

    def frames():  # noqa: ANN202 - generator of Frame
        for k in range(num):
            a0, a1 = data.offsets[k % frames_in], data.offsets[k % frames_in + 1]
            yield Frame(
                positions=data.positions[a0:a1] + rng.normal(0.0, 0.01, (a1 - a0, 3)),
                numbers=data.numbers[a0:a1],
                cell=data.cell[k % frames_in],
                pbc=data.pbc[k % frames_in],
                atom_props={"forces": data.atom_props["forces"][a0:a1]},
                structure_props={"energy": data.structure_props["energy"][k % frames_in]},
            )

    return write_store(path, frames(), source={"synthetic": "ethanol replicated"}, units={})


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def epoch_memory(store: Path, cache: Path, workers: int, batch_size: int) -> str:
    """One on_disk run over ``store`` in this process: a row of the memory table."""
    start = time.perf_counter()
    config = DataModuleConfig(
        dataset=str(store),
        cache_dir=str(cache),
        pre_batch=PreBatch.on_disk,
        num_workers=workers,
        split=SplitConfig(train=1.0, validation=0.0),
        y_graph_scalars=["energy"],
        y_node_vector="forces",
        train=BatchConfig(batch_size=batch_size),
    )
    datamodule = AtomsDataModule(config)
    datamodule.prepare_data()
    datamodule.setup("fit")
    setup = _rss_mib("VmRSS")
    loader = datamodule.train_dataloader()
    loader.sampler.set_epoch(0)  # type: ignore[attr-defined]
    iter(loader)  # builds the composition
    ready = time.perf_counter() - start
    before = _rss_mib("VmRSS")
    peak = _rss_mib("VmHWM")
    loader.sampler.set_epoch(1)  # type: ignore[attr-defined]
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM)
    start = time.perf_counter()
    batches = sum(1 for _ in loader)
    seconds = time.perf_counter() - start
    growth = _rss_mib("VmHWM") - before
    peak = max(peak, _rss_mib("VmHWM"))
    return f"{batches} | {setup:.0f} | {peak:.0f} | {growth:.1f} | {ready:.1f} | {seconds:.1f}"


def memory_table(sizes: list[int], work: Path, workers: int, batch_size: int) -> None:
    """Print the memory table: per size a first and a second run, each in a fresh process."""
    print("| structures | run | batches | RSS after setup MiB | peak RSS MiB ", end="")
    print("| epoch RSS growth MiB | setup + epoch 0 s | epoch s |")
    print("|---|---|---|---|---|---|---|---|")
    for num in sizes:
        store = work / f"rep{num}.zarr"
        child = [sys.executable, __file__, "--memory", str(num), "--work", str(work)]
        if not store.exists():
            subprocess.run([*child, "--child", "store"], check=True)
        shutil.rmtree(store / "neighbours", ignore_errors=True)
        shutil.rmtree(work / f"cache{num}", ignore_errors=True)
        child += ["--workers", str(workers), "--batch-size", str(batch_size)]
        for run in ("first", "second"):
            done = subprocess.run([*child, "--child", "run"], check=True, stdout=subprocess.PIPE)
            row = done.stdout.decode().strip().splitlines()[-1]
            print(f"| {num} | {run} | {row} |", flush=True)


def step_wait(store: Path, work: Path, pre_batch: PreBatch | None, workers: int, args) -> float:
    """Fraction of the training-step time spent waiting for the next batch (MACE preset)."""
    import lightning as L
    from lightning.pytorch.profilers import SimpleProfiler

    from physicsml.api import compose_config
    from physicsml.lightning.module import PotentialModule
    from physicsml.train import model_spec

    cfg = compose_config(["module=mace"], run_dir=work / "run")
    datamodule = AtomsDataModule(fresh_config(store, work, pre_batch, workers, args))
    datamodule.setup("fit")
    module = PotentialModule(model_spec(cfg.module, datamodule))
    trainer = L.Trainer(
        max_steps=args.steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        profiler=SimpleProfiler(dirpath=work, filename="profile"),  # summary to a file
    )
    trainer.fit(module, train_dataloaders=datamodule.train_dataloader())
    durations = trainer.profiler.recorded_durations  # type: ignore[attr-defined]
    wait = sum(durations["[_TrainingEpochLoop].train_dataloader_next"][1:])
    step = sum(durations["run_training_batch"][1:])
    return wait / (wait + step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--cut-off", type=float, default=5.0)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--memory", type=int, nargs="+", help="store sizes for the RSS test")
    parser.add_argument("--workers", type=int, default=0, help="num_workers of the RSS test")
    parser.add_argument("--steps", type=int, default=0, help="training steps for the wait test")
    parser.add_argument("--work", type=Path, help="folder keeping the RSS test's stores")
    parser.add_argument("--child", choices=["store", "run"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.child == "store":
        replicated_store(args.work / f"rep{args.memory[0]}.zarr", args.memory[0])
        return
    if args.child == "run":
        store, cache = args.work / f"rep{args.memory[0]}.zarr", args.work / f"cache{args.memory[0]}"
        print(epoch_memory(store, cache, args.workers, args.batch_size))
        return
    if args.steps:
        print("| data | pre_batch | workers | waiting for data, % of a MACE training step |")
        print("|---|---|---|---|")
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.datasets:
                store = ingest(DATASETS[name], Path(tmp) / f"{name}.zarr").store.path
                for label, pre_batch, _, workers in LOADERS:
                    fraction = step_wait(store, Path(tmp), pre_batch, workers, args)
                    print(f"| {name} | {label} | {workers} | {fraction * 100:.2f} |", flush=True)
        return
    if args.memory and args.work is not None:
        memory_table(args.memory, args.work, args.workers, args.batch_size)
        return
    if args.memory:
        with tempfile.TemporaryDirectory() as tmp:
            memory_table(args.memory, Path(tmp), args.workers, args.batch_size)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print(f"batch size {args.batch_size}, cut-off {args.cut_off} Å, {args.epochs} epochs\n")
        print("| data | structures | ingest s | neighbour list ms/structure |")
        print("|---|---|---|---|")
        stores = {}
        for name in args.datasets:
            start = time.perf_counter()
            report = ingest(DATASETS[name], work / f"{name}.zarr")
            ingest_s = time.perf_counter() - start
            start = time.perf_counter()
            report.store.neighbours(cut_off=args.cut_off, progress=False)
            per = (time.perf_counter() - start) / report.store.num_structures
            stores[name] = report.store.path
            print(f"| {name} | {report.store.num_structures} | {ingest_s:.2f} | {per * 1e3:.3f} |")
        print("\n| data | pre_batch | workers | batches | epoch 0 s | later epochs s | ms/batch |")
        print("|---|---|---|---|---|---|---|")
        for name, store in stores.items():
            for label, pre_batch, every, workers in LOADERS:
                first, later, batches = loading_times(store, work, pre_batch, every, workers, args)
                print(
                    f"| {name} | {label} | {workers} | {batches} | {first:.3f} | {later:.3f} "
                    f"| {later / batches * 1e3:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
