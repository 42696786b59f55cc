"""Peer side of the data-pipeline comparison: physicsml 0.6.0 (not a test).

Run with the peer's interpreter (its venv beside the repository, as ``peer_compare.sh``
expects) from a folder outside the repository, so that our package does not shadow the peer's
``physicsml``; from the repository root:

    repo=$PWD && cd "$(mktemp -d)"
    "$repo/../peer-physicsml/bin/python" "$repo/experiments/data_pipeline/peer_side.py" \
        --data "$repo/../shared/data/md_xtb/ethanol.extxyz"

It drives the peer's public path as ../shared/bench/peer_physicsml/train_bench.py does (whose
helpers it imports) and prints one JSON line:

- ``prep_s``: ``read_s`` (``ase.io.read`` of the file, labels taken from ``atoms.calc.results``
  as our ingest does) plus the 80/20 split, the E0 fit, RDKit mol bytes, HF
  ``datasets.Dataset.from_dict`` and ``molflux.core.featurise_dataset(physicsml_features)`` of
  train and validation. The peer computes no neighbour lists here. (train_bench.py reads the
  labels through ``get_potential_energy``/``get_forces``, whose calculator checks cost more;
  that is left out so the peer is not charged for it.)
- ``prebatch_s``: ``pre_batch=in_memory`` for the train and validation loaders (every graph
  built once, neighbour lists included, pickled and reloaded), as train_bench.py's
  ``prebatch_s``. ``prep_s + prebatch_s`` is the peer's "featurise + neighbour lists" path.
- ``epochs_none_s`` / ``epochs_in_memory_s``: seconds to iterate the training DataLoader once per
  epoch, no model (``pre_batch`` None: ``GraphDataset.get`` builds every graph and its neighbour
  list again each epoch; ``in_memory``: unpickling the stored batches).

Imports and a first call of the reader and featuriser on 2 frames are done before timing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # peer pre-batching torch.load()s
BENCH = Path(__file__).resolve().parents[3] / "shared" / "bench" / "peer_physicsml"
sys.path.insert(0, str(BENCH))


def read(path: str) -> list[dict]:
    """Structures as train_bench.py's dicts (Z, R, E, F), from ``atoms.calc.results``."""
    import ase.io
    import numpy as np

    structs = []
    for atoms in ase.io.read(path, ":"):
        results = atoms.calc.results
        structs.append(
            {
                "Z": np.asarray(atoms.numbers, dtype=np.int64),
                "R": np.asarray(atoms.positions, dtype=np.float64),
                "E": float(results["energy"]),
                "F": np.asarray(results["forces"], dtype=np.float64),
            }
        )
    return structs


def featurise(structs: list[dict], z_map: dict[int, int], e0: dict[int, float]):  # noqa: ANN201
    """RDKit mol bytes -> HF dataset -> molflux physicsml_features, as train_bench.py does."""
    import datasets
    import numpy as np
    from molflux.core import featurise_dataset
    from train_bench import to_mol_bytes

    rows = {
        "mol_bytes": [to_mol_bytes(s["Z"], s["R"]) for s in structs],
        "energy": [float(s["E"]) for s in structs],
        "forces": [s["F"].astype(np.float64).tolist() for s in structs],
        "n_atoms": [len(s["Z"]) for s in structs],
    }
    metadata = {
        "version": 1,
        "config": [
            {
                "column": "mol_bytes",
                "representations": [
                    {
                        "name": "physicsml_features",
                        "config": {
                            "atomic_number_mapping": z_map,
                            "atomic_energies": e0,
                            "backend": "rdkit",
                        },
                        "as": "{feature_name}",
                    }
                ],
            }
        ],
    }
    dataset = datasets.Dataset.from_dict(rows)
    return featurise_dataset(dataset, featurisation_metadata=metadata, batch_size=100)


