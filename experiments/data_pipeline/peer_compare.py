"""Our side of the comparison with physicsml 0.6.0, and the table of both (not a test).

    python experiments/data_pipeline/peer_compare.py --data ../shared/data/md_xtb/ethanol.extxyz
    python experiments/data_pipeline/peer_compare.py --table results.jsonl

The first form prints one JSON line:

- ``prep_s``: ``physicsml.data.ingest`` of the file into a fresh zarr store plus
  ``AtomsStore.neighbours`` (computed and written into the store's cache, no reuse).
- ``epochs_<loader>_s``: seconds to iterate ``AtomsDataModule.train_dataloader()`` once per
  epoch, no model, 0 workers, for ``pre_batch`` None, in_memory (re-drawn every epoch, the
  default), in_memory (drawn once) and on_disk (drawn once).

Imports and a first ingest and neighbour-list call on 2 frames are done before timing. The
second form reads the JSON lines of both sides (``peer_side.py``) and prints Markdown tables;
``peer_compare.sh`` runs everything.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

# (key, pre_batch, rebatch_every_n_epochs)
LOADERS = [
    ("none", None, None),
    ("in_memory_redrawn", "in_memory", 1),
    ("in_memory_once", "in_memory", 0),
    ("on_disk_once", "on_disk", None),
]


def measure(data: Path, batch_size: int, cut_off: float, epochs: int) -> dict:
    """Prep seconds and per-epoch loading seconds for one file (see the module docstring)."""
    import torch

    from physicsml.config.schema import BatchConfig, DataModuleConfig, PreBatch, SplitConfig
    from physicsml.data.datamodule import AtomsDataModule
    from physicsml.data.ingest import ingest

    torch.set_num_threads(1)
    result: dict = {"side": "ours", "data": data.stem, "batch_size": batch_size}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        warm = ingest(data, work / "warm.zarr", index=":2")  # first-call imports, not timed
        warm.store.neighbours(cut_off=cut_off, progress=False)

        start = time.perf_counter()
        store = ingest(data, work / "data.zarr").store
        store.neighbours(cut_off=cut_off, progress=False)
        result["prep_s"] = time.perf_counter() - start
        result["structures"] = store.num_structures

        for key, pre_batch, every in LOADERS:
            config = DataModuleConfig(
                dataset=str(store.path),
                cache_dir=str(work / "cache"),
                pre_batch_dir=str(work / f"prebatch-{key}"),
                pre_batch=None if pre_batch is None else PreBatch(pre_batch),
                rebatch_every_n_epochs=every,
                num_workers=0,
                split=SplitConfig(train=0.8, validation=0.2, seed=0),
                y_graph_scalars=["energy"],
                y_node_vector="forces",
                cut_off=cut_off,
                train=BatchConfig(batch_size=batch_size),
            )
            datamodule = AtomsDataModule(config)
            datamodule.setup("fit")
            loader = datamodule.train_dataloader()
            seconds = []
            for epoch in range(epochs):
                loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
                start = time.perf_counter()
                batches = sum(1 for _ in loader)
                seconds.append(time.perf_counter() - start)
            result[f"epochs_{key}_s"] = seconds
            result["batches"] = batches
        result["train_edges"] = sum(batch["edge_index"].shape[1] for batch in loader)
    return result


def later(seconds: list[float]) -> float:
    """Mean of the epochs after the first."""
    return statistics.mean(seconds[1:])


def table(path: Path) -> None:
    """Print the Markdown tables of a JSON-lines file written by ``peer_compare.sh``."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
    names = list(dict.fromkeys(r["data"] for r in rows))

    def pairs(name: str) -> list[tuple[dict, dict]]:
        """(peer, ours) result of each repeat."""
        peer = [r for r in rows if r["side"] == "peer" and r["data"] == name]
        ours = [r for r in rows if r["side"] == "ours" and r["data"] == name]
        return list(zip(peer, ours, strict=True))

    def ratio(top: list[float], bottom: list[float]) -> list[float]:
        return [t / b for t, b in zip(top, bottom, strict=True)]

    def cell(values: list[float], digits: int) -> str:
        return " / ".join(f"{v:.{digits}f}" for v in values)

    print("Data preparation, s (repeat 1 / repeat 2):\n")
    print(
        "| data | structures | peer read + featurise | peer + in_memory pre-batch "
        "| ours ingest + neighbour lists | ratio peer featurise / ours "
        "| ratio peer featurise + pre-batch / ours | peer's ASE read (part of its prep) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        runs = pairs(name)
        peer = [p["prep_s"] for p, _ in runs]
        peer_nl = [p["prep_s"] + p["prebatch_s"] for p, _ in runs]
        ours = [o["prep_s"] for _, o in runs]
        reads = [p["read_s"] for p, _ in runs]
        print(
            f"| {name} | {runs[0][1]['structures']} | {cell(peer, 2)} | {cell(peer_nl, 2)} "
            f"| {cell(ours, 2)} | {cell(ratio(peer, ours), 1)} "
            f"| {cell(ratio(peer_nl, ours), 1)} | {cell(reads, 2)} |"
        )

    print("\nLoading one training epoch, no model, 0 workers, s/epoch (repeat 1 / repeat 2):\n")
    print(
        "| data | batches | peer None | peer in_memory | ours None | ours in_memory (re-drawn) "
        "| ours in_memory (once) | ours on_disk (once) | ratio peer None / ours None "
        "| ratio peer in_memory / ours in_memory (once) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        runs = pairs(name)
        peer_none = [later(p["epochs_none_s"]) for p, _ in runs]
        peer_mem = [later(p["epochs_in_memory_s"]) for p, _ in runs]
        ours = {key: [later(o[f"epochs_{key}_s"]) for _, o in runs] for key, _, _ in LOADERS}
        print(
            f"| {name} | {runs[0][1]['batches']} | {cell(peer_none, 3)} | {cell(peer_mem, 3)} | "
            + " | ".join(cell(ours[key], 3) for key, _, _ in LOADERS)
            + f" | {cell(ratio(peer_none, ours['none']), 0)} "
            f"| {cell(ratio(peer_mem, ours['in_memory_once']), 0)} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--table", type=Path, help="JSON lines of both sides to tabulate")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--cut-off", type=float, default=5.0)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    if args.table is not None:
        table(args.table)
        return
    if args.data is None:
        parser.error("--data or --table is required")
    print(json.dumps(measure(args.data, args.batch_size, args.cut_off, args.epochs)), flush=True)


if __name__ == "__main__":
    main()
