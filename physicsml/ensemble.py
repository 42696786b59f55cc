"""Deep ensembles: several independently trained models of the same data, whose mean is the
prediction and whose spread (standard deviation over members) estimates its uncertainty.

Train the members as a sweep over seeds (``physicsml-train -m seed=0,1,2,3 ...``); the sweep's
directory, or a list of run directories or model files, is the ensemble.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from physicsml.lightning.module import PotentialModule
from physicsml.saved_model import SavedModelError, find_model_file

ModelSource = str | os.PathLike[str]


def ensemble_members(sources: ModelSource | Sequence[ModelSource]) -> list[Path]:
    """The model files of an ensemble: one per source (a run directory, checkpoint or saved
    model), or, for a single directory without a model of its own (a sweep's), the model of
    each of its sub-directories that has one, in name order."""
    if isinstance(sources, (str, os.PathLike)):
        path = Path(sources).expanduser()
        if path.is_dir() and not _has_model(path):
            members = [find_model_file(d) for d in sorted(path.iterdir()) if _has_model(d)]
            if not members:
                raise SavedModelError(
                    f"{path}: neither a run directory nor a sweep of them (no model.pt or "
                    "checkpoints in it or its sub-directories)"
                )
            return members
        return [find_model_file(path)]
    return [find_model_file(source) for source in sources]


def _has_model(path: Path) -> bool:
    try:
        find_model_file(path)
    except SavedModelError:
        return False
    return path.is_dir()


def check_compatible(members: Sequence[PotentialModule], names: Sequence[Path]) -> None:
    """Members must take the same inputs: elements and graph settings (cut-off, pbc/cell
    overrides, self-interaction); a ``SavedModelError`` names the first that differs."""
    first = members[0].spec
    for module, name in zip(members[1:], names[1:], strict=True):
        spec = module.spec
        if spec.elements != first.elements or spec.graph != first.graph:
            raise SavedModelError(
                f"{name}: an ensemble's members must share elements and graph settings; "
                f"it has {spec.elements} and {spec.graph}, {names[0]} has {first.elements} and "
                f"{first.graph}"
            )


@dataclass
class Spread:
    """Mean and standard deviation over members (population std, ``ddof=0``)."""

    mean: np.ndarray
    std: np.ndarray


def spread(values: Sequence[np.ndarray]) -> Spread:
    """Mean and std over the first axis of the members' ``values`` (all the same shape)."""
    stacked = np.stack([np.asarray(v, dtype=np.float64) for v in values])
    return Spread(mean=stacked.mean(axis=0), std=stacked.std(axis=0))
