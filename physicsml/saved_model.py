"""What a saved potential holds: the one versioned contract of checkpoints and ``model.pt``.

A trained potential is rebuilt from a :class:`ModelSpec` (architecture name, its
hyperparameters, what the data determined, the graph settings) plus a state dict. Lightning
checkpoints keep the spec as their only hyperparameter (``hyper_parameters["physicsml_model"]``)
and ``model.pt`` stores the same dict beside the weights, so training, inference, the ASE
calculator and export all read one format. Files load with ``torch.load(weights_only=True)``:
plain containers and tensors only, never pickled code.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

FORMAT = "physicsml-model"
VERSION = 2
"""1: the first ``model.pt`` (module/data hyperparameters naming the architecture by import
path); 2: architectures by registry name, one spec for checkpoints and saved models."""

SPEC_KEY = "physicsml_model"


class SavedModelError(ValueError):
    """A file that is not a loadable physicsml model (the CLIs print it on one line)."""


@dataclass(frozen=True)
class GraphSettings:
    """How the neighbour list was built in training; inference builds the same graphs."""

    cut_off: float
    pbc: list[bool] | None = None
    cell: list[list[float]] | None = None
    self_interaction: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """Everything that rebuilds a trained potential besides its weights.

    ``hyperparameters`` are the architecture's constructor arguments (its config schema);
    ``training`` the rest of the module config (``compute_forces``, losses, optimizer,
    scheduler, energy overrides); ``statistics`` what the training split determined
    (``DataStatistics.as_dict()``); ``targets`` the datamodule's ``y_*`` names.
    """

    architecture: str
    hyperparameters: dict[str, Any]
    training: dict[str, Any]
    elements: list[int]
    num_elements: int
    statistics: dict[str, Any]
    targets: dict[str, Any]
    graph: GraphSettings
    version: int = field(default=VERSION)

    @classmethod
    def from_module_config(
        cls,
        module: dict[str, Any],
        *,
        elements: list[int],
        num_elements: int,
        statistics: dict[str, Any],
        targets: dict[str, Any],
        graph: GraphSettings,
    ) -> ModelSpec:
        """The spec of a run: ``module`` is the resolved ``module`` config as plain dicts."""
        training = {k: v for k, v in module.items() if k != "model"}
        hyperparameters = dict(module["model"])
        architecture = str(hyperparameters.pop("architecture"))
        return cls(
            architecture=architecture,
            hyperparameters=hyperparameters,
            training=training,
            elements=[int(z) for z in elements],
            num_elements=int(num_elements),
            statistics=statistics,
            targets=targets,
            graph=graph,
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain containers, tagged with the format and version."""
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, blob: dict[str, Any], source: str) -> ModelSpec:
        """Read a spec saved by :meth:`as_dict`, checking its format version."""
        version = blob.get("version")
        if blob.get("format") != FORMAT or not isinstance(version, int):
            raise SavedModelError(f"{source}: not a physicsml model spec")
        if version > VERSION:
            raise SavedModelError(
                f"{source}: saved by a newer physicsml (model format {version}, this one reads "
                f"{VERSION}): upgrade physicsml to load it"
            )
        if version < VERSION:
            raise SavedModelError(
                f"{source}: saved by an older physicsml (model format {version}, this one reads "
                f"{VERSION}): load it with the physicsml release that trained it, or retrain"
            )
        fields = {k: v for k, v in blob.items() if k != "format"}
        expected = set(cls.__dataclass_fields__)
        if set(fields) != expected:
            raise SavedModelError(
                f"{source}: model spec has keys {sorted(fields)}, expected {sorted(expected)}"
            )
        fields["graph"] = GraphSettings(**fields["graph"])
        return cls(**fields)


def find_model_file(path: str | os.PathLike[str]) -> Path:
    """The file behind ``path``: itself, or in a run / saved-model directory ``model.pt``
    (else ``checkpoints/best.ckpt``, else ``checkpoints/last.ckpt``)."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    for name in ("model.pt", "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        if (path / name).is_file():
            return path / name
    raise SavedModelError(
        f"{path}: no model.pt or checkpoints/*.ckpt found (expected a run directory, "
        "a checkpoint or a saved model)"
    )


def read_model_file(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[ModelSpec, dict[str, torch.Tensor]]:
    """The spec and state dict of a checkpoint or ``model.pt`` (tensors and containers only)."""
    file = find_model_file(path)
    try:
        blob = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as exc:  # not a torch file, truncated, or holding non-plain objects
        raise SavedModelError(f"{file}: cannot read as a physicsml model: {exc}") from exc
    if not isinstance(blob, dict) or "state_dict" not in blob:
        raise SavedModelError(f"{file}: not a physicsml model or checkpoint (no state_dict)")
    holder = blob.get("hyper_parameters", blob)
    if not isinstance(holder, dict) or SPEC_KEY not in holder:
        old = isinstance(holder, dict) and "module" in holder and "data" in holder
        what = "saved by physicsml 0.1.0 (model format 1)" if old else "holds no physicsml model"
        raise SavedModelError(
            f"{file}: {what}; this physicsml reads model format {VERSION}: retrain, or load it "
            "with the release that trained it"
        )
    return ModelSpec.from_dict(holder[SPEC_KEY], str(file)), blob["state_dict"]


def write_model_file(spec: ModelSpec, state_dict: dict[str, torch.Tensor], path: Path) -> None:
    """Write ``model.pt`` atomically: the spec and the weights, nothing else."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({SPEC_KEY: spec.as_dict(), "state_dict": state_dict}, tmp)
    tmp.replace(path)