def train_loader(model_cls_args: dict, pre_batch: str | None, train, validation):  # noqa: ANN001, ANN201
    """The peer's training loader (and, for pre-batching, also its validation loader)."""
    from molflux.modelzoo import load_from_dict

    config = dict(model_cls_args)
    config["datamodule"] = dict(config["datamodule"], pre_batch=pre_batch)
    model = load_from_dict({"name": "mace_model", "config": config})
    datamodule = model._instantiate_datamodule(
        train_data={None: train}, validation_data={None: validation}
    )
    datamodule.setup("fit")
    size = config["datamodule"]["train"]["batch_size"]
    loader = datamodule._get_one_train_dataloader(datamodule.datasets["train"][None], size)
    if pre_batch is not None:  # as in Trainer.fit, the validation batches are built as well
        datamodule._get_one_eval_dataloader(datamodule.datasets["validation"][None], size)
    return loader


def epochs(loader, count: int) -> list[float]:  # noqa: ANN001
    """Seconds per pass over ``loader``."""
    seconds = []
    for _ in range(count):
        start = time.perf_counter()
        for _ in loader:
            pass
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--cut-off", type=float, default=5.0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", help="write a cProfile of the prep phase to this file")
    args = parser.parse_args()

    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import ase.io
    import datasets
    import numpy as np
    import torch
    from train_bench import fit_e0, model_hparams

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    datasets.disable_progress_bars()

    # warm-up: reader and featuriser on 2 frames (first-call imports and set-up not timed)
    first = ase.io.read(args.data, ":2")
    warm = [{"Z": a.numbers, "R": a.positions, "E": 0.0, "F": np.zeros((len(a), 3))} for a in first]
    warm_z = sorted({int(z) for s in warm for z in s["Z"]})
    featurise(warm, {z: i for i, z in enumerate(warm_z)}, {z: 0.0 for z in warm_z})

    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    start = time.perf_counter()
    structs = read(args.data)
    read_s = time.perf_counter() - start
    perm = np.random.default_rng(args.seed).permutation(len(structs))
    n_train = int(np.floor(0.8 * len(perm)))
    train_s = [structs[i] for i in perm[:n_train]]
    val_s = [structs[i] for i in perm[n_train:]]
    elements = sorted({int(z) for s in structs for z in s["Z"]})
    z_map = {z: i for i, z in enumerate(elements)}
    e0 = fit_e0(train_s, elements)
    train = featurise(train_s, z_map, e0)
    validation = featurise(val_s, z_map, e0)
    prep_s = time.perf_counter() - start
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)

    # The peer takes one cell and pbc for the whole dataset (datamodule.cell / pbc); periodic
    # files use the first structure's cell for all (same work, not the exact edges).
    periodic = bool(first[0].pbc.all())
    datamodule = {
        "y_graph_scalars": ["energy"],
        "y_node_vector": "forces",
        "train": {"batch_size": args.batch_size},
        "validation": {"batch_size": args.batch_size},
        "num_workers": 0,
        "num_elements": len(elements),
        "cut_off": args.cut_off,
        "pbc": (True, True, True) if periodic else None,
        "cell": first[0].cell.array.tolist() if periodic else None,
    }
    config = {
        "x_features": [
            "physicsml_atom_idxs",
            "physicsml_atom_numbers",
            "physicsml_coordinates",
            "physicsml_total_atomic_energy",
        ],
        "y_features": ["energy", "forces"],
        "num_node_feats": len(elements),
        "avg_num_neighbours": 1.0,  # the model is never built; loaders do not use it
        "datamodule": datamodule,
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "logger": False},
        **model_hparams("mace", 32),
    }

    loader = train_loader(config, None, train, validation)
    epochs_none = epochs(loader, args.epochs)
    batches = len(loader)
    with tempfile.TemporaryDirectory() as work:  # in_memory pre-batching writes into the cwd
        cwd = os.getcwd()
        os.chdir(work)
        try:
            start = time.perf_counter()
            loader = train_loader(config, "in_memory", train, validation)
            prebatch_s = time.perf_counter() - start
        finally:
            os.chdir(cwd)
    epochs_in_memory = epochs(loader, args.epochs)
    edges = sum(batch.edge_index.shape[1] for batch in loader)  # after timing: a check only
    result = {
        "side": "peer",
        "data": Path(args.data).stem,
        "structures": len(structs),
        "batch_size": args.batch_size,
        "batches": batches,
        "batches_in_memory": len(loader),
        "read_s": read_s,
        "prep_s": prep_s,
        "prebatch_s": prebatch_s,
        "train_edges": edges,
        "epochs_none_s": epochs_none,
        "epochs_in_memory_s": epochs_in_memory,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
